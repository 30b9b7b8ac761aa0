"""Wall-time accounting by phase (train step, Grad-CAM, encoding, inpainting, autoencoder, QP, ...)."""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseTimer:
    """Accumulates seconds per named phase; ``with timer("qp"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start
            self.counts[phase] += 1

    def reset(self) -> None:
        self.seconds.clear()
        self.counts.clear()

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in sorted(self.seconds.items())}
