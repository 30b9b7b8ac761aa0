"""Zarr v3 snapshots of a finished task memory ``M_t`` (§4.1): written atomically, read back
verified (format, version, arrays, offsets, sha256 digest, expected attributes)."""
from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from samc import io
from samc.memory.errors import MemoryFormatError
from samc.memory.records import concat_records, split_records
from samc.memory.task_memory import FORMAT, FORMAT_VERSION, TaskMemory, records_digest

logger = logging.getLogger(__name__)

#: chunk length (bytes) of the ``records`` array of a Zarr snapshot
RECORDS_CHUNK = 64 * 1024
SNAPSHOT_ZSTD_LEVEL = 5

# Zarr snapshots


def save_snapshot(memory: TaskMemory, path: str | os.PathLike[str]) -> Path:
    """Write ``M_t`` (§4.1) as a Zarr v3 store at ``path``, atomically replacing any old store.

    The store is built in a sibling temp directory ``.<name>.tmp-<pid>`` and swapped into place,
    so a crash leaves either the old complete store or the new complete store at ``path``.  An
    existing ``path`` is only replaced if it is a Zarr store (has ``zarr.json``).
    """
    if not isinstance(memory, TaskMemory):
        raise MemoryFormatError(f"memory: expected TaskMemory, got {type(memory).__name__}")
    dest = Path(path).absolute()
    if dest.exists() and not (dest.is_dir() and (dest / "zarr.json").is_file()):
        raise FileExistsError(f"{dest}: exists and is not a Zarr store; refusing to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    if tmp.exists():
        logger.warning("save_snapshot: removing stale temp store %s", tmp)
        shutil.rmtree(tmp)

    data, offsets = concat_records(memory.records)
    attrs = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": memory.task,
        "classes": list(memory.classes),
        "image_shape": list(memory.image_shape),
        "encoding": memory.encoding,
        "codec_params": dict(memory.codec_params),
        "mu": memory.mu,
        "budget": memory.budget,
        "n_images": len(memory),
        "nbytes": int(data.size),
        "sha256": records_digest(data, offsets, memory.labels, memory.indices, memory.codec_params),
    }
    compressors = zarr.codecs.ZstdCodec(level=SNAPSHOT_ZSTD_LEVEL, checksum=True)
    config = {"write_empty_chunks": True}
    try:
        group = zarr.open_group(tmp, mode="w")
        arrays = {"records": (data, RECORDS_CHUNK), "offsets": (offsets, 8192),
                  "labels": (memory.labels, 8192), "indices": (memory.indices, 8192)}
        for name, (arr, chunk) in arrays.items():
            z = group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=(chunk,),
                                   compressors=compressors, config=config)
            if arr.size:
                z[:] = arr
        group.attrs.update(attrs)
        io.fsync_tree(tmp)
        io.publish_dir(tmp, dest)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.debug("save_snapshot: wrote %d records (%d bytes) to %s", len(memory), data.size, dest)
    return dest


def _norm_attr(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_norm_attr(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _attr_matches(expected: Any, actual: Any) -> bool:
    expected, actual = _norm_attr(expected), _norm_attr(actual)
    if isinstance(expected, float) or isinstance(actual, float):
        if expected is None or actual is None or isinstance(expected, (bool, list, str)) \
                or isinstance(actual, (bool, list, str)):
            return False
        return math.isclose(float(expected), float(actual), rel_tol=1e-12, abs_tol=1e-12)
    return bool(expected == actual)


def load_snapshot(path: str | os.PathLike[str], *, expect: Mapping[str, Any] | None = None) -> TaskMemory:
    """Read and verify a Zarr snapshot of ``M_t`` (§4.1) written by :func:`save_snapshot`.

    Checks format, version, array dtypes/shapes, offsets, the sha256 digest and every ``expect``
    key (e.g. ``{"mu": 0.6, "task": 1, "image_shape": (3, 32, 32)}``) against the attrs; raises
    :class:`MemoryFormatError` naming the path and the field otherwise.
    """
    where = Path(path)
    if not where.is_dir():
        raise MemoryFormatError(f"{where}: no snapshot directory")
    try:
        group = zarr.open_group(where, mode="r")
        attrs = dict(group.attrs)
    except Exception as exc:
        raise MemoryFormatError(f"{where}: cannot open Zarr group: {exc}") from exc
    if attrs.get("format") != FORMAT:
        raise MemoryFormatError(f"{where}: attr 'format' is {attrs.get('format')!r}, not {FORMAT!r}")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise MemoryFormatError(
            f"{where}: attr 'format_version' is {attrs.get('format_version')!r}, "
            f"this reader supports {FORMAT_VERSION}"
        )
    for key in ("task", "classes", "image_shape", "encoding", "mu", "budget", "n_images",
                "nbytes", "sha256"):
        if key not in attrs:
            raise MemoryFormatError(f"{where}: attr {key!r} missing")
    for key, value in (expect or {}).items():
        if key not in attrs:
            raise MemoryFormatError(f"{where}: expected attr {key!r} is not in the store")
        if not _attr_matches(value, attrs[key]):
            raise MemoryFormatError(
                f"{where}: attr {key!r} is {attrs[key]!r}, expected {_norm_attr(value)!r}"
            )
    arrays: dict[str, np.ndarray] = {}
    for name, dtype in (("records", np.uint8), ("offsets", np.int64), ("labels", np.int64),
                        ("indices", np.int64)):
        try:
            arr = group[name]
            if not isinstance(arr, zarr.Array):
                raise TypeError("not an array")
            value = np.asarray(arr[...])
        except Exception as exc:
            raise MemoryFormatError(f"{where}: array {name!r} unreadable: {exc!r}") from exc
        if value.dtype != dtype or value.ndim != 1:
            raise MemoryFormatError(
                f"{where}: array {name!r} is {value.dtype} {value.shape}, expected 1-D {np.dtype(dtype)}"
            )
        arrays[name] = value
    n = attrs["n_images"]
    if not isinstance(n, int) or arrays["offsets"].shape != (n + 1,) or \
            arrays["labels"].shape != (n,) or arrays["indices"].shape != (n,):
        raise MemoryFormatError(
            f"{where}: array shapes (offsets {arrays['offsets'].shape}, labels "
            f"{arrays['labels'].shape}, indices {arrays['indices'].shape}) disagree with "
            f"n_images = {n!r}"
        )
    if attrs["nbytes"] != arrays["records"].size:
        raise MemoryFormatError(
            f"{where}: attr 'nbytes' = {attrs['nbytes']!r} but records has {arrays['records'].size}"
        )
    records = split_records(arrays["records"], arrays["offsets"], str(where))
    params = attrs.get("codec_params") or {}
    if not isinstance(params, Mapping):
        raise MemoryFormatError(f"{where}: attr 'codec_params' is {params!r}, expected a mapping")
    digest = records_digest(arrays["records"], arrays["offsets"], arrays["labels"], arrays["indices"], params)
    if digest != attrs["sha256"]:
        raise MemoryFormatError(f"{where}: attr 'sha256' does not match the stored arrays (corrupt)")
    try:
        return TaskMemory.from_parts(attrs, records, arrays)
    except (MemoryFormatError, TypeError, ValueError) as exc:
        raise MemoryFormatError(f"{where}: bad attrs: {exc}") from exc
