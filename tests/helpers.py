"""Shared test helpers: small configurations derived from the project's params.yaml."""
from __future__ import annotations

from pathlib import Path

from samc import config

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(*overrides: str) -> config.Config:
    """params.yaml with a small shapes stream (fast on 2 CPU cores), plus ``overrides``."""
    base = (
        "dataset.n_tasks=3", "dataset.shapes_train_per_class=60", "dataset.shapes_test_per_class=30",
        "train.device=cpu", "samc.ae_steps=20", "samc.ae_pairs=64", "samc.ae_patience=10",
    )
    return config.load(ROOT / "params.yaml", [*base, *overrides])
