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
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from samc.methods.base import Batch
from samc.methods.er import ER


class MER(ER):
    name = "mer"

    def replay_step(self, batch: Batch, t: int) -> float:
        """One SGD step (lr α) on the batch plus an equally large reservoir sample."""
        x, y, tasks = batch.x, batch.y, torch.full_like(batch.y, t)
        n = len(self)
        if n:
            pick = torch.randperm(n, generator=self.generator)[: len(batch)]
            x = torch.cat([x, self.buf_x[pick].to(self.device).float().div_(255.0)])
            y = torch.cat([y, self.buf_y[pick].to(self.device)])
            tasks = torch.cat([tasks, self.buf_t[pick].to(self.device)])
        self.model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(x, tasks), y)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

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
        with self.timer("memory_write"):
            raw = torch.from_numpy(batch.raw)
            for i in range(len(batch)):
                self.reservoir_add(raw[i], int(batch.y[i]), t, int(batch.index[i]))
        return losses[0]
