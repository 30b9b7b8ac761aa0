"""The interface every continual-learning method implements (one module per method).

A method owns the classifier's update rule and its episodic memory. The trainer (samc.train)
calls ``before_task`` once per task, ``observe`` once per mini-batch and ``after_task`` at the
end of the task; ``state_dict``/``load_state_dict`` carry everything a fresh process needs to
continue with the next task, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from samc.config import Config
from samc.data import Task
from samc.memory import TaskMemory
from samc.models import ResNet18
from samc.timing import PhaseTimer


@dataclass
class Batch:
    """One mini-batch of the current task's stream."""

    x: torch.Tensor        # float32 (B, C, H, W) in [0, 1], on the method's device
    y: torch.Tensor        # int64 task-local labels, on the device
    raw: np.ndarray        # uint8 (B, C, H, W): the same images as stored pixels
    index: np.ndarray      # int64: position of each sample in its task's training set
    position: int          # position of the batch's first sample in the task's sample stream

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class TaskContext:
    """What a method may know about the task being learned."""

    t: int                 # 0-based task id
    task: Task
    stream_length: int     # samples the task's stream will deliver (epochs × training-set size)
    n_tasks: int


class Method:
    """Plain SGD on the current task's head and the shared trunk: the ``finetune`` baseline."""

    name: ClassVar[str] = "finetune"

    def __init__(self, model: ResNet18, cfg: Config, device: torch.device, timer: PhaseTimer) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device
        self.timer = timer
        self.opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr)
        self.generator = torch.Generator().manual_seed(cfg.train.seed + 7919)

    # -- lifecycle ---------------------------------------------------------------------------
    def before_task(self, ctx: TaskContext) -> None:
        pass

    def observe(self, batch: Batch, t: int) -> float:
        with self.timer("train_step"):
            self.model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(batch.x, t), batch.y)
            loss.backward()
            self.opt.step()
        return float(loss.detach())

    def after_task(self, ctx: TaskContext) -> None:
        pass

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Predicted local labels of task t (eval mode is set by the caller): the task's head."""
        return self.model(x, t).argmax(1)

    def task_memory(self, t: int) -> TaskMemory | None:
        """Task t's episodic memory once the task is learned (None for memory-free methods)."""
        return None

    def task_stats(self) -> dict[str, Any]:
        """Counters of the task just learned, recorded in its metrics (e.g. GEM's projected steps)."""
        return {}

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.opt.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
