"""Numeric precision of a run (``train.precision``): fp32, or bf16 autocast with float32 master weights.

Under bf16 every forward (current batch, memory gradients, Grad-CAM, distillation teachers, the
autoencoder, evaluation) runs its convolutions and matrix products in bfloat16 through
``torch.autocast``; parameters, their gradients, the optimiser, BatchNorm's running statistics and
GEM's QP stay float32 (float64 for the K×K problem). The trainer enters :meth:`Precision.autocast`
around each method phase, so a method needs no code of its own for it.

``auto`` picks bf16 only where the hardware runs it fast: a CPU with AMX or AVX-512-BF16, a CUDA
device with bf16. Elsewhere bf16 is emulated and slow (``python benchmarks/bench_speed.py`` on a 2-core
AMD EPYC without either: a batch-10 forward/backward of the reduced ResNet-18 takes 808 ms in bf16
vs 89 ms in fp32).

``train.channels_last`` (auto | true | false) is the tensors' memory format. NHWC is what oneDNN's
and cuDNN's bf16 convolutions are fastest with, and on the CPU it speeds up fp32 as well: on the
same EPYC a plain batch-10 step takes 0.75-0.86x, a GEM step 0.84-0.94x the contiguous layout's time
(``benchmarks/bench_speed.py``, interleaved). ``auto`` = channels_last in bf16 and on the CPU,
contiguous for fp32 on CUDA. ``false`` reproduces runs made before the option existed bit for bit.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "bf16")
LAYOUTS = ("auto", True, False)


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 convolutions natively (CPU: AMX or AVX-512-BF16; CUDA: bf16)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return False


@dataclass(frozen=True)
class Precision:
    """The resolved precision of a run on one device."""

    name: str                   # fp32 | bf16
    device_type: str            # cpu | cuda
    channels_last: bool = False # NHWC memory format for the networks (``train.channels_last``)

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for the block (a no-op context in fp32)."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """The module in this precision's memory format (parameters stay float32)."""
        return module.to(memory_format=torch.channels_last) if self.channels_last else module


def resolve_precision(requested: str, device: torch.device, channels_last: bool | str = False) -> Precision:
    """``train.precision`` and ``train.channels_last`` → what runs on ``device`` (the trainer logs it)."""
    if requested not in PRECISIONS:
        raise ValueError(f"train.precision = {requested!r}: allowed values are {', '.join(PRECISIONS)}")
    if not any(channels_last is v for v in LAYOUTS) and channels_last != "auto":
        raise ValueError(f"train.channels_last = {channels_last!r}: allowed values are auto, true, false")
    if requested == "auto":
        requested = "bf16" if fast_bf16(device) else "fp32"
    elif requested == "bf16" and not fast_bf16(device):
        log.warning("train.precision = bf16 on a %s without native bf16: emulated, much slower than fp32",
                    device.type)
    if channels_last == "auto":
        channels_last = requested == "bf16" or device.type == "cpu"
    return Precision(requested, device.type, bool(channels_last))
