"""gem: Gradient Episodic Memory (Lopez-Paz & Ranzato 2017), the constraint of Eq. 3.2 / 4.9.

Each past task k keeps an episodic memory M_k filled first-in-first-out during task k (the last
samples of the task remain, §4.1). At every step the loss gradient g̃_k on each memory is compared
with the batch gradient g; when some ⟨g, g̃_k⟩ < 0, g is projected (samc.gem.project). As in GEM's
reference code the memory passes run in train mode, one per past task before the current batch,
so BatchNorm's running statistics see them in that order (``memory.update_bn: false`` leaves the
running statistics to the training batches alone).

The memory's codec is ``memory.codec`` (samc.memory.codecs; ``auto`` = ``raw``, GEM's whole
images). A saliency codec (``sparse``, ``salient_lowres``, ...) gets each stored image's Grad-CAM
mask of Eq. 4.4 with the ``samc`` section's μ and target; pixels a codec leaves missing are filled
by the rule-based R of Eq. 4.6 (``samc.rule``) before they enter G. SAMC (samc.methods.samc) is this
method with the ``sparse`` codec and the autoencoder A_ξ on top of R.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from samc.inpaint import complete
from samc.gem import GradBuffer, batchable, bn_stats_frozen, memory_gradients_batched, memory_gradients_loop, project, violated
from samc.memory import FifoMemory, TaskMemory
from samc.methods.base import Batch, Method, TaskContext


class GEM(Method):
    name = "gem"
    default_codec = "raw"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.memories: dict[int, TaskMemory] = {}
        self.fifo: FifoMemory | None = None
        self.mem_x: dict[int, torch.Tensor] = {}
        self.mem_y: dict[int, torch.Tensor] = {}
        self.grads = GradBuffer(self.model.parameters(), self.cfg.dataset.n_tasks + 1)
        self.window_start = 0
        self.stats: dict[str, int] = {}               # this task's step counters (before_task)

    def memory_gradients(self, model: torch.nn.Module, xs: list[torch.Tensor], ys: list[torch.Tensor],
                         tasks: list[int], grads: GradBuffer) -> None:
        """Rows of G (Eq. 4.8), by the loop or the batched pass (``memory.grad_mode``)."""
        mode = self.cfg.memory.grad_mode
        if mode == "auto":
            mode = "batched" if self.device.type == "cuda" else "loop"
        with bn_stats_frozen(model, not self.cfg.memory.update_bn):
            if mode == "batched" and batchable(model, xs):
                memory_gradients_batched(model, xs, ys, tasks, grads)
            else:
                memory_gradients_loop(model, xs, ys, tasks, grads)

    def constraint_batches(self, past: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The images behind each row of G: a past task's whole memory (GEM's exact constraint), or
        with ``memory.constraint_sample = N`` N of them drawn without replacement at this step from
        ``self.generator`` (saved in the run state, so a resumed run draws the same)."""
        n = self.cfg.memory.constraint_sample
        xs, ys = [], []
        for k in past:
            x, y = self.mem_x[k], self.mem_y[k]
            if n is not None and n < len(y):
                pick = torch.randperm(len(y), generator=self.generator)[:n].to(x.device)
                x, y = x[pick], y[pick]
            xs.append(x)
            ys.append(y)
        return xs, ys

    # -- memory: what is stored, and how it is read back ---------------------------------------------
    def min_record_nbytes(self, shape: tuple[int, int, int]) -> int:
        """The smallest record the codec can produce (bounds how many samples can fit). A normalised
        saliency map reaches 1 somewhere, so for μ < 1 a saliency codec keeps at least one pixel."""
        min_kept = 1 if self.codec.uses_saliency and self.cfg.samc.mu < 1.0 else 0
        return self.codec.min_nbytes(shape, min_kept)

    def select(self, batch: Batch, keep: slice, t: int) -> list[bytes]:
        """Encode the samples ``batch[keep]`` for the memory (a saliency codec: with their masks)."""
        codec = self.codec
        n = len(batch.raw[keep])
        masks = (self.masks(batch.x[keep], batch.y[keep], t)
                 if codec.uses_saliency else [None] * n)
        with self.timer("encode"):
            return [codec.encode(img, m) for img, m in zip(batch.raw[keep], masks)]

    def restore(self, memory: TaskMemory) -> torch.Tensor:
        """The memory's images as classifier inputs: decoded, and what the codec left missing
        filled by the rule-based R of Eq. 4.6 (nothing for whole-image codecs)."""
        images, known = memory.decode_all()
        if known.all():
            return torch.from_numpy(images).float().div_(255.0)
        with self.timer("inpaint"):
            return complete(images, known, "zero" if memory.codec.fills else "rule", rule=self.cfg.samc.rule,
                            device="cpu", prefilled=memory.codec.fills)

    def record_charge(self, record: bytes) -> int | None:
        """What a record costs against the task's budget; None = its bytes (every memory here)."""
        return None

    def memory_inputs(self, k: int) -> torch.Tensor:
        """Past task k's memory as classifier inputs at the start of a later task (Algorithm 1, line 5)."""
        return self.restore(self.memories[k])

    # -- lifecycle -----------------------------------------------------------------------------------
    def before_task(self, ctx: TaskContext) -> None:
        shape = tuple(ctx.task.x_train.shape[1:])
        budget = self.memory_budget(shape)
        self.fifo = FifoMemory(budget)
        # Only the last ⌊budget / smallest record⌋ samples of the stream can end up in a FIFO
        # memory: earlier samples need no encoding (nor, for SAMC, a saliency map).
        self.window_start = max(0, ctx.stream_length - budget // self.min_record_nbytes(shape))
        if self.codec.uses_saliency and self.cfg.samc.gradcam_mode == "train":
            self.window_start = 0       # the authors' code takes Grad-CAM (and its BatchNorm pass) of every batch
        self.mem_x, self.mem_y = {}, {}
        self.stats = {"constrained_steps": 0, "projected_steps": 0}
        with self.timer("completion"):
            for k in sorted(self.memories):
                if k < ctx.t and len(self.memories[k]):
                    self.mem_x[k] = self.memory_inputs(k).to(self.device)
                    self.mem_y[k] = torch.as_tensor(self.memories[k].labels, device=self.device)

    def observe(self, batch: Batch, t: int) -> float:
        past = sorted(self.mem_x)
        model = self.model
        if past:
            with self.timer("memory_grads"):
                xs, ys = self.constraint_batches(past)
                self.memory_gradients(model, xs, ys, past, self.grads)
        with self.timer("train_step"):
            model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(batch.x, t), batch.y)
            loss.backward()
        if past:
            with self.timer("qp"):
                g = self.grads.store(len(past))
                G = self.grads.data[: len(past)]
                self.stats["constrained_steps"] += 1
                if violated(g, G):
                    self.stats["projected_steps"] += 1
                    self.grads.load(project(g, G, self.cfg.memory.strength))
        with self.timer("train_step"):
            self.opt.step()
        self.remember(batch, t)
        return float(loss.detach())

    def remember(self, batch: Batch, t: int) -> None:
        """Algorithm 1, lines 9–12: add the batch (after the update) to task t's FIFO memory."""
        first = max(0, self.window_start - batch.position)
        if first >= len(batch):
            return
        keep = slice(first, len(batch))
        records = self.select(batch, keep, t)
        with self.timer("memory_write"):
            for rec, y, idx in zip(records, batch.y[keep].tolist(), batch.index[keep].tolist()):
                self.fifo.add(rec, int(y), int(idx), charge=self.record_charge(rec))

    def after_task(self, ctx: TaskContext) -> None:
        self.memories[ctx.t] = self.fifo.to_task_memory(
            task=ctx.t, classes=list(ctx.task.classes), image_shape=tuple(ctx.task.x_train.shape[1:]),
            encoding=self.codec.name, mu=self.mu(), codec_params=self.codec.values,
        )
        self.fifo = None
        self.mem_x, self.mem_y = {}, {}

    def task_memory(self, t: int) -> TaskMemory | None:
        return self.memories.get(t)

    def task_stats(self) -> dict[str, Any]:
        """Steps with past memories, and those where some ⟨g, g̃_k⟩ < 0 forced a projection."""
        return dict(self.stats)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["memories"] = {str(k): m.to_state() for k, m in self.memories.items()}
        state["mask_generator"] = self.mask_generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.memories = {int(k): TaskMemory.from_state(v) for k, v in state["memories"].items()}
        if "mask_generator" in state:       # states of GEM runs made before saliency codecs lack it
            self.mask_generator.set_state(state["mask_generator"])
