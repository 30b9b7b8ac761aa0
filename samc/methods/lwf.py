"""lwf: Learning without Forgetting (Li & Hoiem 2017), multi-head.

Before task t the model is frozen as θ_o. On each batch of task t the loss is
    CE(head_t(x), y) + α Σ_{k<t} T² · KL(softmax(head_k^o(x)/T) ‖ softmax(head_k(x)/T))
(the old heads' responses to the new data are kept; α = ``lwf_alpha``, T = ``lwf_temperature``).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from samc.methods.base import Batch, Method, TaskContext


def distillation(new_logits: torch.Tensor, old_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(old/T) ‖ softmax(new/T)), averaged over the batch (Hinton et al. 2015)."""
    log_p = F.log_softmax(new_logits / temperature, dim=1)
    q = F.softmax(old_logits / temperature, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean") * temperature ** 2


class LwF(Method):
    name = "lwf"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.old: torch.nn.Module | None = None

    def before_task(self, ctx: TaskContext) -> None:
        if ctx.t > 0:
            self.old = copy.deepcopy(self.model).eval()
            for p in self.old.parameters():
                p.requires_grad_(False)

    def distill(self, x: torch.Tensor, new_a: torch.Tensor, t: int) -> torch.Tensor:
        """Σ_{k<t} distillation of the old heads on ``x`` (``new_a``: the model's features of x)."""
        if self.old is None or t == 0:
            return torch.zeros((), device=x.device)
        with torch.no_grad():
            old_a = self.old.features_map(x)
        T = self.cfg.baselines.lwf_temperature
        return sum(distillation(self.model.head(new_a, k), self.old.head(old_a, k), T) for k in range(t))

    def observe(self, batch: Batch, t: int) -> float:
        with self.timer("train_step"):
            self.model.zero_grad(set_to_none=True)
            a = self.model.features_map(batch.x)
            loss = F.cross_entropy(self.model.head(a, t), batch.y)
            (loss + self.cfg.baselines.lwf_alpha * self.distill(batch.x, a, t)).backward()
            self.opt.step()
        return float(loss.detach())

    def after_task(self, ctx: TaskContext) -> None:
        self.old = None

    # the frozen copy is rebuilt from the model at the start of each task: nothing more to save
