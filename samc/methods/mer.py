"""mer: Meta-Experience Replay (Riemer et al. 2019), with ER's reservoir buffer.

One meta-update per incoming batch B (Riemer et al., Algorithm 1, batched as the paper states:
one inner gradient step per mini-batch of 10):
    θ_A ← θ
    for i = 1..s:                         s = ``mer_batches``
        θ_W ← θ
        θ ← θ − α ∇ CE(B ∪ R_i)           R_i: a reservoir sample as large as B
        θ ← θ_W + β (θ − θ_W)             within-batch Reptile step, β = ``mer_beta``
    θ ← θ_A + γ (θ − θ_A)                 across-batch Reptile step, γ = ``mer_gamma``
With s = 1 (the paper's setting) the meta-update reduces to one replay step of size αβγ: the
Reptile terms that align gradients across samples need s > 1 (set ``baselines.mer_batches``).
"""
from __future__ import annotations

import torch

from samc.methods.base import Batch
from samc.methods.er import ER


class MER(ER):
    name = "mer"
    # replay_step (one SGD step of lr α on B ∪ R_i) and remember (reservoir) come from ER

    def observe(self, batch: Batch, t: int) -> float:
        b = self.cfg.baselines
        params = list(self.model.parameters())
        with self.timer("train_step"):
            theta_a = _snapshot(params)
            losses = []
            for _ in range(b.mer_batches):
                theta_w = _snapshot(params)
                losses.append(self.replay_step(batch, t))
                _interpolate(params, theta_w, b.mer_beta)
            _interpolate(params, theta_a, b.mer_gamma)
        self.remember(batch, t)
        return losses[0]


def _snapshot(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """θ, one tensor per parameter (each in its parameter's memory format: channels_last stays)."""
    return [p.detach().clone() for p in params]


@torch.no_grad()
def _interpolate(params: list[torch.nn.Parameter], start: list[torch.Tensor], rate: float) -> None:
    """θ ← θ_start + rate · (θ − θ_start), in place (the Reptile steps above)."""
    for p, s in zip(params, start):
        p.copy_(s + rate * (p - s))
