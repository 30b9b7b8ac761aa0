"""icarl: iCaRL (Rebuffi et al. 2017) in the task-incremental setting of the paper.

* Exemplars: after task t, m = ⌊images_per_task / classes_per_task⌋ images per class, chosen by
  herding on the L2-normalised features φ(x) (each pick brings the exemplar mean closest to the
  class mean); kept as raw images with their task id. With ``memory.codec`` other than ``raw``
  each class gets the bytes of m raw images instead, filled with the codec's records of the
  herding order until the next one does not fit (a saliency codec gets Grad-CAM masks, Eq. 4.4);
  the exemplars are then the decoded records, what a codec leaves missing filled by R (Eq. 4.6).
* Training on task t: CE on the new task's head, plus λ = ``icarl_lambda`` times the distillation
  (temperature ``lwf_temperature``) of every old head of the frozen previous model, on the batch
  together with an equally large sample of the exemplars.
* Classification: nearest mean of exemplars within the task's classes, means recomputed with the
  current φ (eval mode); a task without exemplars yet is classified by its head.
"""
from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from samc.memory import TaskMemory, dense_task_memory
from samc.memory.records import concat_records, split_records
from samc.methods.base import Batch, TaskContext
from samc.methods.lwf import LwF
from samc.models import ResNet18


def features(model: ResNet18, x: torch.Tensor) -> torch.Tensor:
    """φ(x): the L2-normalised, average-pooled activations of the last block."""
    return F.normalize(model.features(x), dim=1)


def herding_order(feats: torch.Tensor) -> Iterator[int]:
    """Rows of ``feats`` in herding order: each next one keeps the running mean of those chosen
    closest to the mean of all rows (iCaRL, Algorithm 4)."""
    mu = feats.mean(0)
    chosen: list[int] = []
    acc = torch.zeros_like(mu)
    for k in range(1, len(feats) + 1):
        dist = ((mu - (acc + feats) / k) ** 2).sum(1)
        if chosen:
            dist[chosen] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        acc += feats[i]
        yield i


def herding(feats: torch.Tensor, m: int) -> list[int]:
    """The first ``m`` rows of the herding order."""
    return list(islice(herding_order(feats), m))


class ICaRL(LwF):
    """LwF's frozen teacher and distillation, plus exemplars and the nearest-mean classifier."""

    name = "icarl"
    default_codec = "raw"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ex_x: dict[int, torch.Tensor] = {}   # task -> uint8 (n, C, H, W): decoded exemplars
        self.ex_rec: dict[int, list[bytes]] = {}  # task -> the exemplars' codec records (codec not raw)
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
        n_classes = len(ctx.task.classes)
        per_class = max(1, self.cfg.memory.images_per_task // n_classes)
        shape = tuple(ctx.task.x_train.shape[1:])
        class_budget = self.memory_budget(shape) // n_classes if self.coded else 0
        was_training = self.model.training
        self.model.eval()
        xs, ys, ids, recs = [], [], [], []
        with self.timer("exemplars"):
            for c in range(n_classes):
                idx = np.flatnonzero(ctx.task.y_train == c)
                imgs = torch.from_numpy(ctx.task.x_train[idx])
                with torch.no_grad():
                    f = torch.cat([features(self.model, imgs[i:i + 500].to(self.device).float().div_(255.0))
                                   for i in range(0, len(imgs), 500)])
                if self.coded:
                    chosen, records = self.coded_exemplars(imgs, c, ctx.t, herding_order(f), class_budget)
                    recs += records
                    xs.append(torch.stack([self.restore_record(r, shape) for r in records]) if records
                              else imgs[:0])
                else:
                    chosen = herding(f, per_class)
                    xs.append(imgs[chosen])
                ys.append(torch.full((len(chosen),), c, dtype=torch.int64))
                ids.append(torch.from_numpy(idx[chosen]))
        self.model.train(was_training)
        self.ex_x[ctx.t], self.ex_y[ctx.t], self.ex_i[ctx.t] = torch.cat(xs), torch.cat(ys), torch.cat(ids)
        self.ex_classes[ctx.t] = list(ctx.task.classes)
        if self.coded:
            self.ex_rec[ctx.t] = recs

    def coded_exemplars(self, imgs: torch.Tensor, c: int, t: int, order: Iterator[int], budget: int,
                        chunk: int = 16) -> tuple[list[int], list[bytes]]:
        """Class c's exemplars as codec records: the herding order's prefix whose records fit
        ``budget`` bytes (masks, for a saliency codec, computed a chunk of candidates at a time)."""
        chosen: list[int] = []
        records: list[bytes] = []
        used = self.codec.shared_nbytes
        while True:
            cand = list(islice(order, chunk))
            if not cand:
                return chosen, records
            masks = [None] * len(cand)
            if self.codec.uses_saliency:
                x = imgs[cand].to(self.device).float().div_(255.0)
                masks = self.masks(x, torch.full((len(cand),), c, dtype=torch.int64, device=self.device), t)
            for i, m in zip(cand, masks):
                with self.timer("encode"):
                    record = self.codec.encode(imgs[i].numpy(), m)
                if used + len(record) > budget:
                    return chosen, records
                used += len(record)
                chosen.append(i)
                records.append(record)

    def task_memory(self, t: int) -> TaskMemory | None:
        """Task t's exemplars (raw images or codec records), counted and charged like GEM's memory."""
        if t not in self.ex_x:
            return None
        if self.coded:
            codec = self.codec
            return TaskMemory(task=t, classes=self.ex_classes[t], image_shape=tuple(self.ex_x[t].shape[1:]),
                              encoding=codec.name, mu=self.mu(),
                              budget=self.memory_budget(tuple(self.ex_x[t].shape[1:])), records=self.ex_rec[t],
                              labels=self.ex_y[t].numpy(), indices=self.ex_i[t].numpy(), codec_params=codec.values)
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
                "ex_classes": {str(k): v for k, v in self.ex_classes.items()},
                "ex_rec": {str(k): dict(zip(("data", "offsets"), map(torch.from_numpy, concat_records(v))))
                           for k, v in self.ex_rec.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.ex_x = {int(k): v for k, v in state["ex_x"].items()}
        self.ex_y = {int(k): v for k, v in state["ex_y"].items()}
        self.ex_i = {int(k): v for k, v in state["ex_i"].items()}
        self.ex_classes = {int(k): list(v) for k, v in state["ex_classes"].items()}
        self.ex_rec = {int(k): split_records(v["data"].numpy(), v["offsets"].numpy(), f"icarl exemplars of task {k}")
                       for k, v in state.get("ex_rec", {}).items()}
