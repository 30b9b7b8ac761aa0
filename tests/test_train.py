"""The trainer: resume bit-for-bit, the saliency window, and the CLI end to end (tiny shapes)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from samc import cli
from samc.memory import load_snapshot
from samc.methods.samc import SAMC
from samc import train as train_mod
from samc.models import ResNet18
from samc.train import completed_tasks, evaluate, load_tasks, run_stream, prepare_test_sets
from tests.helpers import ROOT, tiny_config


@pytest.fixture(scope="module")
def tasks():
    return load_tasks(tiny_config())


@pytest.mark.parametrize("method, codec", [("samc", "auto"), ("er", "auto"), ("gem", "jxl:distance=2"),
                                           ("er", "salient_lowres"), ("samc", "salient_lowres"),
                                           ("icarl", "salient_blur")])
def test_resume_after_task_2_equals_uninterrupted(tmp_path, tasks, method, codec):
    cfg = tiny_config(f"train.method={method}", f"memory.codec={codec}")
    full = run_stream(cfg, tmp_path / "full", progress=False, tasks=tasks)
    assert run_stream(cfg, tmp_path / "split", progress=False, tasks=tasks, stop_after=2) == {}
    assert not (tmp_path / "split" / "task_3").exists()
    (tmp_path / "split" / "task_1" / "state.pt").unlink()  # only the last state is needed to resume
    resumed = run_stream(cfg, tmp_path / "split", progress=False, tasks=tasks)  # a fresh learner
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    assert resumed["memory_bytes"] == full["memory_bytes"]
    a = torch.load(tmp_path / "full" / "task_3" / "state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "split" / "task_3" / "state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_test_sets_are_made_once_per_run_and_evaluate_the_same(tmp_path, tasks, monkeypatch):
    model = ResNet18(len(tasks), 2)
    cpu = torch.device("cpu")
    made = prepare_test_sets(tasks, cpu)
    assert all(x.dtype == torch.uint8 for x, _ in made)
    assert evaluate(model, tasks, cpu, 7, tests=made) == evaluate(model, tasks, cpu, 500)
    calls = []
    real = train_mod.prepare_test_sets
    monkeypatch.setattr(train_mod, "prepare_test_sets", lambda *a: calls.append(1) or real(*a))
    run_stream(tiny_config("train.method=finetune", "dataset.n_tasks=2"), tmp_path / "run", progress=False,
               tasks=tasks[:2])
    assert len(calls) == 1                              # not once per task nor per evaluation


def test_completed_tasks_is_the_last_saved_state_after_unbroken_metrics(tmp_path):
    for t, files in {1: ["metrics.json"], 2: ["metrics.json", "state.pt"], 3: ["state.pt"],
                     4: ["metrics.json", "state.pt"]}.items():
        (tmp_path / f"task_{t}").mkdir()
        for f in files:
            (tmp_path / f"task_{t}" / f).write_text("x")
    assert completed_tasks(tmp_path, 5) == 2  # task 3 has no metrics: tasks 3.. are not complete
    (tmp_path / "task_3" / "metrics.json").write_text("x")
    assert completed_tasks(tmp_path, 5) == 4
    assert completed_tasks(tmp_path, 3) == 3
    assert completed_tasks(tmp_path / "none", 5) == 0


def test_saliency_window_gives_the_per_batch_memory(tmp_path, tasks, monkeypatch):
    """Masks for only the samples that can still reach the FIFO memory = masks for every batch."""
    cfg = tiny_config("train.method=samc", "dataset.n_tasks=2", "samc.completion=rule")
    run_stream(cfg, tmp_path / "window", progress=False, tasks=tasks[:2])
    calls = []
    orig = SAMC.masks

    def counting(self, x, y, t, **kwargs):
        calls.append(len(x))
        return orig(self, x, y, t, **kwargs)

    monkeypatch.setattr(SAMC, "min_record_nbytes", lambda self, shape: 1)  # window = whole stream
    monkeypatch.setattr(SAMC, "masks", counting)
    run_stream(cfg, tmp_path / "all", progress=False, tasks=tasks[:2])
    assert sum(calls) >= len(tasks[0].y_train)
    for t in (1, 2):
        a = load_snapshot(tmp_path / "window" / f"task_{t}" / "memory.zarr")
        b = load_snapshot(tmp_path / "all" / f"task_{t}" / "memory.zarr")
        assert a.records == b.records
        np.testing.assert_array_equal(a.indices, b.indices)
        # FIFO: the memory is the end of the task's stream
        assert len(a) > 10 and a.nbytes <= a.budget


def test_memory_budget_and_snapshot_round_trip(tmp_path, tasks):
    cfg = tiny_config("train.method=samc", "samc.mu=0.6")
    result = run_stream(cfg, tmp_path / "run", progress=False, tasks=tasks)
    for t in range(3):
        row = json.loads((tmp_path / "run" / f"task_{t + 1}" / "metrics.json").read_text())
        mem = load_snapshot(tmp_path / "run" / f"task_{t + 1}" / "memory.zarr", expect={"mu": 0.6, "task": t})
        assert mem.nbytes <= mem.budget == 10 * 3 * 32 * 32
        assert row["memory"]["n_images"] == len(mem) > 10  # sparse memories hold more than 10 images
        state = torch.load(tmp_path / "run" / f"task_{t + 1}" / "state.pt", weights_only=True)
        assert state["task"] == t
    assert len(result["accuracy_matrix"]) == 3
    assert {"acc", "bwt", "bwt_gem_code", "fwt"} <= set(result)


@pytest.mark.parametrize("method, codec", [("gem", "auto"), ("er", "auto"), ("er", "webp:quality=30")])
def test_memory_held_counts_every_tasks_records(tmp_path, tasks, method, codec):
    """Total bytes = the most bytes held at once: GEM's task memories add up, ER's reservoir holds the
    bytes of all tasks from the start (and never more)."""
    from samc.codec_table import held

    cfg = tiny_config(f"train.method={method}", f"memory.codec={codec}", "memory.images_per_task=4")
    result = run_stream(cfg, tmp_path / "run", progress=False, tasks=tasks)
    budget, n = 4 * 3 * 32 * 32, len(tasks)
    per_task, total = result["memory_bytes"], result["memory_held_bytes"]
    if method == "gem":
        assert total == np.cumsum(per_task).tolist() and result["memory_held_images"][-1] == 4 * n
    else:
        assert all(p <= h <= budget * n for p, h in zip(per_task, total))
        assert total[0] == per_task[0] > budget      # after task 1 the buffer is all task 1's
        if codec == "auto":
            assert total == [budget * n] * n and result["memory_held_images"] == [4 * n] * n
        else:
            assert result["memory_held_images"][-1] > 4 * n
    assert result["memory_total_bytes"] == max(total)
    images, nbytes, peak = held(result, cfg)
    assert (images, nbytes, peak) == (result["memory_held_images"][-1] / n, total[-1] / n, max(total))
    legacy = {k: v for k, v in result.items() if not k.startswith("memory_held")}   # runs made before
    if codec == "auto":
        assert held(legacy, cfg) == (images, nbytes, peak)


def test_cli_run_prints_matrix_and_rejects_bad_params(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    code = cli.main(["run", "--params", str(params), "--out", str(tmp_path / "r"), "--no-progress",
                     "--set", "dataset.n_tasks=2", "--set", "dataset.shapes_train_per_class=20",
                     "--set", "dataset.shapes_test_per_class=10", "--set", "train.method=gem"])
    out = capsys.readouterr().out
    assert code == 0 and "ACC" in out and "BWT" in out and "after task" in out
    assert out.startswith(f"run folder: {tmp_path / 'r'}\n")             # named before any work
    assert cli.main(["run", "--params", str(params), "--set", "samc.mu=2"]) == 2
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_samc_beats_finetune_on_shapes(tmp_path):
    """End to end, 5 shapes tasks: SAMC forgets less than plain fine-tuning (higher ACC, BWT)."""
    small = ("dataset.shapes_train_per_class=250", "dataset.shapes_test_per_class=50", "train.epochs=3",
             "memory.images_per_task=2", "samc.ae_steps=30", "samc.ae_pairs=64", "samc.ae_patience=10")
    results = {}
    for method in ("finetune", "samc"):
        cfg = tiny_config("dataset.n_tasks=5", *small, f"train.method={method}")
        results[method] = run_stream(cfg, tmp_path / method, progress=False)
    ft, sa = results["finetune"], results["samc"]
    assert ft["bwt"] < -10, f"finetune should forget on shapes (BWT {ft['bwt']:.1f})"
    assert sa["acc"] > ft["acc"] + 5, (sa["acc"], ft["acc"])
    assert sa["bwt"] > ft["bwt"] + 5, (sa["bwt"], ft["bwt"])
    assert min(sa["memory_images"]) > 2, "a sparse memory of a 2-image budget holds more than 2 images"


def test_samc_on_a_mini_imagenet_layout_at_84_pixels(tmp_path):
    """A flat ImageFolder (mini-ImageNet's usual shipping: <class>/*.jpg, no split), resized to
    84x84: the whole SAMC loop (Grad-CAM, sparse memory, inpainting + AE at a side that is not a
    multiple of 8, GEM) runs and stores 84x84 memories."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "mini"
    for c in range(4):
        (root / f"n0{c}").mkdir(parents=True)
        for i in range(12):
            img = rng.integers(0, 255, (100, 90, 3), dtype=np.uint8)
            img[20:70, 20:70] = (60 * c, 255 - 60 * c, 128)
            Image.fromarray(img).save(root / f"n0{c}" / f"{i:03d}.jpg")
    cfg = tiny_config("dataset.name=imagefolder", f"dataset.root={root}", "dataset.image_size=84",
                      "dataset.n_tasks=2", "train.method=samc", "samc.ae_steps=3", "samc.ae_pairs=8")
    result = run_stream(cfg, tmp_path / "run", progress=False)
    assert np.array(result["accuracy_matrix"]).shape == (2, 2)
    mem = load_snapshot(tmp_path / "run" / "task_1" / "memory.zarr")
    assert mem.image_shape == (3, 84, 84) and len(mem) > 10 and mem.nbytes <= mem.budget
    images, masks = mem.decode_all()
    assert images.shape[1:] == (3, 84, 84) and masks.shape[1:] == (84, 84)


def test_device_selection_auto_falls_back_and_cuda_is_checked(monkeypatch, caplog):
    import logging

    import torch

    from samc.train import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="samc.train"):
        assert resolve_device("auto") == torch.device("cpu")
    assert "no CUDA device found, running on the CPU" in caplog.text
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="train.device = 'cuda' but no CUDA device is available"):
        resolve_device("cuda")
    assert cli.main(["run", "--params", str(ROOT / "params.yaml"), "--set", "train.device=cuda",
                     "--set", "dataset.n_tasks=2", "--set", "dataset.shapes_train_per_class=4",
                     "--out", "never-written"]) == 2
    assert not Path("never-written").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda" and resolve_device("cuda").type == "cuda"


def test_deterministic_switch_gives_the_same_metrics_on_cpu(tmp_path):
    import torch

    small = ("dataset.n_tasks=2", "dataset.shapes_train_per_class=20", "dataset.shapes_test_per_class=10",
             "train.method=samc")
    try:
        a = run_stream(tiny_config(*small), tmp_path / "a", progress=False)
        b = run_stream(tiny_config(*small, "train.deterministic=true"), tmp_path / "b", progress=False)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    assert a["accuracy_matrix"] == b["accuracy_matrix"] and a["memory_bytes"] == b["memory_bytes"]


def test_bn_double_update_changes_running_stats_only(tmp_path, tasks):
    """train.bn_double_update: the extra train-mode pass moves BatchNorm's running statistics, never the
    weights (training normalises with batch statistics), so only evaluation can differ."""
    runs = {}
    for flag in (False, True):
        cfg = tiny_config("train.method=finetune", "dataset.n_tasks=2", f"train.bn_double_update={str(flag).lower()}")
        run_stream(cfg, tmp_path / str(flag), progress=False, tasks=tasks[:2])
        runs[flag] = torch.load(tmp_path / str(flag) / "task_2" / "state.pt", weights_only=True)["model"]
    weights = [k for k in runs[False] if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(runs[False][k], runs[True][k]) for k in weights)
    assert not torch.equal(runs[False]["bn1.running_mean"], runs[True]["bn1.running_mean"])
    assert runs[True]["bn1.num_batches_tracked"] == 2 * runs[False]["bn1.num_batches_tracked"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["finetune", "ewc", "lwf", "icarl", "gem", "agem", "er", "mer", "samc"])
def test_every_method_resumes_on_cuda(tmp_path, tasks, method):
    """States are read onto the CPU; every method must put what it needs back on the GPU (EWC did not)."""
    cfg = tiny_config(f"train.method={method}", "dataset.n_tasks=2", "train.device=cuda")
    assert run_stream(cfg, tmp_path, progress=False, tasks=tasks[:2], stop_after=1) == {}
    result = run_stream(cfg, tmp_path, progress=False, tasks=tasks[:2])
    assert len(result["accuracy_matrix"]) == 2 and result["devices"][0].startswith("cuda")


def test_a_diverging_run_stops_with_a_clear_error_and_keeps_earlier_tasks(tmp_path, tasks):
    """EWC with an absurd penalty blows up on task 2: the run raises, names the task, step and the
    parameters to lower, and task 1's outputs stay; nothing of task 2 is written."""
    from samc.train import Diverged

    cfg = tiny_config("train.method=ewc", "baselines.ewc_lambda=1000000", "dataset.n_tasks=2")
    with pytest.raises(Diverged, match=r"ewc diverged on task 2, step \d+.*train\.lr.*ewc_lambda"):
        run_stream(cfg, tmp_path / "run", progress=False, tasks=tasks[:2])
    assert (tmp_path / "run" / "task_1" / "state.pt").is_file()
    assert not (tmp_path / "run" / "task_2").exists()


def test_one_progress_bar_for_the_run_and_a_sampled_loss_curve(tmp_path, tasks, capsys):
    from samc.report import write_experiment_results
    from samc.train import task_steps

    cfg = tiny_config("train.method=gem")
    result = run_stream(cfg, tmp_path / "run", progress=True, tasks=tasks)
    total = sum(task_steps(cfg, task) for task in tasks)
    err = capsys.readouterr().err
    assert f"{total}/{total}" in err and "loss=" in err        # the whole run's steps, with the running loss
    for t, curve in enumerate(result["loss_curves"]):
        row = json.loads((tmp_path / "run" / f"task_{t + 1}" / "metrics.json").read_text())
        assert curve == row["loss_curve"] and 0 < len(curve) <= 100 and curve[-1][0] == row["steps"]
        assert abs(np.mean([v for _, v in curve]) - row["train_loss"]) < 0.5   # window means of the same losses
    write_experiment_results(result, tmp_path / "results", "gem")
    assert (tmp_path / "results" / "loss.png").stat().st_size > 1000
