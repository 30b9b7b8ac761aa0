"""The interface every memory codec implements: encode, decode, bytes (§4.1, issue 17).

A codec turns one uint8 image ``(C, H, W)`` (and, for the saliency-based ones, its Grad-CAM mask
of Eq. 4.4) into a self-contained record of bytes; the memory is charged ``len(record)`` for it,
plus :attr:`Codec.shared_nbytes` once per memory for any table the records share (none of the
codecs here has one: every record carries its own headers). ``decode`` returns the image and
the mask of the pixels it knows exactly; what is not known is either missing (zeros, to be
filled by the completion R / A_ξ of Eq. 4.6: ``fills = False``) or already estimated by the
codec (a low-resolution background: ``fills = True``, the completion may only refine it).

A new codec is one module with a subclass of :class:`Codec` and one line in
``samc.memory.codecs.CODECS``.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from samc.memory.errors import MemoryFormatError, as_bytes, check_image_mask, check_shape

#: a codec parameter: (type, default, lowest allowed, highest allowed)
Param = tuple[type, float, float, float]


class Codec(ABC):
    """One way to store an image as bytes. Subclasses set ``name``, ``params`` and the flags."""

    name: ClassVar[str]
    #: name -> (type, default, lowest, highest); the values are checked by ``__init__``
    params: ClassVar[dict[str, Param]] = {}
    #: encode reads the saliency mask (Grad-CAM, Eq. 4.4); others ignore it and keep the whole image
    uses_saliency: ClassVar[bool] = False
    #: decode estimates the pixels it does not know exactly (else they are zeros to be completed)
    fills: ClassVar[bool] = False
    #: decode returns every pixel exactly (the known mask is all True)
    lossless: ClassVar[bool] = False
    #: records read back only with a model the method trains (``latent``: EEC's autoencoder)
    learned: ClassVar[bool] = False

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            allowed = ", ".join(self.params) or "none"
            raise MemoryFormatError(
                f"codec {self.name!r}: unknown parameter(s) {', '.join(unknown)}; allowed: {allowed}")
        self.values: dict[str, float] = {}
        for key, (kind, default, lo, hi) in self.params.items():
            value = values.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    (kind is int and not float(value).is_integer()) or not math.isfinite(value):
                raise MemoryFormatError(f"codec {self.name!r}: {key} = {value!r} is not a {kind.__name__}")
            if not lo <= value <= hi:
                raise MemoryFormatError(f"codec {self.name!r}: {key} = {value!r} is outside [{lo}, {hi}]")
            self.values[key] = kind(value)

    # -- the interface ------------------------------------------------------------------------
    @abstractmethod
    def _encode(self, image: np.ndarray, mask: np.ndarray) -> bytes:
        """The record of a checked image ``(C, H, W)`` and mask ``(H, W)``."""

    @abstractmethod
    def _decode(self, record: bytes, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``(image uint8 (C,H,W), known bool (H,W))``; raise MemoryFormatError if malformed."""

    @abstractmethod
    def min_nbytes(self, shape: Sequence[int], min_kept: int = 0) -> int:
        """A proven lower bound on the length of any record of an image of ``shape`` keeping at
        least ``min_kept`` salient pixels: bounds how many records a byte budget can hold."""

    @property
    def shared_nbytes(self) -> int:
        """Bytes of tables shared by all records of a memory, charged once (none here)."""
        return 0

    # -- checked entry points ------------------------------------------------------------------
    def encode(self, image: np.ndarray, mask: np.ndarray | None = None) -> bytes:
        """Encode one image (``mask``: its kept pixels, None = all; ignored unless ``uses_saliency``)."""
        image, mask = check_image_mask(image, mask)
        return self._encode(image, mask)

    def decode(self, record: bytes, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The image a record holds and the mask of the pixels it knows exactly; a malformed
        record raises :class:`MemoryFormatError`, never another exception."""
        shape = check_shape(shape)
        record = as_bytes(record)
        image, known = self._decode(record, shape)
        if image.shape != shape or image.dtype != np.uint8 or known.shape != shape[1:]:
            raise MemoryFormatError(  # pragma: no cover - each codec checks its own output
                f"record: {self.name} decoded {image.dtype} {image.shape}, expected uint8 {shape}")
        return image, known

    # -- identity ------------------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """``name`` or ``name:key=value,...`` (non-default values only): what snapshots record."""
        changed = {k: v for k, v in self.values.items() if v != self.params[k][1]}
        if not changed:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in sorted(changed.items()))

    def describe(self) -> dict[str, Any]:
        return {"codec": self.name, **self.values}

    def __repr__(self) -> str:
        return f"<codec {self.spec}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and (self.name, self.values) == (other.name, other.values)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.values.items()))))


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def hwc(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` → contiguous ``(H, W, C)`` for the image libraries (grey stays 2-D)."""
    c, h, w = image.shape
    # through bytes: canonical strides even for size-1 axes (which libwebp checks)
    x = np.frombuffer(np.ascontiguousarray(image.transpose(1, 2, 0)).tobytes(), dtype=np.uint8)
    return x.reshape(h, w) if c == 1 else x.reshape(h, w, c)


def chw(decoded: Any, shape: tuple[int, int, int], what: str) -> np.ndarray:
    """A library's decoded ``(H, W[, C])`` array → ``(C, H, W)`` uint8, checked against ``shape``."""
    c, h, w = shape
    arr = np.asarray(decoded)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[:2] != (h, w):
        raise MemoryFormatError(f"record: {what} decoded {arr.dtype} {arr.shape}, expected {(h, w, c)}")
    if arr.shape[2] == c:
        return np.ascontiguousarray(arr.transpose(2, 0, 1))
    if c == 1 and arr.shape[2] == 3 and (arr == arr[:, :, :1]).all():
        return np.ascontiguousarray(arr[:, :, 0][None])
    raise MemoryFormatError(f"record: {what} decoded {arr.shape[2]} channels, expected {c}")
