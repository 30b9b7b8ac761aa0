"""eec: Encoding and regenerating images (EEC; Ayub & Wagner, ICLR 2021), multi-head, in a byte budget.

A convolutional autoencoder (samc.models.LatentAE) learns beside the classifier, with the
reconstruction loss plus a classification loss on its code (EEC's autoencoder loss, ``baselines.eec_cls_weight``):

    L_AE = ‖D(E(x)) − x‖² + λ_c · CE(h_t(E(x)), y)

The episodic memory holds codes E(x), 8 bits each (the ``latent`` codec), not images; at every
step the classifier trains on the current batch plus as many pseudo-images D(z) of earlier tasks
(each through its own task's head), and the autoencoder on the same images, which keeps it able to
regenerate the old classes. When the codes do not fit the budget, the oldest class still held as
codes is summarised (as EEC does once its memory is full): its codes are replaced by their mean and covariance
(samc.memory.summaries: probabilistic PCA at ``baselines.eec_summary_rank``), and its pseudo-images
are decoded from codes drawn from that Gaussian, as many as it had codes.

Bytes (issue 19): codes, summaries and the autoencoder's parameters (float16; the classification
heads h_t on the code are not needed to read the memory and are not charged) share one budget,
``n_tasks × memory.images_per_task`` raw images (30,720 B a task at 32x32), as ER's buffer does.

What the protocol (1 epoch, batch 10, multi-head) changes:
* EEC trains its autoencoder for many epochs on a task before encoding it; here it takes one Adam
  step per training batch, so a task's images are held as images until the task ends (a uniform
  sample of the task's stream, as many as the budget could hold as codes) and encoded then, by the
  autoencoder that has seen the whole task. Only codes, summaries and the autoencoder are carried
  to the next task, and only they are charged.
* The autoencoder changes while it learns a new task, so old codes would decode to something else:
  at each task start every class is decoded once into the pseudo-images the task replays, and at
  its end these are encoded again (codes) or summarised again (summaries) by the new autoencoder.
* EEC filters pseudo-images by the classifier's confidence and uses a class-incremental single
  head; neither is done here (every method here is multi-head, task id given).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samc.memory import TaskMemory, budget_bytes
from samc.memory.codecs.latent import STATE_KEY, Latent, quantise
from samc.memory.summaries import fit_summary, parse_summary
from samc.methods.base import Batch, Method, TaskContext
from samc.methods.learned_codec import round_to_stored
from samc.models import LatentAE


@dataclass
class ClassMemory:
    """One class's memory: its codes (with their training-set indices) or its summary."""

    task: int
    label: int                                  # task-local
    codes: list[bytes] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    summary: bytes | None = None

    @property
    def count(self) -> int:
        return parse_summary(self.summary).count if self.summary is not None else len(self.codes)

    @property
    def nbytes(self) -> int:
        return len(self.summary) if self.summary is not None else sum(map(len, self.codes))

    def records(self) -> list[bytes]:
        return [self.summary] if self.summary is not None else list(self.codes)


class EEC(Method):
    name = "eec"
    default_codec = "latent"
    trains_codec = True
    learned_codec_only = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        b, d = self.cfg.baselines, self.cfg.dataset
        channels = self.model.conv1.in_channels
        self.shape = (channels, d.image_size, d.image_size)
        self.ae = LatentAE(channels, b.eec_latent).to(self.device)
        code = int(np.prod(LatentAE.code_shape(self.shape, b.eec_latent)))
        self.code_heads = nn.ModuleList(nn.Linear(code, d.classes_per_task) for _ in range(d.n_tasks)).to(self.device)
        self.ae_opt = torch.optim.Adam([*self.ae.parameters(), *self.code_heads.parameters()], lr=b.eec_ae_lr)
        self.store: list[ClassMemory] = []              # every earlier task's classes, oldest first
        self.classes: dict[int, list[int]] = {}
        # this task: the images waiting to be encoded (Algorithm R) and the pseudo-images it replays
        self.res_x = self.res_y = self.res_i = None
        self.n_seen = 0
        self.bank_x = torch.zeros((0, *self.shape), dtype=torch.uint8)
        self.bank_y = self.bank_t = self.bank_c = torch.zeros(0, dtype=torch.int64)

    @functools.cached_property
    def codec(self) -> Latent:
        spec = self.cfg.memory.codec
        codec = Latent(latent=self.cfg.baselines.eec_latent) if spec == "auto" else super().codec
        return codec.attach(self.ae)

    def model_nbytes(self) -> int:
        return self.codec.model_nbytes()

    def budget(self) -> int:
        """The bytes codes and summaries may take: n_tasks raw-image budgets less the autoencoder."""
        total = budget_bytes(self.cfg.memory.images_per_task, self.shape) * self.cfg.dataset.n_tasks
        left = total - self.model_nbytes()
        if left < self.codec.record_nbytes(self.shape):
            raise ValueError(
                f"eec: its autoencoder's {self.model_nbytes()} bytes (baselines.eec_latent = "
                f"{self.cfg.baselines.eec_latent}) leave no room for a code in the budget of "
                f"memory.images_per_task = {self.cfg.memory.images_per_task} raw images x {self.cfg.dataset.n_tasks} tasks "
                f"({left + self.model_nbytes()} B): raise memory.images_per_task")
        return left

    def nbytes(self) -> int:
        return sum(m.nbytes for m in self.store)

    # -- pseudo-images ---------------------------------------------------------------------------
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, C, H, W), CPU, of codes (N, d)."""
        out = [self.codec.decode_codes(z[i : i + 256], self.shape) for i in range(0, len(z), 256)]
        x = torch.cat(out) if out else torch.zeros((0, *self.shape))
        return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).cpu()

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (N, d), CPU, of uint8 images (N, C, H, W)."""
        out = [self.ae.encode(x[i : i + 256].to(self.device).float().div_(255.0)).flatten(1).float().cpu()
               for i in range(0, len(x), 256)]
        return torch.cat(out) if out else torch.zeros(0, self.codec.code_size(self.shape))

    def pseudo_images(self) -> None:
        """Decode every class once (a summary: as many codes drawn from it as it summarises)."""
        xs, ys, ts, cs = [], [], [], []
        for k, m in enumerate(self.store):
            if m.summary is not None:
                s = parse_summary(m.summary)
                z = s.sample(s.count, self.generator)
            else:
                z = self.codec.codes(m.codes, self.shape)
            xs.append(self.decode(z))
            ys += [m.label] * len(z)
            ts += [m.task] * len(z)
            cs += [k] * len(z)
        self.bank_x = torch.cat(xs) if xs else torch.zeros((0, *self.shape), dtype=torch.uint8)
        self.bank_y, self.bank_t, self.bank_c = (torch.tensor(v, dtype=torch.int64) for v in (ys, ts, cs))

    # -- lifecycle -------------------------------------------------------------------------------
    def before_task(self, ctx: TaskContext) -> None:
        self.classes[ctx.t] = list(ctx.task.classes)
        capacity = self.budget() // self.codec.record_nbytes(self.shape)
        self.res_x = torch.zeros((capacity, *self.shape), dtype=torch.uint8)
        self.res_y = torch.zeros(capacity, dtype=torch.int64)
        self.res_i = torch.zeros(capacity, dtype=torch.int64)
        self.n_seen = 0
        with self.timer("decode"):
            self.pseudo_images()

    def with_replay(self, batch: Batch, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch plus as many pseudo-images of earlier tasks, drawn uniformly."""
        x, y, tasks = batch.x, batch.y, torch.full_like(batch.y, t)
        if len(self.bank_x):
            pick = torch.randint(len(self.bank_x), (len(batch),), generator=self.generator)
            x = torch.cat([x, self.bank_x[pick].to(self.device).float().div_(255.0)])
            y = torch.cat([y, self.bank_y[pick].to(self.device)])
            tasks = torch.cat([tasks, self.bank_t[pick].to(self.device)])
        return x, y, tasks

    def ae_step(self, x: torch.Tensor, y: torch.Tensor, tasks: torch.Tensor) -> None:
        """One Adam step of L_AE = ‖D(E(x)) − x‖² + λ_c CE(h_t(E(x)), y) (EEC's autoencoder loss)."""
        self.ae_opt.zero_grad(set_to_none=True)
        z = self.ae.encode(x)
        loss = F.mse_loss(self.ae.decode(z, tuple(x.shape[-2:])).float(), x)
        flat = z.flatten(1)
        for k in torch.unique(tasks).tolist():
            sel = (tasks == k).nonzero(as_tuple=True)[0]
            loss = loss + self.cfg.baselines.eec_cls_weight * F.cross_entropy(
                self.code_heads[k](flat[sel]).float(), y[sel], reduction="sum") / len(y)
        loss.backward()
        self.ae_opt.step()

    def remember(self, batch: Batch) -> None:
        """Algorithm R over the task's stream: a uniform sample of at most ``capacity`` images."""
        raw = torch.from_numpy(batch.raw)
        for i in range(len(batch)):
            slot = self.n_seen if self.n_seen < len(self.res_x) else \
                int(torch.randint(self.n_seen + 1, (1,), generator=self.generator))
            self.n_seen += 1
            if slot < len(self.res_x):
                self.res_x[slot], self.res_y[slot], self.res_i[slot] = raw[i], batch.y[i], int(batch.index[i])

    def observe(self, batch: Batch, t: int) -> float:
        x, y, tasks = self.with_replay(batch, t)
        with self.timer("train_step"):
            self.model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(x, tasks), y)
            loss.backward()
            self.opt.step()
        with self.timer("autoencoder"):
            self.ae_step(x, y, tasks)
        with self.timer("memory_write"):
            self.remember(batch)
        return float(loss.detach())

    @torch.no_grad()
    def after_task(self, ctx: TaskContext) -> None:
        with self.timer("encode"):
            round_to_stored(self.ae)                 # the stored autoencoder is float16 (model_nbytes)
            rank = self.cfg.baselines.eec_summary_rank
            z_old = self.encode(self.bank_x)         # the pseudo-images, in the new autoencoder's codes
            for k, m in enumerate(self.store):
                z = z_old[self.bank_c == k]
                if m.summary is not None:
                    m.summary = fit_summary(z, rank).to_bytes()
                else:
                    m.codes = quantise(z)
            n = min(self.n_seen, len(self.res_x))
            codes = quantise(self.encode(self.res_x[:n]))
            for label in range(len(ctx.task.classes)):
                rows = (self.res_y[:n] == label).nonzero(as_tuple=True)[0].tolist()
                self.store.append(ClassMemory(ctx.t, label, [codes[r] for r in rows],
                                              [int(self.res_i[r]) for r in rows]))
            self.fit_budget(ctx.t, rank)
        self.res_x = self.res_y = self.res_i = None
        self.bank_x = torch.zeros((0, *self.shape), dtype=torch.uint8)

    def fit_budget(self, t: int, rank: int) -> None:
        """Summarise the oldest classes held as codes until the memory fits; if the new task's codes
        alone are too many, drop the newest codes of its largest class, one at a time."""
        budget = self.budget()
        for m in self.store:
            if self.nbytes() <= budget:
                return
            if m.task < t and m.summary is None and m.codes:
                m.summary = fit_summary(self.codec.codes(m.codes, self.shape), rank).to_bytes()
                m.codes, m.indices = [], []
        while self.nbytes() > budget:
            big = max((m for m in self.store if m.task == t), key=lambda m: len(m.codes))
            if not big.codes:
                raise ValueError(
                    f"eec: after task {t + 1} the class summaries alone take {self.nbytes()} B, more than the "
                    f"memory's {budget} B: lower baselines.eec_summary_rank (now {rank}) or raise "
                    f"memory.images_per_task")
            big.codes.pop()
            big.indices.pop()

    def task_memory(self, t: int) -> TaskMemory | None:
        """Task t's codes and summaries (a summary's index is −1)."""
        mine = [m for m in self.store if m.task == t]
        if not mine:
            return None
        records, labels, indices = [], [], []
        for m in mine:
            records += m.records()
            labels += [m.label] * len(m.records())
            indices += [-1] if m.summary is not None else m.indices
        return TaskMemory(task=t, classes=self.classes.get(t, []), image_shape=self.shape, encoding="latent",
                          mu=None, budget=self.budget(), records=records, labels=np.array(labels, dtype=np.int64),
                          indices=np.array(indices, dtype=np.int64), codec_params=self.codec.values)

    def task_stats(self) -> dict[str, Any]:
        return {"codes": sum(len(m.codes) for m in self.store),
                "summaries": sum(m.summary is not None for m in self.store), "memory_bytes": self.nbytes(),
                "budget": self.budget(), "autoencoder_bytes": self.model_nbytes()}

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        def u8(b: bytes) -> torch.Tensor:
            return torch.frombuffer(bytearray(b), dtype=torch.uint8) if b else torch.zeros(0, dtype=torch.uint8)

        store = [{"task": m.task, "label": m.label, "codes": u8(b"".join(m.codes)), "n": len(m.codes),
                  "indices": torch.tensor(m.indices, dtype=torch.int64),
                  "summary": None if m.summary is None else u8(m.summary)} for m in self.store]
        return {**super().state_dict(), STATE_KEY: self.ae.state_dict(), "code_heads": self.code_heads.state_dict(),
                "ae_optimizer": self.ae_opt.state_dict(), "store": store,
                "classes": {str(k): v for k, v in self.classes.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.ae.load_state_dict(state[STATE_KEY])
        self.code_heads.load_state_dict(state["code_heads"])
        self.ae_opt.load_state_dict(state["ae_optimizer"])
        size = self.codec.record_nbytes(self.shape)
        self.store = []
        for m in state["store"]:
            blob = m["codes"].numpy().tobytes()
            self.store.append(ClassMemory(
                int(m["task"]), int(m["label"]), [blob[i * size : (i + 1) * size] for i in range(int(m["n"]))],
                [int(i) for i in m["indices"]], None if m["summary"] is None else m["summary"].numpy().tobytes()))
        self.classes = {int(k): list(v) for k, v in state["classes"].items()}
