"""``raw``: the whole image, ``C*H*W`` bytes (what GEM, ER and A-GEM store; App. H's unit).

A budget of N raw images holds exactly N raw records. (Snapshots written before the codec
package call it ``dense``; that name still reads.)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from samc.memory.codecs.base import Codec
from samc.memory.errors import MemoryFormatError, check_shape


class Raw(Codec):
    name = "raw"
    lossless = True

    def _encode(self, image: np.ndarray, mask: np.ndarray) -> bytes:
        return np.ascontiguousarray(image).tobytes()

    def _decode(self, record: bytes, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        c, h, w = shape
        if len(record) != c * h * w:
            raise MemoryFormatError(
                f"record: raw record has {len(record)} bytes, expected C*H*W = {c * h * w}")
        image = np.frombuffer(record, dtype=np.uint8).reshape(c, h, w).copy()
        return image, np.ones((h, w), dtype=bool)

    def min_nbytes(self, shape: Sequence[int], min_kept: int = 0) -> int:
        c, h, w = check_shape(shape)
        return c * h * w
