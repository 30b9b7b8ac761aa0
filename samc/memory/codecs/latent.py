"""``latent``: an image as its code in a learned autoencoder (EEC, Ayub & Wagner 2021; issue 19).

The record is the code z = E(x) of :class:`samc.models.LatentAE` (``latent x ⌈H/4⌉ x ⌈W/4⌉``
values), quantised to 8 bits between its own minimum and maximum; decoding is D(z). A record
reads back only with the autoencoder that wrote it, so the codec is *attached* to one
(:meth:`Latent.attach`), whose parameters the memory charges (``model_nbytes``: float16, the
precision the autoencoder is rounded to whenever its codes are written). Like a lossy image
codec it returns every pixel (known mask all True): nothing is left to complete.

A memory of latent records may also hold class summaries (samc.memory.summaries, first byte 1);
decoding one gives the image of its centroid.

Code record: ``b"\\x00"``, float16 lo, float16 hi, then the d codes as uint8,
z = lo + q (hi − lo) / 255.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import torch

from samc.memory.codecs.base import Codec
from samc.memory.errors import MemoryFormatError, check_shape
from samc.memory.summaries import KIND as SUMMARY_KIND
from samc.memory.summaries import parse_summary
from samc.models import LatentAE

KIND = 0
#: the key of a method's state (state.pt, "method") holding the autoencoder that reads the records back
STATE_KEY = "latent_ae"
_HEAD = struct.Struct("<Bee")


def quantise(z: torch.Tensor) -> list[bytes]:
    """Codes (N, d) as records: 8 bits between each code's float16-rounded min and max."""
    z = z.detach().float().cpu()
    lo = z.min(1).values.half().float()
    hi = torch.maximum(z.max(1).values.half().float(), lo + 1e-3).half().float()
    q = ((z - lo[:, None]) / (hi - lo)[:, None] * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    return [_HEAD.pack(KIND, float(a), float(b)) + q[i].tobytes() for i, (a, b) in enumerate(zip(lo, hi))]


def dequantise(record: bytes, d: int) -> torch.Tensor:
    """A code record back as its d values (float32)."""
    if len(record) != _HEAD.size + d or record[0] != KIND:
        raise MemoryFormatError(f"record: a latent code of {d} values takes {_HEAD.size + d} bytes, got {len(record)}")
    _, lo, hi = _HEAD.unpack_from(record)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise MemoryFormatError("record: a latent code with non-finite bounds")
    q = torch.from_numpy(np.frombuffer(record, dtype=np.uint8, offset=_HEAD.size).astype(np.float32))
    return lo + q * ((hi - lo) / 255.0)


class Latent(Codec):
    name = "latent"
    learned = True
    params = {"latent": (int, 4, 1, 64)}

    def __init__(self, **values: float) -> None:
        super().__init__(**values)
        self.ae: LatentAE | None = None

    def attach(self, ae: LatentAE) -> "Latent":
        if ae.latent != self.values["latent"]:
            raise MemoryFormatError(f"codec 'latent': latent = {self.values['latent']}, its autoencoder has {ae.latent}")
        self.ae = ae
        return self

    def _ae(self) -> LatentAE:
        if self.ae is None:
            raise MemoryFormatError("codec 'latent': a latent record reads back only with the autoencoder that "
                                    "wrote it (the run's task_<t>/state.pt); none is attached")
        return self.ae

    def code_size(self, shape: Sequence[int]) -> int:
        c, h, w = LatentAE.code_shape(check_shape(shape), int(self.values["latent"]))
        return c * h * w

    def record_nbytes(self, shape: Sequence[int]) -> int:
        """Every code record's length (they are all alike)."""
        return _HEAD.size + self.code_size(shape)

    def model_nbytes(self) -> int:
        """Bytes of the autoencoder's parameters at float16 (what reading the records back needs)."""
        return 2 * sum(p.numel() for p in self._ae().parameters())

    @torch.no_grad()
    def encode_images(self, x: torch.Tensor) -> list[bytes]:
        """Records of float images (N, C, H, W) in [0, 1] on the autoencoder's device."""
        return quantise(self._ae().encode(x).flatten(1))

    def codes(self, records: Sequence[bytes], shape: Sequence[int]) -> torch.Tensor:
        """The codes (N, d) of code records (a summary's: its centroid)."""
        d = self.code_size(shape)
        return torch.stack([parse_summary(r).mean if r[:1] == bytes([SUMMARY_KIND]) else dequantise(r, d)
                            for r in records]) if records else torch.zeros(0, d)

    @torch.no_grad()
    def decode_codes(self, z: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] of codes (N, d), on the autoencoder's device."""
        ae = self._ae()
        _, h, w = check_shape(shape)
        device = next(ae.parameters()).device
        return ae.decode(z.to(device).reshape(len(z), *LatentAE.code_shape(tuple(shape), ae.latent)), (h, w)).float()

    # -- the Codec interface --------------------------------------------------------------------
    def _encode(self, image: np.ndarray, mask: np.ndarray) -> bytes:
        device = next(self._ae().parameters()).device
        return self.encode_images(torch.from_numpy(image)[None].to(device).float().div_(255.0))[0]

    def _decode(self, record: bytes, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        x = self.decode_codes(self.codes([record], shape), shape)[0]
        image = x.mul(255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        return image, np.ones(shape[1:], dtype=bool)

    def min_nbytes(self, shape: Sequence[int], min_kept: int = 0) -> int:
        return self.record_nbytes(shape)
