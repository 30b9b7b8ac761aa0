#!/usr/bin/env bash
# Idempotent set-up of a host `apptainer` for Debian 12 (bookworm), which has no apptainer package.
#
# Debian unstable (sid) packages apptainer, but its binaries need sid's newer glibc, so this script
# debootstraps a small sid root (default /opt/apptainer-root) and installs apptainer into it. The
# wrapper next to this file (containers/apptainer-host/apptainer) then runs apptainer inside that
# root, in a private mount namespace with the host's /proc, /sys, /dev and the data directories
# (/work, /tmp, /var/tmp, /root, /home, ... and the current directory) bind-mounted at the SAME
# paths, so image paths and Snakemake's working directory resolve identically inside and outside.
#
#   sudo containers/apptainer-host/setup.sh          # once (re-running it is a no-op)
#   export PATH="$PWD/containers/apptainer-host:$PATH"
#   apptainer --version && snakemake --cores 2 --use-singularity
#
# Environment: APPTAINER_ROOT (the sid root, default /opt/apptainer-root),
#              DEBIAN_MIRROR (default: the first Debian URI of /etc/apt/sources.list*),
#              NICE (prefix of the heavy commands, default "nice -n 19 ionice -c3").
# Needs: root, debootstrap (apt-get install debootstrap), network access to the Debian mirror.
# With the bind mounts done per call by the wrapper (unshare --mount) nothing stays mounted on the
# host; `setup.sh --mount` additionally makes persistent bind mounts for interactive `chroot` use
# and `setup.sh --umount` removes them.
set -euo pipefail

ROOT=${APPTAINER_ROOT:-/opt/apptainer-root}
NICE=${NICE:-nice -n 19 ionice -c3}
SUITE=${APPTAINER_SUITE:-sid}
log() { printf '[apptainer-host/setup] %s\n' "$*" >&2; }

if [[ $(id -u) != 0 ]]; then log "must run as root"; exit 1; fi

find_mirror() {
    local m
    # deb822 (.sources: "URIs: ...") and one-line ("deb URI suite ...") formats; skip -security
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -Eo '(URIs:[[:space:]]*|^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)https?://[^[:space:]]+' |
        grep -Eo 'https?://[^[:space:]]+' | grep -E '/debian/?$' | grep -v security | head -n1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}
MIRROR=${DEBIAN_MIRROR:-$(find_mirror)}

mount_binds() {   # persistent variant (optional); the wrapper does the same per call, privately
    local d
    for d in /proc /sys /dev /dev/pts /tmp /var/tmp /work /root /home; do
        [[ -d $d ]] || continue
        mkdir -p "$ROOT$d"
        mountpoint -q "$ROOT$d" || mount --rbind "$d" "$ROOT$d"
        mount --make-rslave "$ROOT$d"
    done
}
umount_binds() {
    local d
    for d in /home /root /work /var/tmp /tmp /dev/pts /dev /sys /proc; do
        mountpoint -q "$ROOT$d" && umount -R -l "$ROOT$d" || true
    done
}
case ${1:-} in
    --mount) mount_binds; exit 0 ;;
    --umount) umount_binds; exit 0 ;;
esac

if [[ -x $ROOT/usr/bin/apptainer ]]; then
    log "already set up: $ROOT ($(chroot "$ROOT" /usr/bin/apptainer --version))"
    exit 0
fi

command -v debootstrap >/dev/null || { log "installing debootstrap"; apt-get install -y debootstrap; }

if [[ ! -x $ROOT/usr/bin/apt-get || ! -e $ROOT/.debootstrap-done ]]; then
    log "debootstrap --variant=minbase $SUITE $ROOT $MIRROR"
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    # The host's keyring (debian-archive-keyring) verifies sid's Release file.
    $NICE debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR"
    touch "$ROOT/.debootstrap-done"
fi

cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
# apt inside the chroot: /proc and /dev are enough; private namespace so nothing leaks on error
log "apt-get install apptainer (in $ROOT)"
unshare --mount --propagation private bash -euo pipefail -c '
    R=$1; NICE=$2
    for d in /proc /sys /dev; do mount --rbind "$d" "$R$d"; done
    export DEBIAN_FRONTEND=noninteractive LC_ALL=C
    # Valid-Until: this host'"'"'s clock can be ahead of the mirror'"'"'s (snapshot) Release files;
    # signatures are still checked.
    $NICE chroot "$R" apt-get -o Acquire::Check-Valid-Until=false update -q
    # squashfs-tools: `apptainer build` of .sif; squashfuse/fuse2fs: mounts without loop devices
    $NICE chroot "$R" apt-get install -y -q apptainer squashfs-tools squashfuse fuse2fs ca-certificates
    chroot "$R" apt-get clean
' _ "$ROOT" "$NICE"

# This host's containers lack CAP_SYS_RESOURCE in their bounding set (see CapBnd in /proc/self/status):
# the wrapper adds --drop-caps CAP_SYS_RESOURCE to exec/run/shell/test and runs build in a user
# namespace (see the wrapper's comments).
log "done: $(chroot "$ROOT" /usr/bin/apptainer --version)"
