"""GEM's gradient constraint and its projection (Eq. 3.2, 4.7–4.9; Lopez-Paz & Ranzato 2017), and A-GEM's.

g is the current batch's gradient, G stacks one row g̃_k per past task k (the gradient of the loss
on that task's completed memory M̃_k, Eq. 4.8). When some ⟨g, g̃_k⟩ < 0 (Lemma 4.1, Eq. 4.9), g is
replaced by the closest vector in L2 that satisfies every constraint, found through GEM's dual QP
    min_v ½ vᵀ G Gᵀ v + gᵀ Gᵀ v   s.t. v ≥ margin,   g̃ = Gᵀ v + g,
solved with ``quadprog`` (margin = ``memory_strength``; margin 0 gives the exact projection).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import quadprog
import torch


class GradBuffer:
    """A float32 buffer holding flattened parameter gradients, allocated once (one row per slot)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], n_rows: int) -> None:
        self.params = list(params)
        self.sizes = [p.numel() for p in self.params]
        device = self.params[0].device
        self.data = torch.zeros(n_rows, sum(self.sizes), device=device, dtype=torch.float32)

    def store(self, row: int) -> torch.Tensor:
        """Copy the parameters' current ``.grad`` into row ``row`` (zeros where a grad is None)."""
        out = self.data[row]
        off = 0
        for p, n in zip(self.params, self.sizes):
            if p.grad is None:
                out[off:off + n].zero_()
            else:
                out[off:off + n].copy_(p.grad.reshape(-1))
            off += n
        return out

    def load(self, vec: torch.Tensor) -> None:
        """Write a flat gradient back into the parameters' ``.grad``."""
        off = 0
        for p, n in zip(self.params, self.sizes):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(vec[off:off + n].view_as(p))
            off += n


def violated(g: torch.Tensor, G: torch.Tensor) -> bool:
    """True when some constraint ⟨g, g̃_k⟩ ≥ 0 of Eq. 4.9 fails."""
    return bool((G @ g < 0).any())


def project(g: torch.Tensor, G: torch.Tensor, margin: float = 0.5, eps: float = 1e-3) -> torch.Tensor:
    """GEM's projection (Eq. 4.7–4.9 via GEM's dual QP): the g̃ closest to g with ⟨g̃, g̃_k⟩ ≥ 0 ∀k.

    ``eps`` regularises GᵀG as GEM's reference code does (``project2cone2``).
    """
    mem = G.detach().double().cpu().numpy()
    grad = g.detach().double().cpu().numpy()
    t = mem.shape[0]
    P = mem @ mem.T
    P = 0.5 * (P + P.T) + np.eye(t) * eps
    q = -(mem @ grad)
    v = quadprog.solve_qp(P, q, np.eye(t), np.zeros(t) + margin)[0]
    return torch.from_numpy(v @ mem + grad).to(g.dtype).to(g.device)


def agem_project(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """A-GEM's single-constraint projection (Chaudhry et al. 2019): g − (gᵀg_ref / g_refᵀg_ref) g_ref
    when gᵀg_ref < 0, else g."""
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g
    return g - (dot / torch.dot(g_ref, g_ref).clamp_min(1e-12)) * g_ref
