"""A learned codec behind another replay method (samc.methods.learned_codec): ER with
``memory.codec = latent`` trains the autoencoder, charges it, re-encodes its buffer at each task
end (so the records decode to the images replay uses), and resumes bit for bit."""
from __future__ import annotations

import json

import torch

from samc.memory import budget_bytes
from samc.train import run_stream
from tests.helpers import tiny_config


def test_er_with_latent_codes_charges_the_autoencoder_and_resumes(tmp_path):
    cfg = tiny_config("dataset.n_tasks=3", "dataset.shapes_train_per_class=30", "train.method=er",
                      "memory.codec=latent", "memory.images_per_task=12")
    whole = run_stream(cfg, tmp_path / "whole", progress=False)
    run_stream(cfg, tmp_path / "split", progress=False, stop_after=1)
    resumed = run_stream(cfg, tmp_path / "split", progress=False)
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    row = json.loads((tmp_path / "whole" / "task_3" / "metrics.json").read_text())
    assert row["memory_model_bytes"] == 28718
    held = row["memory_held"]
    assert held["nbytes"] + row["memory_model_bytes"] <= 3 * budget_bytes(12, (3, 32, 32))
    assert held["n_images"] == held["nbytes"] // 261 and held["n_images"] > 3 * 12   # more than raw


def test_er_saves_its_trained_autoencoder_at_float16_with_its_codes(tmp_path):
    from samc.methods import METHODS
    from samc.models import ResNet18
    from samc.timing import PhaseTimer

    cfg = tiny_config("dataset.n_tasks=2", "dataset.shapes_train_per_class=30", "train.method=er",
                      "memory.codec=latent", "memory.images_per_task=12")
    run_stream(cfg, tmp_path / "run", progress=False, stop_after=1)
    state = torch.load(tmp_path / "run" / "task_1" / "state.pt", weights_only=True)["method"]
    torch.manual_seed(0)
    er = METHODS["er"](ResNet18(2, cfg.dataset.classes_per_task), cfg, torch.device("cpu"), PhaseTimer())
    before = er.codec_model.ae.state_dict()["encoder.0.weight"].clone()
    er.load_state_dict(state)
    weights = er.codec_model.ae.state_dict()["encoder.0.weight"]
    assert not torch.equal(before, weights)                       # the trained autoencoder came back
    assert torch.equal(weights, weights.half().float())           # stored at float16
    assert len(er.reservoir) > 24                                  # 261 B codes: more than 12 raw images a task
    assert all(len(r) == 261 for r, *_ in er.reservoir.items.values())
