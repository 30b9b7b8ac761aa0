"""Each baseline's distinctive mechanism, on its own (EWC, LwF, iCaRL, MER, ER's reservoir)."""
import json

import numpy as np
import pytest
import torch

from samc.methods import METHODS
from samc.methods.base import Batch, TaskContext
from samc.methods.ewc import ewc_penalty
from samc.methods.icarl import herding
from samc.methods.lwf import distillation
from samc.models import ResNet18
from samc.timing import PhaseTimer
from samc.train import load_tasks
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def tasks():
    return load_tasks(tiny_config("dataset.n_tasks=2", "dataset.shapes_train_per_class=20",
                                  "dataset.shapes_test_per_class=5"))


def _method(name, *overrides):
    cfg = tiny_config("dataset.n_tasks=2", f"train.method={name}", *overrides)
    torch.manual_seed(0)
    model = ResNet18(2, 2)
    return METHODS[name](model, cfg, torch.device("cpu"), PhaseTimer())


def _batch(task, idx):
    raw = task.x_train[idx]
    return Batch(x=torch.from_numpy(raw).float() / 255, y=torch.from_numpy(task.y_train[idx]),
                 raw=raw, index=np.asarray(idx), position=0)


def _run_task(m, tasks, t, steps=3):
    ctx = TaskContext(t=t, task=tasks[t], stream_length=10 * steps, n_tasks=len(tasks))
    m.before_task(ctx)
    for s in range(steps):
        m.observe(_batch(tasks[t], list(range(10 * s, 10 * s + 10))), t)
    m.after_task(ctx)


def test_ewc_penalty_is_zero_at_the_anchor_and_quadratic_away(tasks):
    m = _method("ewc")
    _run_task(m, tasks, 0)
    assert m.fisher and all((f >= 0).all() for f in m.fisher.values())
    assert sum(float(f.sum()) for f in m.fisher.values()) > 0
    params = {n: p.detach() for n, p in m.model.named_parameters()}
    assert float(ewc_penalty(params, m.anchor, m.fisher)) == 0.0
    step = {n: p.detach() + 0.01 for n, p in params.items()}
    twice = {n: p.detach() + 0.02 for n, p in params.items()}
    p1, p2 = float(ewc_penalty(step, m.anchor, m.fisher)), float(ewc_penalty(twice, m.anchor, m.fisher))
    assert p1 > 0 and p2 == pytest.approx(4 * p1, rel=1e-4)
    before = {n: f.clone() for n, f in m.fisher.items()}
    _run_task(m, tasks, 1)   # online: F <- gamma F + F_new (gamma = 1: grows)
    assert all((m.fisher[n] >= before[n] - 1e-12).all() for n in before)


def test_ewc_batch_fisher_is_the_squared_mean_gradient_as_in_gems_code(tasks):
    """``ewc_fisher: batch`` = (∇ mean CE over the samples)²; ``sample`` = mean of per-sample ∇²,
    which is never smaller (Jensen); on a trained network much larger: what made lr 0.1 unstable."""
    ctx = TaskContext(t=0, task=tasks[0], stream_length=30, n_tasks=2)
    fishers = {}
    for mode in ("sample", "batch"):
        m = _method("ewc", f"baselines.ewc_fisher={mode}", "baselines.ewc_fisher_samples=8")
        m.generator.manual_seed(3)
        fishers[mode] = m.diagonal_fisher(ctx)
    # the reference: the same 8 samples (same seeded draw), one backward of their mean loss
    m = _method("ewc")
    m.generator.manual_seed(3)
    pick = np.sort(torch.randperm(len(tasks[0].y_train), generator=m.generator)[:8].numpy())
    m.model.eval()
    x = torch.from_numpy(tasks[0].x_train[pick]).float() / 255
    torch.nn.functional.cross_entropy(m.model(x, 0), torch.from_numpy(tasks[0].y_train[pick])).backward()
    for name, p in m.model.named_parameters():
        expected = torch.zeros_like(p) if p.grad is None else p.grad ** 2   # other heads: no gradient
        assert torch.allclose(fishers["batch"][name], expected, rtol=1e-4, atol=1e-12), name
        assert (fishers["sample"][name] >= fishers["batch"][name] - 1e-9).all(), name
    total = {k: sum(float(f.sum()) for f in v.values()) for k, v in fishers.items()}
    assert total["sample"] > total["batch"] > 0


def test_lwf_distillation_and_frozen_teacher(tasks):
    logits = torch.randn(6, 2)
    assert float(distillation(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation(logits, -logits, 2.0)) > 0.1
    m = _method("lwf")
    _run_task(m, tasks, 0)
    ctx = TaskContext(t=1, task=tasks[1], stream_length=30, n_tasks=2)
    m.before_task(ctx)
    frozen = {k: v.clone() for k, v in m.old.state_dict().items()}
    m.observe(_batch(tasks[1], list(range(10))), 1)
    assert all(torch.equal(frozen[k], v) for k, v in m.old.state_dict().items())
    assert not all(torch.equal(frozen[k], v) for k, v in m.model.state_dict().items())


def test_icarl_herding_and_nearest_mean_of_exemplars(tasks):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(200, 16, generator=g)
    chosen = herding(feats, 10)
    assert len(set(chosen)) == 10
    first = int(((feats - feats.mean(0)) ** 2).sum(1).argmin())
    assert chosen[0] == first, "the first exemplar is the sample closest to the class mean"
    herd_err = float(((feats[chosen].mean(0) - feats.mean(0)) ** 2).sum())
    rand_err = np.mean([float(((feats[torch.randperm(200, generator=g)[:10]].mean(0) - feats.mean(0)) ** 2).sum())
                        for _ in range(50)])
    assert herd_err < 0.5 * rand_err
    m = _method("icarl")
    _run_task(m, tasks, 0)
    assert len(m.ex_x[0]) == 10 and sorted(m.ex_y[0].tolist()) == [0] * 5 + [1] * 5
    m.model.eval()
    means = m.class_means(0)
    assert means.shape == (2, m.model.heads[0].in_features)
    # an exemplar is classified as its own class when its feature is nearest its class mean
    x = m.ex_x[0].float() / 255
    from samc.methods.icarl import features
    expected = torch.cdist(features(m.model, x), means).argmin(1)
    assert torch.equal(m.predict(x, 0), expected)
    # the exemplars are the task's memory: counted, charged within the budget, the very images
    mem = m.task_memory(0)
    assert len(mem) == 10 and mem.nbytes <= mem.budget and m.task_memory(1) is None
    images, _ = mem.decode_all()
    np.testing.assert_array_equal(images, tasks[0].x_train[mem.indices])


def test_mer_meta_update_interpolates_between_start_and_replay_step(tasks):
    a = _method("mer", "baselines.mer_beta=1.0", "baselines.mer_gamma=1.0")
    b = _method("mer", "baselines.mer_beta=0.5", "baselines.mer_gamma=1.0")
    start = [p.detach().clone() for p in a.model.parameters()]
    for m in (a, b):
        m.before_task(TaskContext(t=0, task=tasks[0], stream_length=30, n_tasks=2))
        m.observe(_batch(tasks[0], list(range(10))), 0)
    for p0, pa, pb in zip(start, a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(pb.detach() - p0, 0.5 * (pa.detach() - p0), atol=1e-6, rtol=1e-4)
    assert any(not torch.equal(p0, pa) for p0, pa in zip(start, a.model.parameters()))
    assert len(a) == 10, "the batch went into the reservoir"


def test_er_reservoir_keeps_a_uniform_sample(tasks):
    counts = np.zeros(100)
    x = torch.zeros(3, 4, 4, dtype=torch.uint8)
    for seed in range(300):
        m = _method("er", f"train.seed={seed}", "memory.images_per_task=5")   # capacity 10
        m.buf_x = torch.zeros(10, 3, 4, 4, dtype=torch.uint8)
        for i in range(100):
            m.reservoir_add(x, 0, 0, i)
        counts[m.buf_i.numpy()] += 1
    # each of the 100 stream positions is kept with probability 10/100: 30 of 300 runs
    assert counts.sum() == 3000
    first, last = counts[:50].sum(), counts[50:].sum()
    assert abs(first - last) < 0.15 * 3000
    assert counts.max() < 60 and counts.min() > 10


def test_report_renders_mean_and_std_over_seeds(tmp_path):
    from samc.report import summary_table, write_report

    def result(method, seed, acc, bwt, mu=None):
        return {"method": method, "seed": seed, "mu": mu, "completion": "rule+ae" if mu else None,
                "acc": acc, "bwt": bwt, "bwt_gem_code": bwt * 0.8, "memory_images": [10, 10],
                "memory_bytes": [1, 1], "wall_s": 1.0}

    results = {"gem-s0": result("gem", 0, 70.0, -15.0), "gem-s1": result("gem", 1, 72.0, -13.0),
               "samc-s0": result("samc", 0, 75.0, -11.0, 0.6)}
    rows = {r["method"]: r for r in summary_table(results)}
    assert rows["gem"]["acc"] == "71.00 ± 1.41" and rows["gem"]["bwt"] == "-14.00 ± 1.41"
    assert rows["samc (μ=0.6, rule+ae)"]["seeds"] == "0" and rows["samc (μ=0.6, rule+ae)"]["acc"] == "75.00 (n=1)"
    write_report(results, tmp_path, {"p": 1, "benchmarks": {"split-cifar10": {"seeds": [0]}}})
    text = (tmp_path / "report.md").read_text()
    assert "71.00 ± 1.41" in text and "commit" in text and "p: 1" in text and "split-cifar10" not in text
    assert (tmp_path / "report.csv").read_text().count("\n") == 4


@pytest.mark.parametrize("method", ["gem", "agem", "samc"])
def test_constrained_methods_count_their_projected_steps(tmp_path, method):
    """Task metrics record, per task, the steps that had past memories and those projected."""
    from samc.train import run_stream

    cfg = tiny_config("dataset.n_tasks=2", "dataset.shapes_train_per_class=20",
                      "dataset.shapes_test_per_class=5", f"train.method={method}",
                      "samc.ae_steps=2", "samc.ae_pairs=8")
    run_stream(cfg, tmp_path / "run", progress=False)
    rows = [json.loads((tmp_path / "run" / f"task_{t}" / "metrics.json").read_text()) for t in (1, 2)]
    assert rows[0]["method_stats"] == {"constrained_steps": 0, "projected_steps": 0}
    s = rows[1]["method_stats"]
    assert s["constrained_steps"] == rows[1]["steps"] and 0 <= s["projected_steps"] <= s["constrained_steps"]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_a_channels_last_model_and_keeps_its_layout(tasks, name):
    """train.channels_last (the CPU default) reaches every method: two tasks of a few steps each run,
    and the weights stay channels_last (MER once lost it, and failed, through a flat parameter vector)."""
    from samc.train import Learner

    learner = Learner.create(tiny_config("dataset.n_tasks=2", f"train.method={name}", "train.channels_last=true",
                                         "samc.ae_steps=2", "samc.ae_pairs=8", "baselines.ewc_fisher_samples=4"))
    m = learner.method
    for t in (0, 1):
        _run_task(m, tasks, t, steps=1)
    assert learner.model.conv1.weight.is_contiguous(memory_format=torch.channels_last), name
    assert all(torch.isfinite(p).all() for p in learner.model.parameters())


# -- memory codecs with any replay method (issue 17) ------------------------------------------------
def test_codec_parameter_is_checked_against_the_method():
    from samc.config import ConfigError

    for overrides, match in [(("train.method=ewc", "memory.codec=jxl"), "keeps no codec-coded memory"),
                             (("train.method=samc", "memory.codec=webp"), "saliency codec"),
                             (("train.method=gem", "memory.codec=jxl:distance=99"), r"memory.codec = .*outside"),
                             (("train.method=er", "memory.codec=gif"), "expected one of")]:
        with pytest.raises(ConfigError, match=match):
            tiny_config(*overrides)
    assert tiny_config("train.method=samc", "memory.codec=salient_blur").memory.codec == "salient_blur"


@pytest.mark.parametrize("name, codec", [("gem", "jxl:distance=2"), ("agem", "webp:quality=30"),
                                         ("gem", "salient_lowres"), ("er", "jxl:distance=2"),
                                         ("mer", "sparse"), ("icarl", "webp:quality=30"), ("icarl", "sparse")])
def test_replay_methods_store_codec_records_within_the_same_bytes(tasks, name, codec):
    raw = _method(name)
    coded = _method(name, f"memory.codec={codec}")
    for m in (raw, coded):
        _run_task(m, tasks, 0, steps=4)
    a, b = raw.task_memory(0), coded.task_memory(0)
    assert a.encoding == "raw" and b.codec == coded.codec
    assert b.nbytes <= b.budget == a.budget                  # the same bytes...
    assert len(b) > len(a)                                    # ...hold more images
    images, known = b.decode_all()
    assert images.shape == (len(b), 3, 32, 32)
    if coded.codec.uses_saliency:
        assert b.mu == 0.6 and not known.all()
    # what replay sees: decoded, and filled where the codec left pixels missing
    if name in ("gem", "agem"):
        x = coded.memory_inputs(0)
        assert x.shape == images.shape and float(x.min()) >= 0 and float(x.max()) <= 1
    if name == "icarl":     # the exemplars: per class a longer prefix of the same herding order, decoded
        for c in (0, 1):
            ours, theirs = coded.ex_i[0][coded.ex_y[0] == c].tolist(), raw.ex_i[0][raw.ex_y[0] == c].tolist()
            assert len(ours) > len(theirs) and ours[:len(theirs)] == theirs
        restored = torch.stack([coded.restore_record(r, images.shape[1:]) for r in b.records])
        assert torch.equal(coded.ex_x[0], restored)
        if not coded.codec.uses_saliency:
            assert torch.equal(restored, torch.from_numpy(images))


def test_budget_counts_all_charges_the_autoencoder(tmp_path, tasks):
    from samc.train import run_stream

    cfg = tiny_config("dataset.n_tasks=2", "train.method=samc", "memory.budget_counts=all",
                      "memory.images_per_task=30", "dataset.shapes_train_per_class=20",
                      "dataset.shapes_test_per_class=5")
    result = run_stream(cfg, tmp_path / "all", progress=False, tasks=tasks)
    model = result["memory_model_bytes"]
    assert model == 132796                                   # A_ξ's float32 parameters and buffers
    per_task = 30 * 3 * 32 * 32 - -(-model // 2)
    for t in (1, 2):
        row = json.loads((tmp_path / "all" / f"task_{t}" / "metrics.json").read_text())
        assert row["memory"]["budget"] == per_task and row["memory"]["nbytes"] <= per_task
    assert result["memory_total_bytes"] == sum(result["memory_bytes"]) + model
    with pytest.raises(ValueError, match="budget_counts = all"):
        run_stream(tiny_config("dataset.n_tasks=2", "train.method=samc", "memory.budget_counts=all"),
                   tmp_path / "small", progress=False, tasks=tasks)
