"""er: Experience Replay with a reservoir-sampled buffer (Chaudhry et al. 2019, "tiny episodic
memories"). Each step trains on the current batch concatenated with an equally large random
sample of the buffer (each replayed sample through its own task's head); the buffer, of
``images_per_task × n_tasks`` images, is a uniform sample of the whole stream (Vitter's
Algorithm R)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from samc.memory import TaskMemory, dense_task_memory
from samc.methods.base import Batch, Method, TaskContext


class ER(Method):
    name = "er"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = self.cfg.memory.images_per_task * self.cfg.dataset.n_tasks
        self.buf_x: torch.Tensor | None = None           # uint8 (capacity, C, H, W), CPU
        self.buf_y = torch.zeros(self.capacity, dtype=torch.int64)
        self.buf_t = torch.zeros(self.capacity, dtype=torch.int64)
        self.buf_i = torch.zeros(self.capacity, dtype=torch.int64)
        self.n_seen = 0
        self.classes: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return min(self.n_seen, self.capacity)

    def before_task(self, ctx: TaskContext) -> None:
        if self.buf_x is None:
            self.buf_x = torch.zeros((self.capacity, *ctx.task.x_train.shape[1:]), dtype=torch.uint8)
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

    def with_replay(self, batch: Batch, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, task ids): the batch plus an equally large uniform sample of the buffer."""
        x, y, tasks = batch.x, batch.y, torch.full_like(batch.y, t)
        n = len(self)
        if n:
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
        with self.timer("memory_write"):
            raw = torch.from_numpy(batch.raw)
            for i in range(len(batch)):
                self.reservoir_add(raw[i], int(batch.y[i]), t, int(batch.index[i]))

    def observe(self, batch: Batch, t: int) -> float:
        with self.timer("train_step"):
            loss = self.replay_step(batch, t)
        self.remember(batch, t)
        return loss

    def task_memory(self, t: int) -> TaskMemory | None:
        """The buffer's current samples of task t (a snapshot for inspection)."""
        if self.buf_x is None:
            return None
        sel = (self.buf_t[: len(self)] == t).nonzero(as_tuple=True)[0]
        return dense_task_memory(t, self.classes.get(t, []), self.buf_x[sel].numpy(), self.buf_y[sel].numpy(),
                                 self.buf_i[sel].numpy(), self.capacity)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(buf_x=self.buf_x, buf_y=self.buf_y, buf_t=self.buf_t, buf_i=self.buf_i,
                     n_seen=self.n_seen, classes={str(k): v for k, v in self.classes.items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.buf_x, self.buf_y, self.buf_t, self.buf_i = (
            state["buf_x"], state["buf_y"], state["buf_t"], state["buf_i"])
        self.n_seen = int(state["n_seen"])
        self.classes = {int(k): list(v) for k, v in state["classes"].items()}
