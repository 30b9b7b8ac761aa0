"""EEC (samc.methods.eec), its latent codec and class summaries: training the autoencoder makes the
decoded pseudo-images closer to the images, the memory (codes, summaries and the autoencoder) never
exceeds the byte budget, a summarised class yields samples of the stored mean and covariance, and
a run resumes bit for bit."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from samc.config import ConfigError
from samc.memory import MemoryFormatError, budget_bytes, get_codec
from samc.memory.summaries import fit_summary, parse_summary, summary_nbytes
from samc.methods import METHODS
from samc.models import LatentAE, ResNet18
from samc.timing import PhaseTimer
from samc.train import run_stream
from tests.helpers import ROOT, tiny_config
from tests.test_memory import smooth_image


def _eec(*overrides):
    cfg = tiny_config("train.method=eec", *overrides)
    torch.manual_seed(0)
    return METHODS["eec"](ResNet18(cfg.dataset.n_tasks, cfg.dataset.classes_per_task), cfg, torch.device("cpu"),
                          PhaseTimer())


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([smooth_image(rng) for _ in range(n)])).float().div_(255.0)


def _round_trip_mse(m, x):
    records = m.codec.encode_images(x)
    back = m.codec.decode_codes(m.codec.codes(records, m.shape), m.shape)
    return float(((back - x) ** 2).mean())


def test_training_the_autoencoder_lowers_the_error_of_the_decoded_pseudo_images():
    m = _eec()
    held_out = _images(64, seed=1)
    before = _round_trip_mse(m, held_out)
    train = _images(400, seed=2)
    y = torch.randint(2, (len(train),), generator=torch.Generator().manual_seed(0))
    for i in range(0, len(train), 10):
        m.ae_step(train[i : i + 10], y[i : i + 10], torch.zeros(10, dtype=torch.int64))
    after = _round_trip_mse(m, held_out)
    assert after < 0.5 * before, (before, after)
    assert len(m.codec.encode_images(held_out[:1])[0]) == 5 + 4 * 8 * 8     # 8-bit codes + 5 B header


def test_memory_never_exceeds_the_budget_and_old_classes_are_summarised(tmp_path):
    cfg = tiny_config("dataset.n_tasks=3", "dataset.shapes_train_per_class=60", "train.method=eec",
                      "memory.images_per_task=8")
    run_stream(cfg, tmp_path / "run", progress=False)
    total = budget_bytes(8, (3, 32, 32)) * 3                  # the 3 tasks' 8-image budgets
    for t in (1, 2, 3):
        row = json.loads((tmp_path / "run" / f"task_{t}" / "metrics.json").read_text())
        stats = row["method_stats"]
        assert row["memory_model_bytes"] == stats["autoencoder_bytes"] == 2 * sum(
            p.numel() for p in LatentAE(3, 4).parameters())
        assert row["memory_held"]["nbytes"] == stats["memory_bytes"] <= stats["budget"]
        assert row["memory_held"]["nbytes"] + row["memory_model_bytes"] <= total
    # task 1: its 120 images as codes; task 2: task 1 summarised; task 3: codes dropped to fit
    assert stats["summaries"] == 4 and stats["codes"] < 120
    assert row["memory_held"]["nbytes"] > total - row["memory_model_bytes"] - 261   # the budget is used
    first = json.loads((tmp_path / "run" / "task_1" / "metrics.json").read_text())["method_stats"]
    assert first == {**first, "codes": 120, "summaries": 0}


def test_a_summarised_class_yields_samples_of_its_stored_mean_and_covariance():
    gen = torch.Generator().manual_seed(3)
    d = 16
    mix = torch.randn(d, d, generator=gen) * torch.linspace(2.0, 0.1, d)
    codes = torch.randn(400, d, generator=gen) @ mix.T + torch.linspace(-1, 1, d)
    s = fit_summary(codes, rank=4)
    record = s.to_bytes()
    assert len(record) == summary_nbytes(d, 4) and parse_summary(record).count == 400
    torch.testing.assert_close(s.mean, codes.mean(0), atol=2e-3, rtol=1e-3)     # float16 of the mean
    sample_cov = torch.cov(codes.T.double()).float()
    assert abs(float(s.covariance().trace() / sample_cov.trace()) - 1) < 0.01   # PPCA keeps the total variance
    top = torch.linalg.eigvalsh(sample_cov).flip(0)[:4]
    torch.testing.assert_close(torch.linalg.eigvalsh(s.covariance()).flip(0)[:4], top, rtol=0.02, atol=0.01)

    draws = s.sample(40_000, torch.Generator().manual_seed(4))
    torch.testing.assert_close(draws.mean(0), s.mean, atol=0.05, rtol=0)
    cov = torch.cov(draws.T.double()).float()
    assert float((cov - s.covariance()).norm() / s.covariance().norm()) < 0.03


def test_a_damaged_summary_is_refused():
    s = fit_summary(torch.randn(30, 8, generator=torch.Generator().manual_seed(0)), rank=2).to_bytes()
    for bad in (s[:-2], s + b"\0", b"\0" + s[1:]):
        with pytest.raises(MemoryFormatError):
            parse_summary(bad)


def test_latent_records_need_their_autoencoder_and_only_eec_trains_one():
    with pytest.raises(MemoryFormatError, match="autoencoder that wrote it"):
        get_codec("latent").decode(bytes(5 + 4 * 64), (3, 32, 32))
    with pytest.raises(ConfigError, match="eec"):
        tiny_config("train.method=gem", "memory.codec=latent")
    with pytest.raises(ConfigError, match="latent codes only"):
        tiny_config("train.method=eec", "memory.codec=raw")
    m = _eec("memory.images_per_task=2", "dataset.n_tasks=1")
    with pytest.raises(ValueError, match="baselines.eec_latent"):   # 6 KiB of budget, 28 KiB of autoencoder
        m.budget()


def test_eec_resumes_bit_for_bit_and_its_memory_is_shown_decoded(tmp_path):
    cfg = tiny_config("dataset.n_tasks=3", "dataset.shapes_train_per_class=30", "train.method=eec",
                      "memory.images_per_task=8")
    whole = run_stream(cfg, tmp_path / "whole", progress=False)
    run_stream(cfg, tmp_path / "split", progress=False, stop_after=1)
    resumed = run_stream(cfg, tmp_path / "split", progress=False)
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    out = subprocess.run([sys.executable, "-m", "samc.cli", "memory", "show", str(tmp_path / "whole" / "task_1"),
                          "--png", str(tmp_path / "m.png")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "encoding: latent" in out.stdout and (tmp_path / "m.png").stat().st_size > 1000


def test_eec_runs_on_mini_imagenet_sized_images(tmp_path):
    """84x84 (mini-ImageNet's size): codes of 4 x 21 x 21 values, the memory within its budget."""
    cfg = tiny_config("dataset.n_tasks=2", "dataset.shapes_train_per_class=20", "dataset.shapes_test_per_class=10",
                      "dataset.image_size=84", "train.method=eec")
    run_stream(cfg, tmp_path / "run", progress=False)
    row = json.loads((tmp_path / "run" / "task_2" / "metrics.json").read_text())
    assert row["memory"]["bytes_per_image"] == 5 + 4 * 21 * 21
    assert row["memory_held"]["nbytes"] + row["memory_model_bytes"] <= 2 * budget_bytes(10, (3, 84, 84))
