"""train.precision (samc.precision) and memory.constraint_sample (samc.methods.gem), end to end."""
import hashlib
import json
import math

import pytest
import torch
import torch.nn.functional as F

from samc import precision as prec
from samc.config import RUN_SECTIONS, effective_dataset
from samc.models import ResNet18
from samc.precision import Precision, resolve_precision
from samc.saliency import grad_cam
from samc.train import Learner, load_tasks, run_stream
from tests.helpers import tiny_config

SMALL = ("dataset.n_tasks=2", "dataset.shapes_train_per_class=20", "dataset.shapes_test_per_class=10",
         "samc.ae_steps=3", "samc.ae_pairs=16", "samc.ae_patience=3")


@pytest.mark.parametrize("native", [True, False])
def test_auto_picks_bf16_only_where_the_cpu_runs_it_natively(monkeypatch, native):
    monkeypatch.setattr(prec, "fast_bf16", lambda device: native)
    assert resolve_precision("auto", torch.device("cpu")).name == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", torch.device("cpu")).name == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")).name == "bf16"


def test_an_unknown_precision_is_refused_by_name():
    with pytest.raises(ValueError, match="train.precision"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(Exception, match="train.precision"):
        tiny_config("train.precision=fp16")


def test_channels_last_auto_is_on_for_bf16_and_on_the_cpu_off_for_fp32_on_cuda(monkeypatch):
    monkeypatch.setattr(prec, "fast_bf16", lambda device: True)
    assert resolve_precision("fp32", torch.device("cpu"), "auto").channels_last
    assert resolve_precision("bf16", torch.device("cuda"), "auto").channels_last
    assert not resolve_precision("fp32", torch.device("cuda"), "auto").channels_last
    assert not resolve_precision("fp32", torch.device("cpu"), False).channels_last
    assert resolve_precision("fp32", torch.device("cuda"), True).channels_last
    with pytest.raises(ValueError, match="train.channels_last"):
        resolve_precision("fp32", torch.device("cpu"), "yes")
    with pytest.raises(Exception, match="channels_last"):
        tiny_config("train.channels_last=fast")


def test_fp32_channels_last_computes_the_float64_gradients_to_float32_rounding():
    """The layout only reorders float32 sums. In eval mode (well conditioned) both layouts' gradients
    are within 1e-5 of a float64 reference; in train mode BatchNorm over a batch of 10 at this random
    initialisation amplifies float32 rounding to ~1e-3 in either layout, which says nothing of it."""
    torch.manual_seed(0)
    ref = ResNet18(2, 2)
    nets = {"contiguous": ResNet18(2, 2), "channels_last": Precision("fp32", "cpu", True).prepare(ResNet18(2, 2)),
            "float64": ResNet18(2, 2).double()}
    x, y = torch.rand(10, 3, 32, 32), torch.randint(0, 2, (10,))
    for name, m in nets.items():
        m.load_state_dict(ref.state_dict())
        m.eval()
        F.cross_entropy(m(x.double() if name == "float64" else x, 0), y).backward()
    assert nets["channels_last"].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    flat = {k: torch.cat([p.grad.double().reshape(-1) for p in m.parameters() if p.grad is not None])
            for k, m in nets.items()}
    err = {k: float((flat[k] - flat["float64"]).norm() / flat["float64"].norm()) for k in ("contiguous", "channels_last")}
    assert max(err.values()) < 1e-5, err


def test_bf16_autocast_keeps_float32_weights_and_gradients():
    p = Precision("bf16", "cpu", channels_last=True)
    model = p.prepare(ResNet18(2, 2))
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 2, (4,))
    with p.autocast():
        logits = model(x, 0)
        loss = F.cross_entropy(logits, y)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert all(q.dtype == torch.float32 and q.grad.dtype == torch.float32
               for q in model.parameters() if q.grad is not None)
    with p.autocast():
        sal = grad_cam(model, x, 0, y)
    assert sal.dtype == torch.float32 and 0.0 <= float(sal.min()) and float(sal.max()) <= 1.0


def test_fp32_is_a_no_op():
    p = Precision("fp32", "cpu")
    model = p.prepare(ResNet18(2, 2))
    assert model.conv1.weight.is_contiguous()
    with p.autocast():
        assert model(torch.rand(2, 3, 32, 32), 0).dtype == torch.float32


def test_the_neutral_values_of_new_options_leave_digests_unchanged():
    cfg = tiny_config("train.channels_last=false")
    d = cfg.to_dict()
    d["dataset"] = effective_dataset(d["dataset"])
    del d["train"]["precision"], d["train"]["channels_last"], d["memory"]["constraint_sample"]  # before them
    del d["memory"]["codec"], d["memory"]["budget_counts"]
    for key in ("gradcam_mode", "complete_at", "budget_charge"):
        del d["samc"][key]
    for key in ("eec_latent", "eec_summary_rank", "eec_cls_weight", "eec_ae_lr"):   # EEC's, after them
        del d["baselines"][key]
    old = hashlib.sha256(json.dumps({k: d[k] for k in RUN_SECTIONS}, sort_keys=True).encode()).hexdigest()[:10]
    assert cfg.digest(RUN_SECTIONS) == old
    assert tiny_config("train.precision=bf16").digest(RUN_SECTIONS) != old
    assert tiny_config("memory.constraint_sample=5").digest(RUN_SECTIONS) != old
    assert tiny_config("baselines.eec_latent=8").digest(RUN_SECTIONS) != old
    assert tiny_config("train.channels_last=auto").digest(RUN_SECTIONS) != old     # a new layout: a new run
    for change in ("samc.gradcam_mode=train", "samc.complete_at=storage", "samc.budget_charge=values",
                   "memory.codec=salient_blur", "memory.budget_counts=all"):
        assert tiny_config("train.channels_last=false", change).digest(RUN_SECTIONS) != old, change


@pytest.mark.slow
def test_a_bf16_samc_run_records_its_precision(tmp_path):
    cfg = tiny_config(*SMALL, "train.method=samc", "train.precision=bf16")
    result = run_stream(cfg, tmp_path / "run", progress=False)
    assert result["precisions"] == ["bf16"]
    assert all(math.isfinite(a) for row in result["accuracy_matrix"] for a in row)
    row = json.loads((tmp_path / "run" / "task_2" / "metrics.json").read_text())
    assert row["precision"] == "bf16"


def test_constraint_sample_draws_n_images_per_past_task_from_the_saved_generator():
    cfg = tiny_config(*SMALL, "train.method=gem", "memory.constraint_sample=3")
    learner = Learner.create(cfg)
    gem = learner.method
    gem.mem_x = {0: torch.rand(10, 3, 32, 32), 1: torch.rand(2, 3, 32, 32)}
    gem.mem_y = {0: torch.arange(10) % 2, 1: torch.tensor([0, 1])}
    state = gem.generator.get_state()
    xs, ys = gem.constraint_batches([0, 1])
    assert [len(y) for y in ys] == [3, 2]                  # a memory smaller than N is used whole
    assert all(any(torch.equal(x, m) for m in gem.mem_x[0]) for x in xs[0])
    gem.generator.set_state(state)
    again, _ = gem.constraint_batches([0, 1])
    assert torch.equal(again[0], xs[0])
    exact = tiny_config(*SMALL, "train.method=gem")
    gem.cfg = exact
    xs, _ = gem.constraint_batches([0, 1])
    assert xs[0] is gem.mem_x[0]


@pytest.mark.slow
def test_a_sampled_constraint_run_resumes_bit_for_bit(tmp_path):
    cfg = tiny_config("dataset.shapes_train_per_class=20", "dataset.shapes_test_per_class=10",
                      "train.method=gem", "memory.constraint_sample=4")
    tasks = load_tasks(cfg)
    full = run_stream(cfg, tmp_path / "full", progress=False, tasks=tasks)
    run_stream(cfg, tmp_path / "split", progress=False, tasks=tasks, stop_after=2)
    resumed = run_stream(cfg, tmp_path / "split", progress=False, tasks=tasks)
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    exact = run_stream(tiny_config("dataset.shapes_train_per_class=20", "dataset.shapes_test_per_class=10",
                                   "train.method=gem"), tmp_path / "exact", progress=False, tasks=tasks)
    assert exact["accuracy_matrix"] != full["accuracy_matrix"]   # the sampled rows do change the run
