"""er: Experience Replay with a reservoir-sampled buffer (Chaudhry et al. 2019, "tiny episodic
memories"). Each step trains on the current batch concatenated with an equally large random
sample of the buffer (each replayed sample through its own task's head); the buffer, of
``images_per_task × n_tasks`` images, is a uniform sample of the whole stream (Vitter's
Algorithm R).

With ``memory.codec = latent`` (EEC's codes) the method also trains the codec's autoencoder and
re-encodes the buffer with it at each task end (samc.methods.learned_codec); the autoencoder's
float16 parameters are charged against the buffer's bytes.

With ``memory.codec`` other than ``raw`` the buffer holds codec records within the same bytes,
``images_per_task × n_tasks`` raw images (samc.memory.reservoir.ByteReservoir: the records of
smallest random keys that fit, a uniform sample of the stream); each record is decoded once when
it enters, what its codec left missing filled by the rule-based R of Eq. 4.6 (``samc.rule``), and a
saliency codec gets each image's Grad-CAM mask (Eq. 4.4, the ``samc`` section's μ), computed with
the model after the step and only for the samples the reservoir admits."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from samc.memory import TaskMemory, dense_task_memory
from samc.memory.reservoir import ByteReservoir
from samc.methods.base import Batch, Method, TaskContext
from samc.methods.learned_codec import CodecModel, round_to_stored


class ER(Method):
    name = "er"
    default_codec = "raw"
    trains_codec = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = self.cfg.memory.images_per_task * self.cfg.dataset.n_tasks
        self.buf_x: torch.Tensor | None = None           # uint8 (capacity, C, H, W), CPU
        self.buf_y = torch.zeros(self.capacity, dtype=torch.int64)
        self.buf_t = torch.zeros(self.capacity, dtype=torch.int64)
        self.buf_i = torch.zeros(self.capacity, dtype=torch.int64)
        self.n_seen = 0
        self.classes: dict[int, list[int]] = {}
        self.reservoir: ByteReservoir | None = None     # memory.codec other than raw
        self.decoded: dict[int, torch.Tensor] = {}      # reservoir slot -> decoded, completed uint8 image
        self.codec_model: CodecModel | None = None      # memory.codec = latent: its autoencoder
        if self.cfg.memory.codec != "auto" and self.codec.learned:
            self.codec_model = CodecModel(self.codec, self.model.conv1.in_channels,   # EEC's learning rate
                                          self.cfg.baselines.eec_ae_lr, self.device)

    def model_nbytes(self) -> int:
        return self.codec.model_nbytes() if self.codec_model is not None else 0

    def __len__(self) -> int:
        if self.coded:
            return 0 if self.reservoir is None else len(self.reservoir)
        return min(self.n_seen, self.capacity)

    def before_task(self, ctx: TaskContext) -> None:
        shape = tuple(ctx.task.x_train.shape[1:])
        self.shape = shape
        if self.coded:
            if self.reservoir is None:
                self.reservoir = ByteReservoir(self.memory_budget(shape, self.cfg.dataset.n_tasks))
        elif self.buf_x is None:
            self.buf_x = torch.zeros((self.capacity, *shape), dtype=torch.uint8)
        self.classes[ctx.t] = list(ctx.task.classes)

    def reservoir_add(self, x: torch.Tensor, y: int, t: int, index: int) -> None:
        """Algorithm R: the i-th sample of the stream replaces a random slot with probability cap/i."""
        if self.n_seen < self.capacity:
            slot = self.n_seen
        else:
            slot = int(torch.randint(self.n_seen + 1, (1,), generator=self.generator))
        self.n_seen += 1
        if slot < self.capacity:
            self.buf_x[slot], self.buf_y[slot], self.buf_t[slot], self.buf_i[slot] = x, y, t, index

    def decode_record(self, record: bytes) -> torch.Tensor:
        """A record as the uint8 image replay uses (Eq. 4.6's R for what the codec left missing)."""
        return self.restore_record(record, self.shape)

    def coded_add(self, batch: Batch, t: int) -> None:
        """Offer each sample of the batch to the byte reservoir; encode only those it admits."""
        keys = torch.rand(len(batch), generator=self.generator, dtype=torch.float64).tolist()
        admit = [i for i, k in enumerate(keys) if self.reservoir.admits(k)]
        if not admit:
            self.reservoir.skip(len(batch))
            return
        masks = (self.masks(batch.x[admit], batch.y[admit], t)
                 if self.codec.uses_saliency else [None] * len(admit))
        mask_of = dict(zip(admit, masks))
        for i, key in enumerate(keys):
            if i not in mask_of or not self.reservoir.admits(key):   # refused before encoding
                self.reservoir.skip()
                continue
            with self.timer("encode"):
                record = self.codec.encode(batch.raw[i], mask_of[i])
            slot, gone = self.reservoir.add(record, int(batch.y[i]), t, int(batch.index[i]), key)
            for s in gone:
                self.decoded.pop(s, None)
            if slot in self.reservoir.items:
                self.decoded[slot] = self.decode_record(record)

    def with_replay(self, batch: Batch, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, task ids): the batch plus an equally large uniform sample of the buffer."""
        x, y, tasks = batch.x, batch.y, torch.full_like(batch.y, t)
        n = len(self)
        if n and self.coded:
            slots = self.reservoir.slots()
            pick = torch.randperm(n, generator=self.generator)[: len(batch)].tolist()
            items = [self.reservoir.items[slots[i]] for i in pick]
            x = torch.cat([x, torch.stack([self.decoded[slots[i]] for i in pick]).to(self.device).float().div_(255.0)])
            y = torch.cat([y, torch.tensor([it[1] for it in items], device=self.device)])
            tasks = torch.cat([tasks, torch.tensor([it[2] for it in items], device=self.device)])
        elif n:
            pick = torch.randperm(n, generator=self.generator)[: len(batch)]
            x = torch.cat([x, self.buf_x[pick].to(self.device).float().div_(255.0)])
            y = torch.cat([y, self.buf_y[pick].to(self.device)])
            tasks = torch.cat([tasks, self.buf_t[pick].to(self.device)])
        return x, y, tasks

    def replay_step(self, batch: Batch, t: int) -> float:
        """One SGD step on the batch with replay (each sample through its own task's head)."""
        x, y, tasks = self.with_replay(batch, t)
        self.model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(x, tasks), y)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def remember(self, batch: Batch, t: int) -> None:
        if self.codec_model is not None:
            with self.timer("autoencoder"):
                self.codec_model.step(self.with_replay(batch, t)[0])
        if self.coded:
            self.coded_add(batch, t)
            return
        with self.timer("memory_write"):
            raw = torch.from_numpy(batch.raw)
            for i in range(len(batch)):
                self.reservoir_add(raw[i], int(batch.y[i]), t, int(batch.index[i]))

    def observe(self, batch: Batch, t: int) -> float:
        with self.timer("train_step"):
            loss = self.replay_step(batch, t)
        self.remember(batch, t)
        return loss

    @torch.no_grad()
    def after_task(self, ctx: TaskContext) -> None:
        """With a learned codec: the autoencoder rounded to its stored float16, every record
        re-encoded with it from the image replay used (records are of the saved autoencoder)."""
        if self.codec_model is None or self.reservoir is None:
            return
        with self.timer("encode"):
            round_to_stored(self.codec_model.ae)
            slots = self.reservoir.slots()
            if not slots:
                return
            images = torch.stack([self.decoded[s] for s in slots]).to(self.device).float().div_(255.0)
            records = self.codec.encode_images(images)
            for s, record in zip(slots, records):
                self.reservoir.items[s] = (record, *self.reservoir.items[s][1:])
                self.decoded[s] = self.decode_record(record)

    def task_memory(self, t: int) -> TaskMemory | None:
        """The buffer's current samples of task t (a snapshot for inspection)."""
        if self.coded:
            if self.reservoir is None:
                return None
            items = [self.reservoir.items[s] for s in self.reservoir.slots() if self.reservoir.items[s][2] == t]
            codec = self.codec
            return TaskMemory(
                task=t, classes=self.classes.get(t, []), image_shape=self.shape, encoding=codec.name,
                mu=self.mu(), budget=self.reservoir.budget,
                records=[it[0] for it in items], labels=np.array([it[1] for it in items], dtype=np.int64),
                indices=np.array([it[3] for it in items], dtype=np.int64), codec_params=codec.values)
        if self.buf_x is None:
            return None
        sel = (self.buf_t[: len(self)] == t).nonzero(as_tuple=True)[0]
        return dense_task_memory(t, self.classes.get(t, []), self.buf_x[sel].numpy(), self.buf_y[sel].numpy(),
                                 self.buf_i[sel].numpy(), self.capacity)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(buf_x=self.buf_x, buf_y=self.buf_y, buf_t=self.buf_t, buf_i=self.buf_i,
                     n_seen=self.n_seen, classes={str(k): v for k, v in self.classes.items()})
        if self.coded and self.reservoir is not None:
            state["reservoir"] = {k: torch.from_numpy(v) for k, v in self.reservoir.to_arrays().items()}
            state["shape"] = list(self.shape)
            state["mask_generator"] = self.mask_generator.get_state()
        if self.codec_model is not None:
            state.update(self.codec_model.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.buf_x, self.buf_y, self.buf_t, self.buf_i = (
            state["buf_x"], state["buf_y"], state["buf_t"], state["buf_i"])
        self.n_seen = int(state["n_seen"])
        self.classes = {int(k): list(v) for k, v in state["classes"].items()}
        if self.codec_model is not None:
            self.codec_model.load_state_dict(state)
        if "reservoir" in state:
            self.shape = tuple(state["shape"])
            self.reservoir = ByteReservoir.from_arrays({k: v.numpy() for k, v in state["reservoir"].items()})
            self.decoded = {s: self.decode_record(self.reservoir.items[s][0]) for s in self.reservoir.slots()}
            self.mask_generator.set_state(state["mask_generator"])
