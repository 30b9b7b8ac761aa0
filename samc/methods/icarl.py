"""icarl: iCaRL (Rebuffi et al. 2017) in the task-incremental setting of the paper.

* Exemplars: after task t, m = ⌊images_per_task / classes_per_task⌋ images per class, chosen by
  herding on the L2-normalised features φ(x) (each pick brings the exemplar mean closest to the
  class mean); kept as raw images with their task id.
* Training on task t: CE on the new task's head, plus λ = ``icarl_lambda`` times the distillation
  (temperature ``lwf_temperature``) of every old head of the frozen previous model, on the batch
  together with an equally large sample of the exemplars.
* Classification: nearest mean of exemplars within the task's classes, means recomputed with the
  current φ (eval mode); a task without exemplars yet is classified by its head.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from samc.memory import TaskMemory, dense_task_memory
from samc.methods.base import Batch, TaskContext
from samc.methods.lwf import LwF


def features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """φ(x): the L2-normalised, average-pooled activations of the last block."""
    return F.normalize(F.adaptive_avg_pool2d(model.features_map(x), 1).flatten(1), dim=1)


def herding(feats: torch.Tensor, m: int) -> list[int]:
    """Indices of ``m`` rows of ``feats`` chosen greedily so that their running mean stays
    closest to the mean of all rows (iCaRL, Algorithm 4)."""
    mu = feats.mean(0)
    chosen: list[int] = []
    acc = torch.zeros_like(mu)
    for k in range(1, min(m, len(feats)) + 1):
        dist = ((mu - (acc + feats) / k) ** 2).sum(1)
        if chosen:
            dist[chosen] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        acc += feats[i]
    return chosen


class ICaRL(LwF):
    """LwF's frozen teacher and distillation, plus exemplars and the nearest-mean classifier."""

    name = "icarl"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ex_x: dict[int, torch.Tensor] = {}   # task -> uint8 (n, C, H, W)
        self.ex_y: dict[int, torch.Tensor] = {}   # task -> local labels
        self.ex_i: dict[int, torch.Tensor] = {}   # task -> indices in the task's training set
        self.ex_classes: dict[int, list[int]] = {}

    def observe(self, batch: Batch, t: int) -> float:
        with self.timer("train_step"):
            self.model.zero_grad(set_to_none=True)
            x = batch.x
            if self.old is not None and self.ex_x:
                xs = torch.cat([self.ex_x[k] for k in sorted(self.ex_x)])
                pick = torch.randperm(len(xs), generator=self.generator)[: len(batch)]
                x = torch.cat([x, xs[pick].to(self.device).float().div_(255.0)])
            a = self.model.features_map(x)
            loss = F.cross_entropy(self.model.head(a[: len(batch)], t), batch.y)
            (loss + self.cfg.baselines.icarl_lambda * self.distill(x, a, t)).backward()
            self.opt.step()
        return float(loss.detach())

    def after_task(self, ctx: TaskContext) -> None:
        super().after_task(ctx)
        per_class = max(1, self.cfg.memory.images_per_task // len(ctx.task.classes))
        was_training = self.model.training
        self.model.eval()
        xs, ys, ids = [], [], []
        with torch.no_grad(), self.timer("exemplars"):
            for c in range(len(ctx.task.classes)):
                idx = np.flatnonzero(ctx.task.y_train == c)
                imgs = torch.from_numpy(ctx.task.x_train[idx])
                f = torch.cat([features(self.model, imgs[i:i + 500].to(self.device).float().div_(255.0))
                               for i in range(0, len(imgs), 500)])
                chosen = herding(f, per_class)
                xs.append(imgs[chosen])
                ys.append(torch.full((len(chosen),), c, dtype=torch.int64))
                ids.append(torch.from_numpy(idx[chosen]))
        self.model.train(was_training)
        self.ex_x[ctx.t], self.ex_y[ctx.t], self.ex_i[ctx.t] = torch.cat(xs), torch.cat(ys), torch.cat(ids)
        self.ex_classes[ctx.t] = list(ctx.task.classes)

    def task_memory(self, t: int) -> TaskMemory | None:
        """Task t's exemplars (raw images), counted and charged like GEM's memory."""
        if t not in self.ex_x:
            return None
        return dense_task_memory(t, self.ex_classes[t], self.ex_x[t].numpy(), self.ex_y[t].numpy(),
                                 self.ex_i[t].numpy(), self.cfg.memory.images_per_task)

    @torch.no_grad()
    def class_means(self, t: int) -> torch.Tensor:
        """μ_c for task t's classes: normalised mean of the exemplars' φ (current model)."""
        f = features(self.model, self.ex_x[t].to(self.device).float().div_(255.0))
        y = self.ex_y[t].to(self.device)
        return F.normalize(torch.stack([f[y == c].mean(0) for c in range(int(y.max()) + 1)]), dim=1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: int) -> torch.Tensor:
        if t not in self.ex_x:
            return self.model(x, t).argmax(1)
        return torch.cdist(features(self.model, x), self.class_means(t)).argmin(1)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "ex_x": {str(k): v for k, v in self.ex_x.items()},
                "ex_y": {str(k): v for k, v in self.ex_y.items()},
                "ex_i": {str(k): v for k, v in self.ex_i.items()},
                "ex_classes": {str(k): v for k, v in self.ex_classes.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.ex_x = {int(k): v for k, v in state["ex_x"].items()}
        self.ex_y = {int(k): v for k, v in state["ex_y"].items()}
        self.ex_i = {int(k): v for k, v in state["ex_i"].items()}
        self.ex_classes = {int(k): list(v) for k, v in state["ex_classes"].items()}
