"""The interface every continual-learning method implements (one module per method).

A method owns the classifier's update rule and its episodic memory. The trainer (samc.train)
calls ``before_task`` once per task, ``observe`` once per mini-batch and ``after_task`` at the
end of the task; ``state_dict``/``load_state_dict`` carry everything a fresh process needs to
continue with the next task, bit for bit.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from samc.config import Config
from samc.data import Task
from samc.inpaint import complete
from samc.memory import Codec, TaskMemory, budget_bytes, get_codec
from samc.models import ResNet18
from samc.saliency import grad_cam, matched_mask
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
    #: the codec of ``memory.codec = auto`` (None: the method keeps no codec-coded memory)
    default_codec: ClassVar[str | None] = None
    #: only codecs that store saliency-selected pixels (SAMC, §4.1)
    saliency_codec_only: ClassVar[bool] = False
    #: the method can train the model a learned codec's records need (the ``latent`` codec's autoencoder)
    trains_codec: ClassVar[bool] = False
    #: the method stores through a learned codec only (EEC)
    learned_codec_only: ClassVar[bool] = False

    def __init__(self, model: ResNet18, cfg: Config, device: torch.device, timer: PhaseTimer) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device
        self.timer = timer
        self.opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr)
        self.generator = torch.Generator().manual_seed(cfg.train.seed + 7919)
        self.mask_generator = torch.Generator().manual_seed(cfg.train.seed + 7919)   # samc.mask=random

    @functools.cached_property
    def codec(self) -> Codec:
        """The memory's codec: ``memory.codec``, or the method's own for ``auto``."""
        spec = self.cfg.memory.codec
        if spec == "auto":
            if self.default_codec is None:
                raise ValueError(f"method {self.name!r} keeps no codec-coded memory")
            spec = self.default_codec
        return get_codec(spec)

    @property
    def coded(self) -> bool:
        """Whether the memory holds codec records (any codec but ``raw``) rather than raw images."""
        return self.codec.name != "raw"

    def mu(self) -> float | None:
        """μ of Eq. 4.4 when the codec stores salient pixels, else None."""
        return float(self.cfg.samc.mu) if self.codec.uses_saliency else None

    def restore_record(self, record: bytes, shape: tuple[int, ...]) -> torch.Tensor:
        """A record as the uint8 image replay uses: decoded, what the codec left missing filled by
        the rule-based R of Eq. 4.6 (``samc.rule``)."""
        image, known = self.codec.decode(record, shape)
        if known.all() or self.codec.fills:
            return torch.from_numpy(image)
        with self.timer("inpaint"):
            filled = complete(image[None], known[None], "rule", rule=self.cfg.samc.rule)
        return filled[0].mul_(255.0).round_().to(torch.uint8)

    def masks(self, x: torch.Tensor, y: torch.Tensor, t: int, train_mode: bool | None = None) -> np.ndarray:
        """Eq. 4.4 for a batch, for a saliency codec: bool (B, H, W), True where the pixel is kept
        (``samc.mask`` other than saliency: as many pixels per image, at random or the least salient).
        Grad-CAM runs in train mode where ``train_mode`` says so, by default where ``samc.gradcam_mode``
        does (the authors' code)."""
        if train_mode is None:
            train_mode = self.cfg.samc.gradcam_mode == "train"
        with self.timer("gradcam"):
            sal = grad_cam(self.model, x, t, y, target=self.cfg.samc.saliency_target, train_mode=train_mode)
            return matched_mask(sal, self.cfg.samc.mu, self.cfg.samc.mask, self.mask_generator).cpu().numpy()

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

    def model_nbytes(self) -> int:
        """Bytes of the parameters (and buffers) a memory needs to be read back, at their stored
        dtype (SAMC's autoencoder A_ξ; 0 for memories that decode on their own)."""
        return 0

    def memory_budget(self, shape: tuple[int, ...], tasks: int = 1) -> int:
        """The byte budget of ``tasks`` tasks' memory: ``memory.images_per_task`` raw images each,
        less, with ``memory.budget_counts = all`` or a learned codec (whose records are nothing
        without their model), ⌈model bytes / n_tasks⌉ per task."""
        budget = budget_bytes(self.cfg.memory.images_per_task, shape)
        if self.cfg.memory.budget_counts == "all" or self.codec.learned:
            budget -= -(-self.model_nbytes() // self.cfg.dataset.n_tasks)
            if budget <= 0:
                raise ValueError(
                    f"memory.budget_counts = all: the {self.model_nbytes()} bytes of parameters needed to read "
                    f"the memory back, amortised over {self.cfg.dataset.n_tasks} tasks, exceed the budget of "
                    f"memory.images_per_task = {self.cfg.memory.images_per_task} raw images per task")
        return budget * tasks

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
