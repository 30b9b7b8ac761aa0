"""Continual-learning metrics on the accuracy matrix R (R[i, j]: test accuracy on task j after
training task i), as in GEM (Lopez-Paz & Ranzato 2017, §5)."""
from __future__ import annotations

import numpy as np


def acc(R: np.ndarray) -> float:
    """ACC = (1/T) Σ_j R[T, j]: mean accuracy over all tasks after the last one."""
    R = np.asarray(R, dtype=float)
    return float(R[-1].mean())


def bwt(R: np.ndarray, convention: str = "paper") -> float:
    """BWT = 1/(T−1) Σ_{i<T} (R[T, i] − R[i, i]) (``"paper"``), or the same sum divided by T as
    GEM's public code computes it (``"gem_code"``: the mean over all T of R[T,i] − R[i,i], whose
    last term is 0)."""
    R = np.asarray(R, dtype=float)
    T = R.shape[0]
    if T < 2:
        return 0.0
    diffs = R[-1, :T - 1] - np.diag(R)[:T - 1]
    if convention == "paper":
        return float(diffs.sum() / (T - 1))
    if convention == "gem_code":
        return float(diffs.sum() / T)
    raise ValueError(f"BWT convention {convention!r}: allowed values are 'paper', 'gem_code'")


def fwt(R: np.ndarray, baseline: np.ndarray) -> float:
    """FWT = 1/(T−1) Σ_{i≥2} (R[i−1, i] − b_i), b the accuracies of the freshly initialised model."""
    R = np.asarray(R, dtype=float)
    b = np.asarray(baseline, dtype=float)
    T = R.shape[0]
    if T < 2:
        return 0.0
    return float(np.mean([R[i - 1, i] - b[i] for i in range(1, T)]))


def summary(R: np.ndarray, baseline: np.ndarray | None = None) -> dict[str, float]:
    """ACC, BWT (both conventions) and FWT (when the baseline row is known), in percent if R is."""
    out = {"acc": acc(R), "bwt": bwt(R, "paper"), "bwt_gem_code": bwt(R, "gem_code")}
    if baseline is not None:
        out["fwt"] = fwt(R, baseline)
    return out
