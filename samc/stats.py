"""Paired comparisons over seeds: the mean difference of two variants run on the same seeds, with
its Student-t confidence interval (seed noise on Split CIFAR-10 is 2-4 ACC points, so a claim needs
pairs and an interval, not one run)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    """mean(a_i − b_i) over n pairs, its sample standard deviation and a two-sided interval."""

    n: int
    mean: float
    sd: float
    low: float
    high: float
    level: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.2f} (n = {self.n}, no interval)"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedDifference:
    """a_i − b_i for i = 1..n (same seeds, same order): mean ± t_{n−1, (1+level)/2} · sd / √n.
    With one pair the interval is undefined (NaN bounds)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("paired_difference of no pairs")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n, mean = len(d), float(d.mean())
    if n < 2:
        return PairedDifference(n, mean, math.nan, math.nan, math.nan, level)
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return PairedDifference(n, mean, sd, mean - half, mean + half, level)
