#!/usr/bin/env bash
# End-to-end check of the container path of the samc pipeline (idempotent; prints a final PASS/FAIL):
#   1. prerequisites: dockerd (started if not running), apptainer (containers/apptainer-host)
#   2. wheelhouse containers/wheels/ = `pip download -r requirements.lock` (skipped when current)
#   3. the Docker base: $BASE, else python:3.11-slim-bookworm when Docker Hub answers, else a local
#      samc-base:bookworm (debootstrap bookworm + tar | docker import)
#   4. docker build -f containers/Dockerfile -t samc:latest (staged context: git-visible files + wheels)
#      + `samc --help` through docker (and podman, when installed)
#   5. docker save -> docker-archive -> apptainer build containers/samc.sif containers/samc.def
#   6. a scratch copy of the pipeline (Snakefile, workflow/, tiny params.yaml), run twice:
#      `snakemake --cores 2` (host) and `snakemake --cores 2 --use-singularity` (the .sif)
#   7. results/<exp>/metrics.json accuracy matrices of the two runs: equal (or the max difference)
#
# Usage: containers/e2e.sh            (as root; from anywhere)
# Environment:
#   BASE=...           Docker base image (skips the registry probe), e.g. samc-base:bookworm
#   IMAGE=samc:latest  Docker tag;   SIF=<project>/containers/samc.sif
#   E2E_DIR=/var/tmp/samc-e2e   scratch (staged context, docker-archive, pipeline copies)
#   DEBIAN_MIRROR=...  for debootstrap (default: first Debian URI of /etc/apt/sources.list*)
#   REBUILD=1          rebuild the Docker image and the .sif even when their inputs are unchanged
#   TOL=0              largest accepted |host - container| accuracy difference (percentage points)
#   KEEP_ARCHIVE=1     keep the docker-archive tar after building the .sif
# Heavy steps run under `nice -n 19 ionice -c3`, one at a time.
set -uo pipefail

PROJ=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
CT=$PROJ/containers
E2E_DIR=${E2E_DIR:-/var/tmp/samc-e2e}
IMAGE=${IMAGE:-samc:latest}
SIF=${SIF:-$CT/samc.sif}
SIF_STAMP=${E2E_DIR:-/var/tmp/samc-e2e}/samc.sif.image-id   # the Docker image the .sif was built from
TOL=${TOL:-0}
NICE="nice -n 19 ionice -c3"
ULIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=1000:1000)
export PATH="$CT/apptainer-host:$PATH"
mkdir -p "$E2E_DIR"
LOG=$E2E_DIR/e2e.log
: > "$LOG"

declare -a SUMMARY=()
FAILED=0
T0=$(date +%s)
say() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$LOG"; }
run() { say "\$ $*"; "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }
step_start() { STEP=$1; STEP_T=$(date +%s); say "==== $STEP"; }
step_end() {   # step_end ok|FAIL|skip [note]
    local st=$1 dt=$(($(date +%s) - STEP_T)); shift
    SUMMARY+=("$(printf '%-5s %5ss  %s %s' "$st" "$dt" "$STEP" "${*:-}")")
    [[ $st == FAIL ]] && FAILED=1
    say "---- $STEP: $st (${dt}s) ${*:-}"
}
finish() {
    say "==== summary (total $(($(date +%s) - T0))s)"
    local l
    for l in "${SUMMARY[@]}"; do say "  $l"; done
    if ((FAILED)); then say "FAIL"; exit 1; fi
    say "PASS"; exit 0
}
sha_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

[[ $(id -u) == 0 ]] || { say "must run as root (dockerd, apptainer-host)"; FAILED=1; finish; }

# ---------------------------------------------------------------- 1. prerequisites
step_start "prerequisites (dockerd, apptainer)"
ok=1
if ! docker info >/dev/null 2>&1; then
    if command -v dockerd >/dev/null; then
        say "starting dockerd (log: /var/log/dockerd-samc.log)"
        # niced: the build containers (pip install, ...) inherit dockerd's priority
        nohup $NICE dockerd >/var/log/dockerd-samc.log 2>&1 &
        for _ in $(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
    fi
fi
docker info >/dev/null 2>&1 || { say "no Docker daemon (apt-get install docker.io)"; ok=0; }
if [[ ! -x /opt/apptainer-root/usr/bin/apptainer && -z ${APPTAINER_ROOT:-} ]]; then
    run "$CT/apptainer-host/setup.sh" || ok=0
fi
run apptainer --version || ok=0
command -v snakemake >/dev/null || { say "snakemake not on PATH"; ok=0; }
run df -h / || true
((ok)) && step_end ok || { step_end FAIL; finish; }

# ---------------------------------------------------------------- 2. wheelhouse
step_start "wheelhouse containers/wheels"
WH=$CT/wheels
want=$(sha_of "$PROJ/requirements.lock")
if [[ -f $WH/.lock-sha && $(cat "$WH/.lock-sha") == "$want" ]]; then
    step_end skip "(current: $(du -sh "$WH" | cut -f1))"
else
    mkdir -p "$WH"
    if run $NICE pip download --disable-pip-version-check -r "$PROJ/requirements.lock" -d "$WH" &&
        run $NICE pip download --disable-pip-version-check 'setuptools>=61' wheel -d "$WH"; then
        echo "$want" > "$WH/.lock-sha"
        n_sdist=$(find "$WH" -maxdepth 1 \( -name '*.tar.gz' -o -name '*.zip' \) | wc -l)
        step_end ok "($(du -sh "$WH" | cut -f1), $(ls "$WH"/*.whl | wc -l) wheels, $n_sdist sdists)"
    else
        step_end FAIL "(pip download)"; finish
    fi
fi

# ---------------------------------------------------------------- 3. base image
step_start "Docker base image"
if [[ -n ${BASE:-} ]]; then
    say "BASE=$BASE (from the environment)"
    docker image inspect "$BASE" >/dev/null 2>&1 || run timeout 120 docker pull "$BASE"
    docker image inspect "$BASE" >/dev/null 2>&1 && step_end ok "$BASE" || { step_end FAIL "$BASE missing"; finish; }
elif docker image inspect python:3.11-slim-bookworm >/dev/null 2>&1 ||
    run timeout 60 docker pull python:3.11-slim-bookworm; then
    BASE=python:3.11-slim-bookworm
    step_end ok "$BASE (registry)"
else
    say "no registry: local base samc-base:bookworm (debootstrap + docker import)"
    BASE=samc-base:bookworm
    if docker image inspect "$BASE" >/dev/null 2>&1; then
        step_end skip "$BASE exists"
    else
        ROOTFS=$E2E_DIR/base-rootfs
        MIRROR=${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
            /etc/apt/sources.list.d/*.sources 2>/dev/null |
            grep -Eo 'https?://[^[:space:]]+' | grep -E '/debian/?$' | grep -v security | head -n1)}
        MIRROR=${MIRROR:-http://deb.debian.org/debian}
        ok=1
        if [[ ! -e $ROOTFS/.debootstrap-done ]]; then
            rm -rf "$ROOTFS"
            run $NICE debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" &&
                touch "$ROOTFS/.debootstrap-done" || ok=0
        fi
        if ((ok)); then
            # the mirror the base's apt uses inside the build (the host's; deb822 not needed)
            printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$MIRROR" "$MIRROR" > "$ROOTFS/etc/apt/sources.list"
            # the host clock may be ahead of a snapshot mirror's Valid-Until
            echo 'Acquire::Check-Valid-Until "false";' > "$ROOTFS/etc/apt/apt.conf.d/99samc-no-valid-until"
            rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
            # no device nodes (./dev/*): docker provides /dev at run time, and apptainer-host's
            # build (a user namespace) cannot mknod them when it unpacks the docker-archive
            say "\$ tar -C $ROOTFS -c --exclude=./.debootstrap-done --exclude='./dev/*' . | docker import - $BASE"
            $NICE tar -C "$ROOTFS" -c --exclude=./.debootstrap-done --exclude='./dev/*' . | docker import \
                -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["/bin/bash"]' \
                - "$BASE" 2>&1 | tee -a "$LOG"
            docker image inspect "$BASE" >/dev/null 2>&1 || ok=0
        fi
        ((ok)) && step_end ok "$BASE ($(docker image inspect -f '{{.Size}}' "$BASE" | numfmt --to=iec))" ||
            { step_end FAIL "$BASE"; finish; }
    fi
fi

# ---------------------------------------------------------------- 4. docker build
step_start "docker build $IMAGE (BASE=$BASE)"
# inputs of the image: their hash is a label, so an unchanged image is not rebuilt
INPUTS=$(cd "$PROJ" && { echo "$BASE"; docker image inspect -f '{{.Id}}' "$BASE" 2>/dev/null;
    cat containers/Dockerfile requirements.lock pyproject.toml README.md;
    find samc -type f -name '*.py' -o -type f -name '*.json' -o -type f -name '*.yaml' | LC_ALL=C sort | xargs cat; } |
    sha256sum | cut -c1-16)
have=$(docker image inspect -f '{{index .Config.Labels "samc.inputs"}}' "$IMAGE" 2>/dev/null || true)
if [[ $have == "$INPUTS" && ${REBUILD:-0} != 1 ]]; then
    step_end skip "(inputs $INPUTS unchanged)"
else
    CTX=$E2E_DIR/context
    rm -rf "$CTX"; mkdir -p "$CTX"
    # staged context: what git sees (tracked + untracked, not ignored), without images; + the wheels
    (cd "$PROJ" && git ls-files -co --exclude-standard 2>/dev/null || find . -type f -not -path './.git/*') |
        grep -Ev '^(containers/wheels/|runs/|data/|results/|logs/)|\.(sif|tar)$' |
        (cd "$PROJ" && xargs -d '\n' cp --parents -t "$CTX" 2>/dev/null) || true
    mkdir -p "$CTX/containers"
    cp -al "$WH" "$CTX/containers/wheels" 2>/dev/null || cp -a "$WH" "$CTX/containers/wheels"
    say "context $CTX: $(du -sh "$CTX" | cut -f1)"
    # classic builder (no buildx plugin here; BuildKit works as well: nothing BuildKit-only is used)
    export DOCKER_BUILDKIT=0
    if run $NICE docker build --build-arg BASE="$BASE" --label samc.inputs="$INPUTS" \
        -f "$CTX/containers/Dockerfile" -t "$IMAGE" "$CTX"; then
        docker image prune -f >/dev/null 2>&1 || true    # the build stage's dangling layers
        rm -rf "$CTX"
        step_end ok "($(docker image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
    else
        step_end FAIL; finish
    fi
fi
run docker image ls "$IMAGE"

step_start "samc --help via docker"
if run docker run --rm "${ULIMITS[@]}" "$IMAGE" --help >/dev/null; then
    run docker run --rm "${ULIMITS[@]}" --entrypoint python "$IMAGE" -c \
        "import torch, torchvision, cv2, samc; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__, 'cv2', cv2.__version__)"
    step_end ok
else
    step_end FAIL
fi
if command -v podman >/dev/null; then
    step_start "samc --help via podman"
    PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
    if ! "${PODMAN[@]}" image exists "$IMAGE"; then
        docker save "$IMAGE" | $NICE "${PODMAN[@]}" load 2>&1 | tail -2 | tee -a "$LOG"
    fi
    run "${PODMAN[@]}" run --rm "${ULIMITS[@]}" "$IMAGE" --help >/dev/null && step_end ok || step_end FAIL
else
    SUMMARY+=("skip      -  podman: not installed")
fi

# ---------------------------------------------------------------- 5. .sif
step_start "apptainer build $SIF (containers/samc.def, docker-archive)"
IMG_ID=$(docker image inspect -f '{{.Id}}' "$IMAGE")
if [[ -f $SIF && -f $SIF_STAMP && $(cat "$SIF_STAMP") == "$IMG_ID" && ${REBUILD:-0} != 1 ]]; then
    step_end skip "(built from $IMG_ID)"
else
    ARCHIVE=$E2E_DIR/samc-docker.tar
    ok=1
    if [[ ! -f $ARCHIVE || ! -f $ARCHIVE.image-id || $(cat "$ARCHIVE.image-id" 2>/dev/null) != "$IMG_ID" ]]; then
        rm -f "$ARCHIVE"
        run $NICE docker save "$IMAGE" -o "$ARCHIVE" && echo "$IMG_ID" > "$ARCHIVE.image-id" || ok=0
    fi
    # samc.def says `From: containers/samc.tar` (relative to the project root): a copy points at
    # the scratch archive instead, the rest is the same file; the build runs in the project root
    sed "s|^From: .*|From: $ARCHIVE|" "$CT/samc.def" > "$E2E_DIR/samc.def"
    if ((ok)) && (cd "$PROJ" && export APPTAINER_TMPDIR=$E2E_DIR && run $NICE apptainer build --force "$SIF.tmp" "$E2E_DIR/samc.def"); then
        mv -f "$SIF.tmp" "$SIF"
        echo "$IMG_ID" > "$SIF_STAMP"
        [[ ${KEEP_ARCHIVE:-0} == 1 ]] || rm -f "$ARCHIVE" "$ARCHIVE.image-id"
        step_end ok "($(du -h "$SIF" | cut -f1))"
    else
        rm -f "$SIF.tmp"
        step_end FAIL; finish
    fi
fi
step_start "samc --help via apptainer"
(cd "$E2E_DIR" && run apptainer run "$SIF" --help >/dev/null && run apptainer exec "$SIF" python -c \
    "import torch, samc, sys; print(sys.executable, 'torch', torch.__version__)") && step_end ok || step_end FAIL

# ---------------------------------------------------------------- 6. the pipeline, host vs container
HAS_DIRECTIVE=1
grep -Eq '^[[:space:]]*container:' "$PROJ/Snakefile" || HAS_DIRECTIVE=0
make_copy() {   # make_copy <dir>: Snakefile + workflow/ + tiny params.yaml
    local d=$1
    rm -rf "$d"; mkdir -p "$d"
    cp -a "$PROJ/Snakefile" "$PROJ/params.yaml" "$d/"
    cp -a "$PROJ/workflow" "$d/workflow"
    if ((HAS_DIRECTIVE == 0)); then   # the project has no `container:` yet: add one (scratch only)
        { echo "container: \"$SIF\""; cat "$PROJ/Snakefile"; } > "$d/Snakefile"
    fi
    python3 - "$d/params.yaml" "$SIF" <<'PY'
import sys, yaml
path, sif = sys.argv[1], sys.argv[2]
p = yaml.safe_load(open(path))
p["dataset"].update(n_tasks=2, shapes_train_per_class=60, shapes_test_per_class=20)
p["train"].update(device="cpu", threads=1)
p["samc"].update(ae_steps=10, ae_pairs=32, ae_patience=5)
p["grid"]["seed"] = [0, 1]
p["benchmarks"] = {}
p.setdefault("run", {})["container"] = sif
yaml.safe_dump(p, open(path, "w"), sort_keys=False)
PY
}
((HAS_DIRECTIVE)) && say "Snakefile has a container: directive" ||
    say "Snakefile has NO container: directive: the scratch copies get 'container: \"$SIF\"'"
HOSTRUN=$E2E_DIR/pipeline-host
CTRRUN=$E2E_DIR/pipeline-container
step_start "snakemake --cores 2 (host)"
make_copy "$HOSTRUN"
(cd "$HOSTRUN" && run $NICE snakemake --cores 2) && step_end ok || step_end FAIL
step_start "snakemake --cores 2 --use-singularity ($SIF)"
make_copy "$CTRRUN"
(cd "$CTRRUN" && run $NICE snakemake --cores 2 --use-singularity) && step_end ok || step_end FAIL

# ---------------------------------------------------------------- 7. compare
step_start "compare results/<exp>/metrics.json accuracy matrices"
python3 - "$HOSTRUN" "$CTRRUN" "$TOL" <<'PY' 2>&1 | tee -a "$LOG"
import glob, json, os, sys
a, b, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
fa = sorted(os.path.relpath(p, a) for p in glob.glob(f"{a}/results/**/metrics.json", recursive=True))
fb = sorted(os.path.relpath(p, b) for p in glob.glob(f"{b}/results/**/metrics.json", recursive=True))
if not fa or fa != fb:
    print(f"metrics files differ: host {fa} container {fb}"); sys.exit(1)
worst = 0.0
for rel in fa:
    ma = json.load(open(os.path.join(a, rel)))["accuracy_matrix"]
    mb = json.load(open(os.path.join(b, rel)))["accuracy_matrix"]
    d = max(abs(x - y) for ra, rb in zip(ma, mb) for x, y in zip(ra, rb))
    worst = max(worst, d)
    print(f"{rel}: host {ma} container {mb} " + ("equal" if ma == mb else f"max |diff| {d:g}"))
print(f"max |diff| over {len(fa)} experiments: {worst:g} (tolerance {tol:g})")
sys.exit(0 if worst <= tol else 1)
PY
[[ ${PIPESTATUS[0]} == 0 ]] && step_end ok || step_end FAIL

finish
