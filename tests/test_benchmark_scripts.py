"""The measurement scripts in benchmarks/ run end to end on a tiny shapes stream (their numbers are
measured by running them, not here): each prints the table it promises."""
import json
import re
import subprocess
import sys

import numpy as np

from samc.data.store import dataset_params, write_tasks
from samc.train import load_tasks, run_stream
from tests.helpers import ROOT, tiny_config


def test_memory_fidelity_prints_one_row_per_memory(tmp_path):
    cfg = tiny_config("dataset.n_tasks=2", "dataset.shapes_train_per_class=30", "dataset.shapes_test_per_class=10")
    write_tasks(load_tasks(cfg), tmp_path / "prepared", dataset_params(cfg))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_fidelity.py"), "--data",
                          str(tmp_path / "prepared"), "--draws", "2", "--ae-steps", "3", "--ae-pairs", "16",
                          "--budget", "4"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {}
    for line in out.stdout.splitlines():
        m = re.match(r"^(GEM.*?|SAMC.*?|codec \S+)\s+(\d+\.\d)\s+(-?\d\.\d{3}) ± (\d\.\d{3})\s+(-?\d\.\d{3}) ± "
                     r"(\d\.\d{3})\s+(-?\d\.\d{3})\s+(.*)$", line)
        if m:
            rows[m.group(1).strip()] = (float(m.group(2)), float(m.group(3)), float(m.group(5)), m.group(8).split())
            assert -1.0 <= float(m.group(7)) <= 1.0
    codecs = {f"codec {c}" for c in ("raw", "lossless", "jxl", "jxl:distance=2", "webp", "sparse",
                                     "salient_lowres", "salient_blur")}
    assert set(rows) == {"GEM, dense", "GEM, dense, SAMC's count", "SAMC mu 0.4", "SAMC mu 0.6",
                         "SAMC mu 0.6, random mask", "SAMC mu 0.6, inverted mask", "SAMC mu 0.8",
                         "SAMC mu 0.6, Telea only", "SAMC mu 0.6, authors' settings"} | codecs, out.stdout
    assert rows["GEM, dense"][0] == 4.0                      # the budget, in dense images
    assert rows["SAMC mu 0.8"][0] >= rows["SAMC mu 0.4"][0] and rows["SAMC mu 0.8"][0] > 4.0   # sparser: more fit
    assert all(-1.0 <= cos <= 1.0 and -1.0 <= cos_train <= 1.0 for _, cos, cos_train, _ in rows.values())
    # raw records are the dense images: the same count, the same images (nothing lost, cos 1 to dense)
    assert rows["codec raw"][0] == 4.0 and rows["codec raw"][3][:3] == ["1.000", "0.0000", "0.00000"]
    assert rows["codec lossless"][3][1:3] == ["0.0000", "0.00000"] and rows["codec lossless"][0] > 4.0
    assert rows["codec webp"][0] > rows["codec lossless"][0] and float(rows["codec webp"][3][2]) > 0
    # codec rows alone, and a bad spec named
    only = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_fidelity.py"), "--data",
                           str(tmp_path / "prepared"), "--draws", "1", "--budget", "4", "--rows", "codecs",
                           "--codecs", "raw", "webp:quality=20"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert only.returncode == 0, only.stderr[-2000:]
    assert "codec webp:quality=20" in only.stdout and "SAMC mu" not in only.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_fidelity.py"), "--data",
                          str(tmp_path / "prepared"), "--codecs", "webp:quality=500"], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert bad.returncode == 2 and "--codecs" in bad.stderr and "quality" in bad.stderr, bad.stderr


def test_bench_speed_prints_every_table(tmp_path):
    run = tmp_path / "gem-run"
    run_stream(tiny_config("train.method=gem", "dataset.n_tasks=2"), run, progress=False)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_speed.py"), "--repeats", "1",
                          "--warmup", "0", "--past", "1", "--runs", str(run)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"^\s+10(\s+\d+\.\d){3}\s+\d+\.\d\d\s+\d+\.\d\d$", out.stdout, re.M), out.stdout
    for layout in ("fp32", "fp32\\+CL"):
        steps = re.findall(rf"^\s+{layout}\s+(plain SGD|GEM K=1 \w+(?: 1)?)\s+(\d+\.\d)", out.stdout, re.M)
        assert [s for s, _ in steps] == ["plain SGD", "GEM K=1 exact", "GEM K=1 sample 1", "GEM K=1 batched"], out.stdout
    diffs = [float(d) for d in re.findall(r"^\s+(?:4|19)\s+\S+\s+\S+\s+(\S+)$", out.stdout, re.M)]
    assert len(diffs) == 2 and all(d < 1e-5 for d in diffs), out.stdout
    whole = re.search(r"^\s+gem-run\s+2\s+(\d+)((?:\s+\d+\.\d){9})$", out.stdout, re.M)
    assert whole, out.stdout
    shares = [float(v) for v in whole.group(2).split()]
    assert abs(sum(shares) - 100) < 0.5 and shares[0] > 0 and shares[1] > 0      # memory grads, train step


def test_device_runs_runs_an_artifact_in_parallel_and_collects_its_results(tmp_path):
    """The lease driver on the quick benchmark's gap runs (CPU): results come back, ready for `samc table`."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_runs.py"), "--benchmark", "quick",
                          "--runs", "gem-s0", "--parallel", "2", "--out", str(tmp_path / "out"),
                          "--set", "train.device=cpu", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("gem-s0",):
        metrics = json.loads((tmp_path / "out" / "results" / "quick" / name / "metrics.json").read_text())
        assert len(metrics["accuracy_matrix"]) == 2 and metrics["experiment"] == f"quick/{name}"
        assert (tmp_path / "runs" / "quick" / name / "task_2" / "metrics.json").is_file()   # not the checkout's runs/
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_runs.py"), "--benchmark", "quick",
                          "--runs", "gem-s0", "--out", str(tmp_path / "x"), "--set", "samc.mu=0.3"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "samc.mu=0.3" in bad.stderr


def test_codec_bytes_prints_one_row_per_codec(tmp_path):
    """benchmarks/codec_bytes.py on a small ImageFolder: every codec, raw at exactly C*H*W bytes."""
    from PIL import Image

    from samc.memory import CODECS

    rng = np.random.default_rng(0)
    for k in range(4):
        folder = tmp_path / "imgs" / f"c{k % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "codec_bytes.py"), "--root",
                          str(tmp_path / "imgs"), "--n", "4"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("| ") and not ln.startswith("| codec")
             and not ln.startswith("| ---")]
    assert [ln.split(" | ")[0][2:] for ln in lines] == list(CODECS)
    assert lines[0].split(" | ")[1] == str(3 * 16 * 16)


def test_demo_prints_the_table_and_checks_the_readmes_promises(tmp_path):
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["dataset"].update(n_tasks=2, shapes_train_per_class=10, shapes_test_per_class=5)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    argv = [sys.executable, str(ROOT / "benchmarks" / "demo.py"), "--params", str(tmp_path / "params.yaml"),
            "--methods", "finetune", "gem", "--seeds", "0", "1", "--out", str(tmp_path / "runs")]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    rows = [line.split(" | ") for line in out.stdout.splitlines() if re.match(r"^\| (finetune|gem) \| \d", line)]
    assert [(r[0], r[1]) for r in rows] == [("| finetune", "0"), ("| finetune", "1"), ("| gem", "0"), ("| gem", "1")]
    verdicts = [line for line in out.stdout.splitlines() if line.startswith(("ok ", "FAIL "))]
    assert len(verdicts) == 4 + 2 + 2                     # learned (per run), finetune's BWT, gem ahead
    assert out.returncode == (1 if any(v.startswith("FAIL") for v in verdicts) else 0), out.stderr[-2000:]
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.stdout == out.stdout                      # the runs are read back, not retrained
