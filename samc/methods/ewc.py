"""ewc: online Elastic Weight Consolidation (Kirkpatrick et al. 2017; online form, Schwarz et al. 2018).

After task k the diagonal Fisher F_k of the log-likelihood is estimated on ``ewc_fisher_samples``
training samples (true labels, eval mode) and accumulated as F ← γ F + F_k, with θ* ← θ.
``ewc_fisher`` picks the estimate: ``sample`` = mean of per-sample squared gradients (the empirical
Fisher); ``batch`` = square of the gradient of the mean loss over the samples, as GEM's reference
code (``model/ewc.py``, on its 10 memories per task) computes it. The batch estimate is never
larger (Jensen) and about n times smaller for weakly correlated per-sample gradients; the per-sample
one can cross the stability limit lr·λ·F = 2 at lr 0.1 (Split CIFAR-10 seed 1 diverged with it).
While learning later tasks the loss is
    L(θ) = CE(θ) + λ/2 Σ_i F_i (θ_i − θ*_i)²
with λ = ``ewc_lambda`` and γ = ``ewc_gamma`` (App. E: λ = 1).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from samc.methods.base import Batch, Method, TaskContext


def ewc_penalty(params: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor],
                fisher: dict[str, torch.Tensor]) -> torch.Tensor:
    """½ Σ_i F_i (θ_i − θ*_i)² (without λ)."""
    total = sum((fisher[n] * (p - anchor[n]).pow(2)).sum() for n, p in params.items() if n in fisher)
    return 0.5 * total if isinstance(total, torch.Tensor) else torch.zeros(())


class EWC(Method):
    name = "ewc"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def observe(self, batch: Batch, t: int) -> float:
        with self.timer("train_step"):
            self.model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(batch.x, t), batch.y)
            total = loss
            if self.fisher:
                params = dict(self.model.named_parameters())
                total = loss + self.cfg.baselines.ewc_lambda * ewc_penalty(params, self.anchor, self.fisher)
            total.backward()
            self.opt.step()
        return float(loss.detach())

    def diagonal_fisher(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        """E[(∂ log p(y|x) / ∂θ)²] (``sample``) or (∂ E[log p(y|x)] / ∂θ)² (``batch``) over a seeded
        sample of the task's training set."""
        n = min(self.cfg.baselines.ewc_fisher_samples, len(ctx.task.y_train))
        pick = torch.randperm(len(ctx.task.y_train), generator=self.generator)[:n].numpy()
        was_training = self.model.training
        self.model.eval()
        fisher = {name: torch.zeros_like(p) for name, p in self.model.named_parameters()}
        if self.cfg.baselines.ewc_fisher == "batch":
            groups, weight = [np.sort(pick)], 1.0
        else:
            groups, weight = [pick[k:k + 1] for k in range(n)], 1.0 / n
        for idx in groups:
            x = torch.from_numpy(ctx.task.x_train[idx]).to(self.device).float().div_(255.0)
            y = torch.as_tensor(ctx.task.y_train[idx], device=self.device)
            self.model.zero_grad(set_to_none=True)
            F.cross_entropy(self.model(x, ctx.t), y).backward()
            for name, p in self.model.named_parameters():
                if p.grad is not None:
                    fisher[name] += p.grad.detach() ** 2 * weight
        self.model.zero_grad(set_to_none=True)
        self.model.train(was_training)
        return fisher

    def after_task(self, ctx: TaskContext) -> None:
        with self.timer("fisher"):
            new = self.diagonal_fisher(ctx)
        gamma = self.cfg.baselines.ewc_gamma
        self.fisher = {n: gamma * self.fisher[n] + f if n in self.fisher else f for n, f in new.items()}
        self.anchor = {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "fisher": self.fisher, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        # states are read onto the CPU (samc.io.load_torch): the penalty needs them beside the weights
        self.fisher = {n: v.to(self.device) for n, v in state["fisher"].items()}
        self.anchor = {n: v.to(self.device) for n, v in state["anchor"].items()}
