"""Errors and input checks shared by the memory's codecs, FIFO and stores (§4.1 conventions).

Images are numpy ``uint8`` arrays ``(C, H, W)``; masks are numpy ``bool`` arrays ``(H, W)``
(True = the pixel is kept / known exactly, all C channels). Bad input raises
:class:`MemoryFormatError`, whose message names the field or store path and what is wrong.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

INT16_MAX = int(np.iinfo(np.int16).max)
UINT16_MAX = int(np.iinfo(np.uint16).max)


class MemoryFormatError(ValueError):
    """Bad image / mask / record / store given to the episodic memory (§4.1)."""


def check_shape(shape: Any, what: str = "shape") -> tuple[int, int, int]:
    """Validate an image shape ``(C, H, W)`` of positive ints (§4.1 image convention)."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise MemoryFormatError(f"{what}: expected (C, H, W), got {shape!r}") from None
    if len(dims) != 3 or not all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) and int(d) > 0 for d in dims
    ):
        raise MemoryFormatError(f"{what}: expected 3 positive ints (C, H, W), got {shape!r}")
    return int(dims[0]), int(dims[1]), int(dims[2])


def check_image_mask(image: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate an image ``uint8 (C,H,W)`` and its mask ``bool (H,W)`` (None = all kept)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        desc = (
            f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        )
        raise MemoryFormatError(f"image: expected numpy uint8 array (C, H, W), got {desc}")
    check_shape(image.shape, "image.shape")
    if mask is None:
        return image, np.ones(image.shape[1:], dtype=bool)
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        desc = f"{mask.dtype} {mask.shape}" if isinstance(mask, np.ndarray) else type(mask).__name__
        raise MemoryFormatError(f"mask: expected numpy bool array (H, W), got {desc}")
    if mask.shape != image.shape[1:]:
        raise MemoryFormatError(
            f"mask: shape {mask.shape} does not match image (H, W) {image.shape[1:]}"
        )
    return image, mask


def check_int16_sides(image: np.ndarray, codec: str) -> None:
    """Row and column indices of a COO-style record are int16: H and W must fit."""
    _, h, w = image.shape
    if h > INT16_MAX or w > INT16_MAX:
        raise MemoryFormatError(f"image.shape: H, W must fit int16 for {codec}, got {image.shape}")


def as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MemoryFormatError(f"{what}: expected an int, got {value!r}")
    return int(value)


def as_bytes(record: Any) -> bytes:
    if not isinstance(record, (bytes, bytearray, memoryview)):
        raise MemoryFormatError(f"record: expected bytes, got {type(record).__name__}")
    return bytes(record)
