"""The device a run uses and what it records about it: CUDA or CPU (``train.device``),
deterministic kernels (``train.deterministic``), the CPU model behind a run's timings."""
from __future__ import annotations

import functools
import logging
import os
import platform
from pathlib import Path

import torch

log = logging.getLogger("samc.train")


def use_deterministic(on: bool) -> None:
    """``train.deterministic``: deterministic kernels (cuDNN, cuBLAS workspace), an error for an
    op that has none, no cuDNN autotuning: reruns on one GPU give identical metrics."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = on


def resolve_device(requested: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU (logged); ``cuda`` without a GPU is an error."""
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device = 'cuda' but no CUDA device is available; "
                               "use train.device = 'auto' or 'cpu'")
        return torch.device("cuda")
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.info("train.device = auto: no CUDA device found, running on the CPU")
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    """What a run's timings were measured on (recorded in every task's metrics)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {cpu_model()}, {torch.get_num_threads()} threads"


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (its float kernels, AMX or not, change a run's numerics), else its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{platform.machine()} {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return platform.processor() or platform.machine()
