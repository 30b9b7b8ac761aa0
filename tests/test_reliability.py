"""Nothing lost, nothing trusted blindly: bad inputs (a table of cases through the CLI), checkpoints
crafted to run code, fuzzed memory snapshots, and a second process on the same run folder.

Every bad input must give exit status 2, a message naming the culprit (key, file or store), and
leave every earlier output exactly as it was."""
import hashlib
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samc import cli, io
from samc.memory import MemoryFormatError, load_snapshot
from tests.helpers import ROOT

TINY = {"dataset": {"n_tasks": 2, "shapes_train_per_class": 20, "shapes_test_per_class": 10},
        "train": {"device": "cpu", "method": "samc"},
        "samc": {"ae_steps": 3, "ae_pairs": 16, "ae_patience": 2}, "benchmarks": {}}


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".samc.lock"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny project with a completed 2-task run (``run``) and a prepared dataset (``prepared``)."""
    root = tmp_path_factory.mktemp("reliability")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section] = values if section == "benchmarks" else {**params[section], **values}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    p = str(root / "params.yaml")
    assert cli.main(["run", "--params", p, "--out", str(root / "run"), "--no-progress"]) == 0
    assert cli.main(["prepare", "--params", p, "--out", str(root / "prepared")]) == 0
    return root


def _victim(project: Path, tmp_path: Path) -> Path:
    """A copy of the completed run whose task 2 is removed: train-task --task 2 resumes from task 1."""
    run = tmp_path / "victim"
    shutil.copytree(project / "run", run)
    shutil.rmtree(run / "task_2")
    return run


def _image_root(tmp_path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


# Each case: (name, builder(project, tmp_path) -> (argv, culprit, folder that must not change or None)).
def _params_case(*sets, culprit):
    def build(project, tmp_path):
        argv = ["run", "--params", str(project / "params.yaml"), "--out", str(tmp_path / "new"), "--no-progress"]
        for item in sets:
            argv += ["--set", item]
        return argv, culprit, None
    return build


def _file_params(text: str, culprit: str):
    def build(project, tmp_path):
        path = tmp_path / "bad-params.yaml"
        path.write_text(text)
        return ["run", "--params", str(path), "--out", str(tmp_path / "new")], culprit, None
    return build


def _imagefolder(damage):
    def build(project, tmp_path):
        root = _image_root(tmp_path)
        culprit = damage(root)
        argv = ["run", "--params", str(project / "params.yaml"), "--out", str(tmp_path / "new"), "--no-progress",
                "--set", "dataset.name=imagefolder", "--set", f"dataset.root={root}",
                "--set", "dataset.n_tasks=1", "--set", "dataset.classes_per_task=2"]
        return argv, culprit, None
    return build


def _truncate(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return str(path)


def _garbage(path: Path) -> str:
    path.write_bytes(b"this is no image")
    return str(path)


def _state_case(damage):
    def build(project, tmp_path):
        run = _victim(project, tmp_path)
        culprit = damage(run / "task_1" / "state.pt", tmp_path)
        argv = ["train-task", "--params", str(project / "params.yaml"), "--run-dir", str(run), "--task", "2",
                "--no-progress"]
        return argv, culprit, run
    return build


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickle_payload(state: Path, tmp_path: Path) -> str:
    import torch

    obj = torch.load(state, weights_only=True)
    obj["model"]["__evil__"] = _Payload(tmp_path / "PWNED")
    with open(state, "wb") as fh:
        pickle.dump(obj, fh)
    return str(state)


def _foreign_state(state: Path, tmp_path: Path) -> str:
    import torch

    obj = torch.load(state, weights_only=True)
    obj["config_digest"] = "0123456789"
    torch.save(obj, state)
    return "different parameters"


def _memory_case(damage):
    def build(project, tmp_path):
        run = tmp_path / "copy"
        shutil.copytree(project / "run", run)
        store = run / "task_1" / "memory.zarr"
        culprit = damage(store)
        return ["memory", "show", str(store)], culprit, None
    return build


def _flip_chunk(store: Path) -> str:
    chunk = max((p for p in store.rglob("*") if p.is_file() and "records" in str(p) and p.name != "zarr.json"),
                key=lambda p: p.stat().st_size)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    return str(store)


def _attr(key, value):
    def damage(store: Path) -> str:
        meta = json.loads((store / "zarr.json").read_text())
        meta["attributes"][key] = value
        (store / "zarr.json").write_text(json.dumps(meta))
        return key
    return damage


def _prepared_mismatch(project, tmp_path):
    run = _victim(project, tmp_path)
    argv = ["train-task", "--params", str(project / "params.yaml"), "--run-dir", str(run), "--task", "2",
            "--data", str(project / "prepared"), "--set", "dataset.shapes_seed=99", "--no-progress"]
    return argv, "shapes_seed", run


CASES = {
    # parameters
    "mu above 1": _params_case("samc.mu=1.5", culprit="samc.mu"),
    "lr zero": _params_case("train.lr=0", culprit="train.lr"),
    "lr negative": _params_case("train.lr=-0.1", culprit="train.lr"),
    "budget zero": _params_case("memory.images_per_task=0", culprit="memory.images_per_task"),
    "batch zero": _params_case("train.batch_size=0", culprit="train.batch_size"),
    "unknown method": _params_case("train.method=sgd++", culprit="train.method"),
    "unknown dataset": _params_case("dataset.name=mnist", culprit="dataset.name"),
    "classes do not divide": _params_case("dataset.classes_per_task=6", culprit="dataset.classes_per_task"),
    "unknown key": _params_case("samc.muu=0.5", culprit="muu"),
    "wrong type": _params_case("train.epochs=two", culprit="train.epochs"),
    "bad completion": _params_case("samc.completion=magic", culprit="samc.completion"),
    "override without section": _params_case("mu=0.5", culprit="section.key"),
    "imagefolder without root": _params_case("dataset.name=imagefolder", culprit="dataset.root"),
    "params file missing": lambda project, tmp_path: (
        ["run", "--params", str(tmp_path / "nope.yaml")], str(tmp_path / "nope.yaml"), None),
    "params not YAML": _file_params("dataset: [unclosed\n", "bad-params.yaml"),
    "params not a mapping": _file_params("- just\n- a list\n", "expected a mapping"),
    # data
    "dataset root missing": lambda project, tmp_path: (
        ["run", "--params", str(project / "params.yaml"), "--out", str(tmp_path / "new"),
         "--set", "dataset.name=imagefolder", "--set", f"dataset.root={tmp_path / 'no-such-root'}"],
        str(tmp_path / "no-such-root"), None),
    "test split missing a class": _imagefolder(lambda r: (shutil.rmtree(r / "test" / "dog"), str(r / "test" / "dog"))[1]),
    "no train folder": _imagefolder(lambda r: (shutil.rmtree(r / "train"), str(r / "train"))[1]),
    "truncated image": _imagefolder(lambda r: _truncate(r / "train" / "cat" / "1.png")),
    "not an image": _imagefolder(lambda r: _garbage(r / "test" / "cat" / "0.png")),
    "prepared data of other params": _prepared_mismatch,
    # checkpoints
    "checkpoint truncated": _state_case(lambda s, tmp: _truncate(s)),
    "checkpoint not a checkpoint": _state_case(lambda s, tmp: _garbage(s)),
    "checkpoint runs code on load": _state_case(_pickle_payload),
    "checkpoint of other params": _state_case(_foreign_state),
    "checkpoint missing": _state_case(lambda s, tmp: (s.unlink(), str(s))[1]),
    # memory snapshots
    "snapshot chunk corrupted": _memory_case(_flip_chunk),
    "snapshot wrong format": _memory_case(_attr("format", "something-else")),
    "snapshot future version": _memory_case(_attr("format_version", 999)),
    "snapshot digest mismatch": _memory_case(_attr("sha256", "0" * 64)),
    "snapshot not a store": _memory_case(lambda s: (shutil.rmtree(s), s.mkdir(), str(s))[2]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_clearly_and_nothing_changes(name, project, tmp_path, caplog):
    before = _tree_digest(project)
    argv, culprit, protected = CASES[name](project, tmp_path)
    protected_before = _tree_digest(protected) if protected else None
    with caplog.at_level(logging.ERROR, logger="samc"):
        code = cli.main(argv)
    assert code == 2, f"{name}: exit {code}"
    errors = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert culprit in errors, f"{name}: {culprit!r} not named in: {errors}"
    assert _tree_digest(project) == before, f"{name}: an earlier output changed"
    if protected is not None:
        assert _tree_digest(protected) == protected_before, f"{name}: the run folder changed"
        assert not (protected / "task_2").exists()
    assert not (tmp_path / "PWNED").exists(), "the checkpoint's payload ran"
    assert not (tmp_path / "new" / "task_1").exists()


def test_a_second_process_on_the_same_run_folder_is_refused(project, tmp_path, caplog):
    run = _victim(project, tmp_path)
    before = _tree_digest(run)
    with io.run_lock(run):   # another samc writing there
        with caplog.at_level(logging.ERROR, logger="samc"):
            code = cli.main(["train-task", "--params", str(project / "params.yaml"), "--run-dir", str(run),
                             "--task", "2", "--no-progress"])
    assert code == 2 and "in use by another samc process" in caplog.text and str(run) in caplog.text
    assert _tree_digest(run) == before
    with io.run_lock(run):   # released: taken again at once
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_snapshot_is_refused_or_decoded_exactly(project, tmp_path_factory, data):
    """Random mutations of a valid store (bytes of any file flipped, truncated, replaced by random
    bytes, attributes rewritten): loading raises MemoryFormatError, or returns the very same memory."""
    good = load_snapshot(project / "run" / "task_1" / "memory.zarr")
    store = tmp_path_factory.mktemp("fuzz") / "memory.zarr"
    shutil.copytree(project / "run" / "task_1" / "memory.zarr", store)
    files = sorted(p for p in store.rglob("*") if p.is_file())
    target = data.draw(st.sampled_from(files))
    raw = bytearray(target.read_bytes())
    how = data.draw(st.sampled_from(["flip", "truncate", "random", "append"]))
    if how == "flip" and raw:
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        raw = raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))]
    elif how == "random":
        raw = bytearray(data.draw(st.binary(min_size=0, max_size=2 * len(raw) + 16)))
    else:
        raw += data.draw(st.binary(min_size=1, max_size=64))
    target.write_bytes(bytes(raw))
    try:
        back = load_snapshot(store)
    except MemoryFormatError:
        return
    assert back.records == good.records and back.labels.tolist() == good.labels.tolist()
    a, b = back.decode_all(), good.decode_all()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


# -- kill tests: SIGKILL at chosen points of `samc train-task`, then a plain restart --------------
_KILLER = r'''
import io as _bio, os, signal, sys
import torch, zarr
import samc.io as sio
from samc.methods.gem import GEM

point = os.environ["SAMC_KILL_AT"]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "training":                      # in the middle of the task's SGD steps
    calls = {"n": 0}
    observe = GEM.observe
    def observe_then_die(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            die()
        return observe(self, *a, **k)
    GEM.observe = observe_then_die
elif point == "checkpoint":                  # half of state.pt written
    save = torch.save
    def half_then_die(obj, f, *a, **k):
        buf = _bio.BytesIO()
        save(obj, buf, *a, **k)
        with open(f, "wb") as fh:
            fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            fh.flush()
            os.fsync(fh.fileno())
        die()
    torch.save = half_then_die
elif point == "memory":                      # the first array of the Zarr store written, not the rest
    setitem = zarr.Array.__setitem__
    def write_then_die(self, key, value):
        setitem(self, key, value)
        die()
    zarr.Array.__setitem__ = write_then_die
elif point == "metrics":                     # state and memory written, metrics.json not yet
    write_json = sio.write_json
    def json_then_die(path, obj):
        if str(path).endswith("metrics.json"):
            die()
        return write_json(path, obj)
    sio.write_json = json_then_die
elif point == "publish":                     # the task folder complete in its temp place, not swapped in
    publish = sio.publish_dir
    def publish_then_die(tmp, dest):
        if os.path.basename(str(dest)).startswith("task_"):
            die()
        return publish(tmp, dest)
    sio.publish_dir = publish_then_die
from samc.cli import main
sys.exit(main(sys.argv[1:]))
'''

KILL_POINTS = ["training", "checkpoint", "memory", "metrics", "publish"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_training_job_restarts_to_the_same_metrics(point, project, tmp_path):
    import subprocess
    import sys

    run = _victim(project, tmp_path)
    task1 = _tree_digest(run / "task_1")
    argv = ["train-task", "--params", str(project / "params.yaml"), "--run-dir", str(run), "--task", "2",
            "--no-progress"]
    killed = subprocess.run([sys.executable, "-c", _KILLER, *argv], env={**os.environ, "SAMC_KILL_AT": point},
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, (point, killed.returncode, killed.stderr[-2000:])
    assert not (run / "task_2").exists(), f"{point}: a half-written task folder is visible"
    assert _tree_digest(run / "task_1") == task1
    again = subprocess.run([sys.executable, "-m", "samc.cli", *argv], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    got = json.loads((run / "task_2" / "metrics.json").read_text())
    want = json.loads((project / "run" / "task_2" / "metrics.json").read_text())
    assert got["accuracies"] == want["accuracies"] and got["memory"] == want["memory"]
    assert load_snapshot(run / "task_2" / "memory.zarr").records == \
        load_snapshot(project / "run" / "task_2" / "memory.zarr").records


def test_gpu_out_of_memory_is_reported_clearly(project, tmp_path, caplog, monkeypatch):
    import torch

    import samc.train

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(samc.train, "run_stream", oom)
    with caplog.at_level(logging.ERROR, logger="samc"):
        code = cli.main(["run", "--params", str(project / "params.yaml"), "--out", str(tmp_path / "r")])
    assert code == 3 and "out of GPU memory" in caplog.text and "train.eval_batch_size" in caplog.text
