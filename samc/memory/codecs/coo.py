"""``coo``: the paper's Coordinate Format ``COO(x')`` of the salient pixels (§4.1, Eq. 4.6).

A 2-byte little-endian count ``k`` followed by ``k`` int16 rows, ``k`` int16 columns and
``k x C`` uint8 values (pixel-interleaved): :func:`coo_nbytes` ``= 2 + k*(4 + C)`` bytes. For
RGB that is 7 bytes per kept pixel against 3 per pixel of the raw image, so COO is *larger than
the raw image* once more than 3/7 (~43%) of the pixels are kept.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from samc.memory.codecs.base import Codec
from samc.memory.errors import (UINT16_MAX, MemoryFormatError, as_int, check_image_mask, check_int16_sides,
                                check_shape)


def coo_nbytes(k: int, channels: int) -> int:
    """Bytes of the paper's COO record (§4.1): 2-byte count + k*(int16 row, int16 col, C uint8)."""
    k = as_int(k, "k")
    channels = as_int(channels, "channels")
    if k < 0 or channels <= 0:
        raise MemoryFormatError(f"coo_nbytes: need k >= 0 and channels > 0, got {k}, {channels}")
    return 2 + k * (4 + channels)


def coo(image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``COO(x')`` of Algorithm 1 line 11 / §4.1: kept pixels as (row, col, values) tuples.

    Returns ``rows`` int16 ``(k,)``, ``cols`` int16 ``(k,)``, ``values`` uint8 ``(k, C)`` in
    row-major pixel order.
    """
    image, mask = check_image_mask(image, mask)
    check_int16_sides(image, "COO")
    rows, cols = np.nonzero(mask)
    values = np.ascontiguousarray(image[:, rows, cols].T)
    return rows.astype(np.int16), cols.astype(np.int16), values


def coo_inverse(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``COO^-1`` of Eq. 4.6 / Algorithm 1 line 4: zero-padded image ``(C,H,W)`` and its mask."""
    c, h, w = check_shape(shape)
    rows = np.asarray(rows)
    cols = np.asarray(cols)
    values = np.asarray(values)
    if rows.ndim != 1 or cols.ndim != 1 or rows.shape != cols.shape:
        raise MemoryFormatError(f"coo: rows {rows.shape} and cols {cols.shape} must be equal 1-D")
    if rows.size and not (np.issubdtype(rows.dtype, np.integer) and np.issubdtype(cols.dtype, np.integer)):
        raise MemoryFormatError(f"coo: rows/cols must be integers, got {rows.dtype}/{cols.dtype}")
    k = rows.shape[0]
    if values.dtype != np.uint8 or values.shape != (k, c):
        raise MemoryFormatError(
            f"coo: values must be uint8 ({k}, {c}), got {values.dtype} {values.shape}"
        )
    r = rows.astype(np.int64)
    q = cols.astype(np.int64)
    if k and (r.min() < 0 or r.max() >= h or q.min() < 0 or q.max() >= w):
        raise MemoryFormatError(f"coo: coordinates out of range for shape {(c, h, w)}")
    flat = r * w + q
    if k and np.unique(flat).size != k:
        raise MemoryFormatError("coo: duplicate coordinates")
    mask = np.zeros(h * w, dtype=bool)
    mask[flat] = True
    image = np.zeros((c, h * w), dtype=np.uint8)
    image[:, flat] = values.T
    return image.reshape(c, h, w), mask.reshape(h, w)


def coo_payload(image: np.ndarray, mask: np.ndarray) -> bytes:
    """The rows, columns and values of COO(x') without the count (little-endian int16)."""
    rows, cols, values = coo(image, mask)
    return rows.astype("<i2").tobytes() + cols.astype("<i2").tobytes() + values.tobytes()


def parse_coo_payload(payload: bytes, k: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`coo_payload` for ``k`` pixels."""
    c = shape[0]
    rows = np.frombuffer(payload, dtype="<i2", count=k)
    cols = np.frombuffer(payload, dtype="<i2", count=k, offset=2 * k)
    values = np.frombuffer(payload, dtype=np.uint8, count=k * c, offset=4 * k).reshape(k, c)
    try:
        return coo_inverse(rows, cols, values, shape)
    except MemoryFormatError as exc:
        raise MemoryFormatError(f"record: {exc}") from exc


class Coo(Codec):
    name = "coo"
    uses_saliency = True

    def _encode(self, image: np.ndarray, mask: np.ndarray) -> bytes:
        check_int16_sides(image, "coo")
        k = int(np.count_nonzero(mask))
        if k > UINT16_MAX:
            raise MemoryFormatError(f"mask: {k} kept pixels overflow the 2-byte COO count")
        return k.to_bytes(2, "little") + coo_payload(image, mask)

    def _decode(self, record: bytes, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        if len(record) < 2:
            raise MemoryFormatError(f"record: coo record has {len(record)} bytes, needs >= 2")
        k = int.from_bytes(record[:2], "little")
        if len(record) != coo_nbytes(k, shape[0]):
            raise MemoryFormatError(
                f"record: coo count {k} needs {coo_nbytes(k, shape[0])} bytes, record has {len(record)}"
            )
        return parse_coo_payload(record[2:], k, shape)

    def min_nbytes(self, shape: Sequence[int], min_kept: int = 0) -> int:
        c, h, w = check_shape(shape)
        return coo_nbytes(as_int(min_kept, "min_kept"), c)
