"""Shared test helpers: small configurations derived from the project's params.yaml."""
from __future__ import annotations

from pathlib import Path

from samc import config

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(*overrides: str) -> config.Config:
    """params.yaml with a small shapes stream (fast on 2 CPU cores) at the paper's protocol (32x32,
    classes in order, lr 0.1: what the tests' thresholds were set on), plus ``overrides``."""
    base = (
        "dataset.n_tasks=3", "dataset.shapes_train_per_class=60", "dataset.shapes_test_per_class=30",
        "dataset.image_size=32", "dataset.class_order=sequential", "dataset.split_seed=0", "train.lr=0.1",
        "train.device=cpu", "samc.ae_steps=20", "samc.ae_pairs=64", "samc.ae_patience=10",
    )
    return config.load(ROOT / "params.yaml", [*base, *overrides])
