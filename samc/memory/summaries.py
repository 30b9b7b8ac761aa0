"""Class summaries of latent codes: a Gaussian per class, stored in place of its codes (EEC, Ayub &
Wagner 2021: once the memory is full, the codes of old classes give way to their centroids and covariances).

A full d x d covariance of d = 256 code values would take 128 KiB at float16, more than a task's
whole budget, so the covariance is kept as probabilistic PCA (Tipping & Bishop 1999): its ``rank``
leading eigenpairs plus an isotropic rest,

    Σ = U diag(λ) Uᵀ + σ² I,   λ_i = ℓ_i − σ²,   σ² = mean of the eigenvalues ℓ beyond the rank,

the maximum-likelihood Gaussian of that form. Pseudo-codes are drawn as z = μ + U (√λ ⊙ ε₁) + σ ε₂,
ε ~ N(0, I). Every value is stored at float16 and a summary is always used as read back from its
bytes, so what is sampled is what is stored.

Record (little-endian): ``b"\\x01"``, uint16 count (codes summarised), uint16 d, uint8 rank, float16
σ², float16 μ (d), float16 λ (rank), float16 U (d x rank, row-major).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import torch

from samc.memory.errors import MemoryFormatError

KIND = 1
_HEAD = struct.Struct("<BHHBe")


@dataclass(frozen=True)
class GaussianSummary:
    """A class's codes as a Gaussian N(mean, U diag(lam) Uᵀ + noise I), of ``count`` codes."""

    count: int
    mean: torch.Tensor      # (d,)
    lam: torch.Tensor       # (rank,)
    basis: torch.Tensor     # (d, rank), orthonormal columns
    noise: float            # σ²

    def covariance(self) -> torch.Tensor:
        d = self.mean.numel()
        return self.basis @ torch.diag(self.lam) @ self.basis.T + self.noise * torch.eye(d, dtype=self.mean.dtype)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` pseudo-codes (n, d) drawn with ``generator`` (CPU, float32)."""
        d, k = self.basis.shape
        e1 = torch.randn(n, k, generator=generator)
        e2 = torch.randn(n, d, generator=generator)
        return self.mean + (e1 * self.lam.sqrt()) @ self.basis.T + self.noise ** 0.5 * e2

    def to_bytes(self) -> bytes:
        d, k = self.basis.shape
        f16 = lambda t: t.detach().cpu().numpy().astype("<f2").tobytes()   # noqa: E731
        return (_HEAD.pack(KIND, self.count, d, k, self.noise) + f16(self.mean) + f16(self.lam)
                + f16(self.basis.reshape(-1)))


def fit_summary(codes: torch.Tensor, rank: int) -> GaussianSummary:
    """The PPCA Gaussian of ``codes`` (n, d), as read back from its float16 record."""
    if codes.ndim != 2 or codes.shape[0] < 1:
        raise MemoryFormatError(f"codes: expected a non-empty (n, d) tensor, got {tuple(codes.shape)}")
    n, d = codes.shape
    if n > 0xFFFF:
        raise MemoryFormatError(f"codes: {n} codes, more than a summary counts (65535)")
    z = codes.detach().double().cpu()
    mean = z.mean(0)
    cov = (z - mean).T @ (z - mean) / max(n - 1, 1)
    ell, vec = torch.linalg.eigh(cov)                       # ascending
    ell, vec = ell.flip(0).clamp_min(0.0), vec.flip(1)
    k = min(int(rank), d - 1, max(n - 1, 0))
    noise = float(ell[k:].mean()) if k < d else 0.0
    lam = (ell[:k] - noise).clamp_min(0.0)
    summary = GaussianSummary(n, mean.float(), lam.float(), vec[:, :k].float(), noise)
    return parse_summary(summary.to_bytes())


def parse_summary(record: bytes) -> GaussianSummary:
    """A summary record back as a :class:`GaussianSummary` (MemoryFormatError if malformed)."""
    if len(record) < _HEAD.size or record[0] != KIND:
        raise MemoryFormatError("record: not a class summary (too short or another kind)")
    _, count, d, k, noise = _HEAD.unpack_from(record)
    need = _HEAD.size + 2 * (d + k + d * k)
    if len(record) != need or d < 1 or k >= d + 1:
        raise MemoryFormatError(f"record: a summary of d={d}, rank={k} takes {need} bytes, got {len(record)}")
    vals = torch.from_numpy(np.frombuffer(record, dtype="<f2", offset=_HEAD.size).astype(np.float32))
    if not torch.isfinite(vals).all() or not np.isfinite(noise) or noise < 0:
        raise MemoryFormatError("record: a summary holds non-finite or negative values")
    mean, lam, basis = vals[:d], vals[d : d + k], vals[d + k :].reshape(d, k)
    return GaussianSummary(int(count), mean, lam.clamp_min(0.0), basis, float(noise))


def summary_nbytes(d: int, rank: int) -> int:
    """Bytes of a summary record of codes of ``d`` values at ``rank``."""
    k = min(int(rank), d - 1)
    return _HEAD.size + 2 * (d + k + d * k)
