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
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from samc.methods.base import Batch
from samc.methods.er import ER


class MER(ER):
    name = "mer"
    # replay_step (one SGD step of lr α on B ∪ R_i) and remember (reservoir) come from ER

    def observe(self, batch: Batch, t: int) -> float:
        b = self.cfg.baselines
        params = list(self.model.parameters())
        with self.timer("train_step"):
            with torch.no_grad():
                theta_a = parameters_to_vector(params).clone()
            losses = []
            for _ in range(b.mer_batches):
                with torch.no_grad():
                    theta_w = parameters_to_vector(params).clone()
                losses.append(self.replay_step(batch, t))
                with torch.no_grad():
                    vector_to_parameters(theta_w + b.mer_beta * (parameters_to_vector(params) - theta_w), params)
            with torch.no_grad():
                vector_to_parameters(theta_a + b.mer_gamma * (parameters_to_vector(params) - theta_a), params)
        self.remember(batch, t)
        return losses[0]
