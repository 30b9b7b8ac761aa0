"""samc: Saliency-Augmented Memory Completion (Bai et al.), Algorithm 1 (App. C).

GEM's constraint (samc.methods.gem) with a saliency-augmented episodic memory (§4.1) and memory
completion (§4.2):
  * line 5  — at the start of task t every past memory is completed once,
              M̃_k = A_ξ(R(COO⁻¹(M_k))) (Eq. 4.6; ``restore``), with the variant of
              ``samc.completion`` (zero | rule | ae | rule+ae, Table 2);
  * line 8  — θ is updated under the constraints ⟨g, g̃_k⟩ ≥ 0 (Eq. 4.7–4.9; inherited);
  * line 10 — after the update, x' = 1{Grad-CAM(x, f_θ, y) > μ} (Eq. 4.4; ``select``), computed
              only for the samples that can still end up in the FIFO memory;
  * line 12 — x' is stored sparsely, charged by its real encoded bytes (samc.memory);
  * line 15 — after the task, ξ takes a few early-stopped steps on (masked, ground-truth) pairs
              of the task's training set (Eq. 4.10; ``after_task``).

Where the authors' public code (github.com/BaiTheBest/SAMC, model/samc.py) departs from this, a
parameter reproduces it (default: the paper; issue 16):
  * ``samc.completion = rule``      — Telea inpainting only, no autoencoder;
  * ``samc.complete_at = storage``  — each memory completed once, when stored (here: at the end of
                                      its task, by A_ξ as tuned until then), the dense completion kept;
  * ``samc.saliency_target = predicted`` and ``samc.gradcam_mode = train`` — Grad-CAM on the arg-max
                                      class with BatchNorm in train mode (batch statistics, running
                                      statistics updated a second time), on every batch;
  * ``samc.budget_charge = values`` — the budget charged C values per kept pixel, no index cost.
Their admission of whole mini-batches (the task's first batch always admitted, the oldest images
evicted until a batch fits) leaves the same memory as this per-image FIFO whenever one batch fits
the budget: both keep the longest suffix of the stream that fits (tests/test_samc_variants.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from samc.inpaint import complete, finetune_ae
from samc.memory import TaskMemory
from samc.methods.base import TaskContext
from samc.methods.gem import GEM
from samc.models import InpaintAE


class SAMC(GEM):
    name = "samc"
    default_codec = "sparse"
    saliency_codec_only = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        channels = self.model.conv1.in_channels
        self.ae = InpaintAE(channels).to(self.device)
        self.ae_generator = torch.Generator().manual_seed(self.cfg.train.seed + 104729)
        self.ae_history: list[dict[str, float]] = []
        self.completed: dict[int, torch.Tensor] = {}       # samc.complete_at = storage: M̃_k, kept dense

    def model_nbytes(self) -> int:
        """A_ξ's parameters and buffers at their dtype when the completion uses it (Eq. 4.6)."""
        if self.cfg.samc.completion not in ("ae", "rule+ae"):
            return 0
        return sum(v.numel() * v.element_size() for v in self.ae.state_dict().values())

    def min_record_nbytes(self, shape: tuple[int, int, int]) -> int:
        if self.cfg.samc.budget_charge == "values":
            min_kept = 1 if self.cfg.samc.mu < 1.0 else 0
            return max(1, shape[0] * min_kept)
        return super().min_record_nbytes(shape)

    def record_charge(self, record: bytes) -> int | None:
        """``samc.budget_charge = values``: C values per kept pixel (the authors' count), else bytes."""
        if self.cfg.samc.budget_charge != "values":
            return None
        _, known = self.codec.decode(record, self.fifo_shape)
        return self.fifo_shape[0] * int(np.count_nonzero(known))

    def before_task(self, ctx: TaskContext) -> None:
        self.fifo_shape = tuple(ctx.task.x_train.shape[1:])
        super().before_task(ctx)

    def restore(self, memory: TaskMemory) -> torch.Tensor:
        """M̃_k = A_ξ(R(COO⁻¹(M_k))) (Eq. 4.6) with ``samc.completion``; a codec that estimates the
        pixels it does not keep exactly (``fills``) replaces R, and A_ξ refines its estimate."""
        images, masks = memory.decode_all()
        with self.timer("inpaint"):
            return complete(images, masks, self.cfg.samc.completion, rule=self.cfg.samc.rule,
                            ae=self.ae, device=self.device, prefilled=memory.codec.fills)

    def memory_inputs(self, k: int) -> torch.Tensor:
        if self.cfg.samc.complete_at == "storage":
            return self.completed[k]
        return super().memory_inputs(k)

    def after_task(self, ctx: TaskContext) -> None:
        super().after_task(ctx)
        sc = self.cfg.samc
        if sc.complete_at == "storage" and len(self.memories[ctx.t]):
            with self.timer("completion"):          # once, by A_ξ as it is when the memory is stored
                self.completed[ctx.t] = self.restore(self.memories[ctx.t]).cpu()
        if sc.completion not in ("ae", "rule+ae") or sc.ae_steps == 0:
            return
        with self.timer("autoencoder"):
            x_all = ctx.task.x_train
            n = min(sc.ae_pairs, len(x_all))
            pick = torch.randperm(len(x_all), generator=self.ae_generator)[:n].sort().values.numpy()
            images = x_all[pick]
            labels = torch.as_tensor(ctx.task.y_train[pick], device=self.device)
            masks = np.concatenate([
                self.masks(torch.from_numpy(images[i:i + 100]).to(self.device).float().div_(255.0),
                           labels[i:i + 100], ctx.t, train_mode=False)   # the pairs' maps: eval mode always
                for i in range(0, n, 100)
            ])
            codec = self.codec
            prefilled = (np.stack([codec.decode(codec.encode(x, m), x.shape)[0] for x, m in zip(images, masks)])
                         if codec.fills else None)      # A_ξ's input as the codec decodes it
            stats = finetune_ae(
                self.ae, images, masks, rule=sc.rule, input_mode=sc.completion, steps=sc.ae_steps,
                lr=sc.ae_lr, batch_size=sc.ae_batch_size, patience=sc.ae_patience,
                generator=self.ae_generator, device=self.device, prefilled=prefilled,
            )
        self.ae_history.append({"task": ctx.t, **stats})

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["ae"] = self.ae.state_dict()
        state["ae_generator"] = self.ae_generator.get_state()
        state["ae_history"] = self.ae_history
        state["completed"] = {str(k): v for k, v in self.completed.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.ae.load_state_dict(state["ae"])
        self.ae_generator.set_state(state["ae_generator"])
        self.ae_history = list(state["ae_history"])
        self.completed = {int(k): v for k, v in state.get("completed", {}).items()}
