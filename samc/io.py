"""Atomic file output: every file is written to a temporary sibling and renamed into place, so a
killed process leaves either the previous complete file or none, never a half-written one."""
from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def _umask() -> int:
    """The process's umask (read without a lasting change: os.umask only sets and returns)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())    # mkstemp makes 0600; the result gets open()'s usual mode
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    _atomic(Path(path), lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def write_text(path: str | Path, text: str) -> None:
    _atomic(Path(path), lambda p: p.write_text(text))


def save_torch(path: str | Path, obj: Any) -> None:
    _atomic(Path(path), lambda p: torch.save(obj, p))


def load_torch(path: str | Path) -> Any:
    """Load a checkpoint without executing code from it (``weights_only=True``): anything but
    tensors and plain containers (e.g. a pickle whose ``__reduce__`` would run code) is refused,
    as is a truncated or foreign file, with an error naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:   # any failure to parse untrusted bytes means: not a checkpoint
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: refused, not a valid samc checkpoint (weights-only load failed: {first})") from None


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


# --------------------------------------------------------------------------------------------------
# Directories (Zarr stores, prepared datasets): built in a temp sibling, then swapped into place
# --------------------------------------------------------------------------------------------------
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


_RENAMEAT2: Any = None


def _renameat2() -> Any:
    global _RENAMEAT2
    if _RENAMEAT2 is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _RENAMEAT2 = fn
        except (OSError, AttributeError, TypeError):
            _RENAMEAT2 = False
    return _RENAMEAT2


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; False if unsupported."""
    fn = _renameat2()
    if not fn:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def publish_dir(tmp: Path, dest: Path) -> None:
    """Move the complete directory ``tmp`` to ``dest``, atomically replacing an old ``dest``.

    With Linux ``renameat2(RENAME_EXCHANGE)`` the two are swapped in one step; elsewhere the old
    directory is moved aside first, so a crash in between leaves it complete at ``.<name>.old-<pid>``.
    """
    if dest.exists():
        if _rename_exchange(tmp, dest):
            fsync_dir(dest.parent)
            shutil.rmtree(tmp)  # tmp now holds the old directory
            return
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except BaseException:
            os.rename(old, dest)
            raise
        fsync_dir(dest.parent)
        shutil.rmtree(old)
    else:
        os.rename(tmp, dest)
        fsync_dir(dest.parent)


@contextmanager
def building_dir(dest: str | Path) -> Iterator[Path]:
    """Yield an empty temp sibling of ``dest`` to fill; on success it is fsynced and swapped into
    place as ``dest`` (:func:`publish_dir`), on failure removed: ``dest`` is never half-written."""
    dest = Path(dest).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        publish_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(Path(path), lambda p: p.write_bytes(data))


class RunLocked(RuntimeError):
    """Another samc process is writing the same run folder."""


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (``<run_dir>/.samc.lock``, ``flock``) while writing
    into it: a second ``samc`` pointed at the same folder fails at once, naming it, instead of
    interleaving writes. The lock goes with the process (a killed job leaves no stale lock). A
    folder this call created and in which nothing but the lock was written (a run that failed
    before its first output) is removed on the way out: a failed start leaves nothing behind."""
    import fcntl

    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    fh = open(run_dir / ".samc.lock", "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown"
            raise RunLocked(f"{run_dir}: in use by another samc process ({owner}); "
                            "wait for it or point this one to another folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()
        if created and [p.name for p in run_dir.iterdir()] == [".samc.lock"]:
            (run_dir / ".samc.lock").unlink(missing_ok=True)
            try:
                run_dir.rmdir()
            except OSError:      # something appeared meanwhile: keep it
                pass
