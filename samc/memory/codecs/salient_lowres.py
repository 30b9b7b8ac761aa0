"""``salient_lowres``: the salient pixels exact, the rest from a low-resolution thumbnail
(issue 17, saliency-weighted coding (a)).

SAMC (§4.1) stores the pixels whose Grad-CAM saliency exceeds μ (Eq. 4.4) and drops the rest,
leaving the completion of Eq. 4.6 to guess them. Here the background is not dropped but kept at
low fidelity: the whole image downsampled by ``factor`` (OpenCV ``INTER_AREA``) and coded with
JPEG XL at ``distance``. Decoding upsamples the thumbnail (bilinear) and pastes the exact
salient pixels over it; the known mask is the salient mask, and the completion, which has
nothing missing to fill (``fills``), may only refine the estimated background.

Record: one header byte (version), the 2-byte little-endian length ``L`` of the salient part,
the ``sparse`` record of the salient pixels (``L`` bytes), then the thumbnail's JPEG XL stream.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from samc.memory.codecs.base import Codec, chw, hwc
from samc.memory.codecs.image import JXL_SIGNATURE, jxl_decode, jxl_encode
from samc.memory.codecs.sparse import Sparse
from samc.memory.errors import MemoryFormatError, check_shape

VERSION = 1
_SPARSE = Sparse()


def thumbnail_shape(shape: tuple[int, int, int], factor: int) -> tuple[int, int, int]:
    c, h, w = shape
    return c, max(1, h // factor), max(1, w // factor)


def downsample(image: np.ndarray, factor: int) -> np.ndarray:
    c, th, tw = thumbnail_shape(image.shape, factor)
    return chw(cv2.resize(hwc(image), (tw, th), interpolation=cv2.INTER_AREA), (c, th, tw), "resize")


def upsample(thumb: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    c, h, w = shape
    return chw(cv2.resize(hwc(thumb), (w, h), interpolation=cv2.INTER_LINEAR), shape, "resize")


class SalientLowres(Codec):
    name = "salient_lowres"
    uses_saliency = True
    fills = True
    params = {"factor": (int, 4, 1, 64), "distance": (float, 1.0, 0.1, 25.0)}

    def _encode(self, image: np.ndarray, mask: np.ndarray) -> bytes:
        salient = _SPARSE.encode(image, mask)
        if len(salient) > 0xFFFF:
            raise MemoryFormatError(f"image: its salient part needs {len(salient)} bytes, more than 65535")
        thumb = jxl_encode(downsample(image, int(self.values["factor"])), self.values["distance"], 7)
        return bytes([VERSION]) + len(salient).to_bytes(2, "little") + salient + thumb

    def _decode(self, record: bytes, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        if len(record) < 3 or record[0] != VERSION:
            raise MemoryFormatError("record: salient_lowres record too short or of an unknown version")
        n = int.from_bytes(record[1:3], "little")
        if len(record) < 3 + n:
            raise MemoryFormatError(f"record: salient part of {n} bytes overruns the record ({len(record)})")
        exact, known = _SPARSE.decode(record[3 : 3 + n], shape)
        thumb = jxl_decode(record[3 + n :], thumbnail_shape(shape, int(self.values["factor"])))
        image = np.where(known[None], exact, upsample(thumb, shape))
        return image, known

    def min_nbytes(self, shape: Sequence[int], min_kept: int = 0) -> int:
        shape = check_shape(shape)
        return 3 + _SPARSE.min_nbytes(shape, min_kept) + len(JXL_SIGNATURE)
