"""The pipeline: one DAG (samc/pipeline.py) run by Snakemake and by DVC, cached, resumable after a
kill, with memory snapshots one can inspect (tiny shapes config: 2 tasks, one method, two seeds)."""
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from samc import cli, config, pipeline
from samc.data.store import dataset_params, read_tasks, write_tasks
from samc.data.sources import DataError
from samc.train import load_tasks, run_stream
from tests.helpers import ROOT


def test_committed_dvc_yaml_matches_the_pipeline():
    cfg = config.load(ROOT / "params.yaml")
    assert (ROOT / "dvc.yaml").read_text() == pipeline.dvc_yaml(cfg), "run `samc dvc-yaml`"


def test_grid_experiments_and_their_configs():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert [e.name for e in pipeline.experiments(config.from_dict(raw))] == ["main"]
    raw["grid"] = {"method": ["gem", "samc"], "seed": [0, 3], "mu": []}
    cfg = config.from_dict(raw)
    names = [e.name for e in pipeline.experiments(cfg)]
    assert names == ["gem-s0", "gem-s3", "samc-s0", "samc-s3"]
    exp = pipeline.experiment_config(raw, "samc-s3")
    assert exp.train.method == "samc" and exp.train.seed == 3
    with pytest.raises(ValueError, match="not in the grid"):
        pipeline.experiment_config(raw, "main")
    stages = pipeline.stages(cfg)
    assert len(stages) == 1 + 4 * (cfg.dataset.n_tasks + 1) + 1
    fp = {s.name: s.fingerprint for s in stages}
    assert fp["train_gem-s0_task1"] != fp["train_samc-s0_task1"] == fp["train_samc-s0_task5"]


def test_prepared_tasks_round_trip_and_refuse_other_params(tmp_path):
    cfg = config.load(ROOT / "params.yaml", ["dataset.n_tasks=2", "dataset.shapes_train_per_class=12",
                                             "dataset.shapes_test_per_class=4"])
    tasks = load_tasks(cfg)
    write_tasks(tasks, tmp_path / "prepared", dataset_params(cfg))
    back = read_tasks(tmp_path / "prepared", dataset_params(cfg))
    for a, b in zip(tasks, back):
        assert a.classes == b.classes and a.class_names == b.class_names
        for name in ("x_train", "y_train", "x_test", "y_test", "masks_train", "masks_test"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    other = dict(dataset_params(cfg), shapes_seed=99)
    with pytest.raises(DataError, match="shapes_seed"):
        read_tasks(tmp_path / "prepared", other)
    with pytest.raises(DataError, match="meta.json"):
        read_tasks(tmp_path / "nowhere")
    # parameters the shapes generator ignores do not make the folder stale
    read_tasks(tmp_path / "prepared", dict(dataset_params(cfg), root="elsewhere", download=True))


def test_digests_ignore_dataset_parameters_the_source_does_not_use():
    shapes = config.load(ROOT / "params.yaml")
    cifar = shapes.with_overrides(["dataset.name=cifar10", "dataset.root=data/cifar10"])
    sec = config.RUN_SECTIONS
    assert cifar.with_overrides(["dataset.shapes_train_per_class=7"]).digest(sec) == cifar.digest(sec)
    assert cifar.with_overrides(["dataset.download=true"]).digest(sec) == cifar.digest(sec)
    assert cifar.with_overrides(["dataset.root=other"]).digest(sec) != cifar.digest(sec)
    assert shapes.with_overrides(["dataset.root=other"]).digest(sec) == shapes.digest(sec)
    assert shapes.with_overrides(["dataset.shapes_train_per_class=7"]).digest(sec) != shapes.digest(sec)


# ---------------------------------------------------------------------------------------------
# Snakemake and DVC on a copy of the project
# ---------------------------------------------------------------------------------------------
def _tiny_params() -> dict:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["dataset"].update(n_tasks=2, shapes_train_per_class=60, shapes_test_per_class=20)
    p["train"].update(device="cpu", method="samc", threads=1)
    p["samc"].update(ae_steps=10, ae_pairs=32, ae_patience=5)
    p["grid"].update(seed=[0, 1])
    p["benchmarks"] = {}          # the benchmark stages have their own test (test_benchmarks.py)
    return p


def _project(dest: Path, params: dict) -> Path:
    dest.mkdir(parents=True)
    shutil.copy(ROOT / "Snakefile", dest)
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cfg = config.load(dest / "params.yaml")
    pipeline.write_dvc_yaml(cfg, dest / "dvc.yaml")
    return dest


def _run(cmd: list[str], cwd: Path, timeout: int = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _metrics(project: Path, exp: str) -> dict:
    return json.loads((project / "results" / exp / "metrics.json").read_text())


@pytest.fixture(scope="module")
def snake(tmp_path_factory):
    project = _project(tmp_path_factory.mktemp("snake") / "project", _tiny_params())
    _run(["snakemake", "--cores", "2"], project)
    return project


@pytest.mark.slow
def test_snakemake_builds_everything_then_nothing_and_reruns_on_mu(snake):
    for exp in ("s0", "s1"):
        m = _metrics(snake, exp)
        assert len(m["accuracy_matrix"]) == 2 and "acc" in m and "bwt" in m
        for png in ("accuracy_matrix.png", "first_task.png", "loss.png"):
            assert Image.open(snake / "results" / exp / png).format == "PNG"
        assert (snake / "runs" / exp / "task_2" / "memory.zarr" / "zarr.json").is_file()
    assert "| s0 |" in (snake / "results" / "report.md").read_text()
    assert "Nothing to be done" in _run(["snakemake", "--cores", "2", "-n"], snake)
    _run(["snakemake", "--report", "report.html"], snake)
    html = (snake / "report.html").read_text(errors="replace")
    assert "accuracy_matrix.png" in html and "loss.png" in html and "report.csv" in html
    for caption in ("workflow.rst", "accuracy_matrix.rst", "report_table.rst"):   # the workflow's text, captions
        first = (ROOT / "workflow" / "report" / caption).read_text().split()[:4]
        assert " ".join(first) in html, caption
    # a changed mu re-runs training and evaluation, not prepare
    params = yaml.safe_load((snake / "params.yaml").read_text())
    params["samc"]["mu"] = 0.7
    changed = _project(snake.parent / "mu", params)
    for item in ("data", "runs", "results", ".snakemake"):
        shutil.copytree(snake / item, changed / item, symlinks=True)
    dry = _run(["snakemake", "--cores", "2", "-n"], changed)
    jobs = set(re.findall(r"^(\S+)\s+\d+$", dry, re.M))   # the "Job stats" table
    assert {"train_s0_task1", "train_s1_task2", "evaluate_s1", "report"} <= jobs and "prepare" not in jobs


@pytest.mark.slow
def test_pipeline_equals_samc_run_in_one_process(snake, tmp_path):
    raw = yaml.safe_load((snake / "params.yaml").read_text())
    cfg = pipeline.experiment_config(raw, "s1")
    whole = run_stream(cfg, tmp_path / "run", progress=False)
    assert whole["accuracy_matrix"] == _metrics(snake, "s1")["accuracy_matrix"]
    assert whole["memory_bytes"] == _metrics(snake, "s1")["memory_bytes"]


@pytest.mark.slow
def test_dvc_repro_matches_snakemake_and_caches(snake, tmp_path):
    project = _project(tmp_path / "dvc", _tiny_params())
    _run(["git", "init", "-q"], project)
    _run(["git", "config", "user.email", "ci@example.org"], project)   # CI machines may have no identity
    _run(["git", "config", "user.name", "samc tests"], project)
    _run(["git", "commit", "-q", "--allow-empty", "-m", "0"], project)
    _run(["dvc", "init", "-q"], project)
    _run(["dvc", "repro"], project)
    for exp in ("s0", "s1"):
        assert _metrics(project, exp)["accuracy_matrix"] == _metrics(snake, exp)["accuracy_matrix"]
        assert _metrics(project, exp)["memory_bytes"] == _metrics(snake, exp)["memory_bytes"]
    again = _run(["dvc", "repro"], project)
    assert "Running stage" not in again
    assert "s0" in _run(["dvc", "metrics", "show"], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["samc"]["mu"] = 0.7
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _run(["dvc", "status"], project)
    assert "train_s0_task1" in status and "train_s1_task2" in status and "prepare:" not in status
    # `dvc exp run -S` on the committed state: prepare is skipped, training re-runs
    (project / "params.yaml").write_text(yaml.safe_dump(_tiny_params(), sort_keys=False))
    _run(["git", "add", "-A"], project)
    _run(["git", "commit", "-q", "-m", "repro"], project)
    out = _run(["dvc", "exp", "run", "-S", "samc.mu=0.7"], project)
    assert "Stage 'prepare' didn't change" in out and "Running stage 'train_s0_task1'" in out
    # a remote (a local folder): push data, memory snapshots and metrics; a fresh clone pulls them and
    # shows the same metrics without training anything
    _run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote")], project)
    _run(["dvc", "push"], project)
    _run(["git", "add", "-A"], project)
    _run(["git", "commit", "-q", "--allow-empty", "-m", "remote"], project)
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    _run(["dvc", "pull"], clone)
    assert _run(["dvc", "metrics", "show"], clone) == _run(["dvc", "metrics", "show"], project)
    assert (clone / "runs" / "s0" / "task_2" / "memory.zarr" / "zarr.json").is_file()
    assert "Running stage" not in _run(["dvc", "repro"], clone)


@pytest.mark.slow
def test_dvc_commit_records_what_snakemake_made(snake, tmp_path):
    """After `snakemake`, `dvc commit -f` writes dvc.lock from the outputs on disk: `dvc repro` then
    trains nothing (issue 18: it used to retrain everything) and reports the same metrics."""
    project = tmp_path / "both"
    shutil.copytree(snake, project, symlinks=True)
    _run(["git", "init", "-q"], project)
    _run(["dvc", "init", "-q"], project)
    assert "Running stage" in _run(["dvc", "repro", "--dry"], project)   # DVC has no record yet
    _run(["dvc", "commit", "-f"], project)
    assert "Running stage" not in _run(["dvc", "repro"], project)
    assert _metrics(project, "s0") == _metrics(snake, "s0")
    assert "s1" in _run(["dvc", "metrics", "show"], project)


@pytest.mark.slow
def test_killed_during_task_2_resumes_without_recomputing(snake, tmp_path):
    project = _project(tmp_path / "kill", _tiny_params())
    proc = subprocess.Popen(["snakemake", "--cores", "1"], cwd=project, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    log2 = project / "logs" / "train_s0_task2.log"
    deadline = time.time() + 600
    while not log2.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert log2.exists(), "task 2 never started"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (project / "runs" / "s0" / "task_2").exists(), "killed too late: task 2 had finished"
    task1 = project / "runs" / "s0" / "task_1" / "state.pt"
    before = task1.stat().st_mtime_ns
    _run(["snakemake", "--unlock"], project)
    _run(["snakemake", "--cores", "2", "--rerun-incomplete"], project)
    assert task1.stat().st_mtime_ns == before, "task 1 was recomputed"
    for exp in ("s0", "s1"):
        assert _metrics(project, exp)["accuracy_matrix"] == _metrics(snake, exp)["accuracy_matrix"]


@pytest.mark.slow
def test_memory_show_and_diff(snake, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(snake)
    png = tmp_path / "grid.png"
    assert cli.main(["memory", "show", "runs/s0/task_1", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    for key in ("n_images", "kept_fraction", "nbytes", "budget", "grid"):
        assert key in out, out
    assert "ground truth: yes" in out and "autoencoder: runs/s0/task_1/state.pt" in out
    img = Image.open(png)
    assert img.format == "PNG" and img.size[0] > 200
    assert cli.main(["memory", "diff", "runs/s0/task_1", "runs/s1/task_1"]) == 0
    assert "shared samples" in capsys.readouterr().out
    assert cli.main(["memory", "show", "runs/nope"]) == 2


def test_snakemake_builds_only_the_benchmarks_its_targets_name():
    from samc.config import load
    from samc.pipeline import benchmark_stages, benchmarks_for, stages

    cfg = load(ROOT / "params.yaml")
    grid = {st.name for st in stages(cfg)}
    assert benchmarks_for(cfg, [], grid) == set()                          # default target: the report
    assert benchmarks_for(cfg, ["all", "results/report.md", "runs/main/task_1", "data/prepared"], grid) == set()
    assert benchmarks_for(cfg, ["results/quick/codecs.md", "data/benchmarks/split-cifar10",
                                "runs/split-cifar10-500/gem-s0/task_2"], grid) == {"quick", "split-cifar10",
                                                                                   "split-cifar10-500"}
    assert benchmarks_for(cfg, ["codecs_quick", "train_split-cifar10.gem-s0_task1", next(iter(grid))], grid) == {
        "quick", "split-cifar10"}
    assert benchmarks_for(cfg, ["somewhere/else.txt"], grid) is None        # cannot place it: every benchmark
    quick = benchmark_stages(cfg, only={"quick"})
    assert quick and all("quick" in st.name for st in quick)
    assert len(benchmark_stages(cfg)) > len(quick)
