"""Records by codec name: encode, decode and their size bounds (§4.1), and the flat layout
(one byte array + offsets) in which a memory's records are saved."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from samc.memory.codecs import CODECS, get_codec
from samc.memory.errors import MemoryFormatError, as_int, check_shape

#: the registered codec names (``memory.codec``)
ENCODINGS: tuple[str, ...] = tuple(CODECS)


def encode(image: np.ndarray, mask: np.ndarray | None = None, encoding: str = "sparse", **params: Any) -> bytes:
    """Encode one image (masked image ``x'`` of Eq. 4.4 for a saliency codec) as a memory record.

    ``mask=None`` keeps every pixel; codecs that do not use saliency ignore the mask.
    """
    return get_codec(encoding, **params).encode(image, mask)


def encode_batch(images: np.ndarray, masks: np.ndarray | None = None, encoding: str = "sparse",
                 **params: Any) -> list[bytes]:
    """Encode a batch ``(N,C,H,W)`` with masks ``(N,H,W)`` (Algorithm 1 lines 8-11)."""
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise MemoryFormatError("images: expected numpy uint8 array (N, C, H, W)")
    if masks is not None and (not isinstance(masks, np.ndarray) or masks.shape[:1] != images.shape[:1]):
        raise MemoryFormatError("masks: expected numpy bool array (N, H, W) matching images")
    codec = get_codec(encoding, **params)
    return [codec.encode(images[i], None if masks is None else masks[i]) for i in range(images.shape[0])]


def decode(record: bytes, shape: Sequence[int], encoding: str = "sparse",
           **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """``COO^-1`` for a stored record (Eq. 4.6): image uint8 ``(C,H,W)`` (zeros where dropped,
    for codecs that drop), and the mask of the pixels known exactly. Malformed records raise
    :class:`MemoryFormatError`."""
    return get_codec(encoding, **params).decode(record, shape)


def min_record_nbytes(shape: Sequence[int], encoding: str = "sparse", min_kept: int = 0, **params: Any) -> int:
    """Lower bound on the record length for images keeping >= ``min_kept`` pixels (§4.1, App. H):
    bounds how many records can fit a byte budget."""
    c, h, w = check_shape(shape)
    codec = get_codec(encoding, **params)
    k = as_int(min_kept, "min_kept")
    if not 0 <= k <= h * w:
        raise MemoryFormatError(f"min_kept: must be in [0, {h * w}], got {k}")
    return codec.min_nbytes((c, h, w), k)


def record_kept_count(record: bytes, shape: Sequence[int], encoding: str = "sparse", **params: Any) -> int:
    """Number of pixels a record knows exactly (k of the COO it replaces, §4.1)."""
    return int(np.count_nonzero(decode(record, shape, encoding, **params)[1]))


def concat_records(records: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Records → one uint8 array and int64 offsets (N+1)."""
    lengths = np.fromiter((len(r) for r in records), dtype=np.int64, count=len(records))
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.frombuffer(b"".join(records), dtype=np.uint8).copy()
    return data, offsets


def split_records(data: np.ndarray, offsets: np.ndarray, where: str) -> list[bytes]:
    """Inverse of :func:`concat_records`, checking the offsets."""
    data = np.asarray(data)
    offsets = np.asarray(offsets)
    if data.ndim != 1 or data.dtype != np.uint8:
        raise MemoryFormatError(f"{where} records: expected 1-D uint8, got {data.dtype} {data.shape}")
    if offsets.ndim != 1 or not np.issubdtype(offsets.dtype, np.integer) or offsets.size < 1:
        raise MemoryFormatError(
            f"{where} offsets: expected 1-D int64 of length N+1, got {offsets.dtype} {offsets.shape}"
        )
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != data.size:
        raise MemoryFormatError(
            f"{where} offsets: must start at 0, be non-decreasing and end at len(records) = "
            f"{data.size} (got first {int(offsets[0])}, last {int(offsets[-1])})"
        )
    raw = data.tobytes()
    return [raw[offsets[i] : offsets[i + 1]] for i in range(offsets.size - 1)]
