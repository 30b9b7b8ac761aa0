"""samc.compare and `samc compare`: runs paired by seed, per-seed rows, the summary, bad input."""
import json

import pytest

from samc import cli
from samc.compare import Pair, compare, load_result, seed_of
from samc.train import run_stream
from tests.helpers import tiny_config


def _result(folder, acc, bwt, seed=None, wall=100.0):
    folder.mkdir(parents=True)
    d = {"acc": acc, "bwt": bwt, "wall_s": wall}
    if seed is not None:
        d["seed"] = seed
    (folder / "metrics.json").write_text(json.dumps(d))
    return folder


def test_runs_are_paired_by_seed_not_by_order(tmp_path):
    a = [_result(tmp_path / f"a-s{s}", 70.0 + s, -10.0, wall=200.0) for s in range(3)]
    b = [_result(tmp_path / f"b{s}", 69.0 + s, -12.0, seed=s) for s in (2, 0, 1)]
    per_seed, summary = compare([Pair("a vs b", a, b)], names=("a", "b"))
    assert [r["seed"] for r in per_seed] == [0, 1, 2]
    assert all(r["ΔACC"] == 1.0 and r["ΔBWT"] == 2.0 for r in per_seed)
    assert summary[0]["ΔACC [95% CI]"] == "+1.00 [+1.00, +1.00]" and summary[0]["ΔACC excludes 0"]
    assert summary[0]["wall a / b"] == 2.0


def test_unmatched_seeds_and_unnamed_folders_are_refused(tmp_path):
    a = [_result(tmp_path / "a-s0", 70, -10), _result(tmp_path / "a-s1", 71, -10)]
    b = [_result(tmp_path / "b-s0", 70, -10), _result(tmp_path / "b-s2", 71, -10)]
    with pytest.raises(ValueError, match="seeds differ"):
        compare([Pair("x", a, b)])
    odd = _result(tmp_path / "odd", 70, -10)
    with pytest.raises(ValueError, match="odd: no seed"):
        seed_of(odd, load_result(odd))
    with pytest.raises(FileNotFoundError, match="missing"):
        load_result(tmp_path / "missing")


def test_a_run_folder_is_read_from_its_task_metrics(tmp_path):
    cfg = tiny_config("train.method=finetune", "dataset.n_tasks=2")
    full = run_stream(cfg, tmp_path / "ft-s0", progress=False)
    got = load_result(tmp_path / "ft-s0")
    assert got["acc"] == pytest.approx(full["acc"]) and got["bwt"] == pytest.approx(full["bwt"])


def test_cli_writes_markdown_and_csv_and_exits_2_on_a_missing_run(tmp_path, caplog):
    a = [_result(tmp_path / f"x-s{s}", 70.0 + s, -10.0) for s in range(2)]
    b = [_result(tmp_path / f"y-s{s}", 71.0, -11.0) for s in range(2)]
    out = tmp_path / "out" / "cmp"
    argv = ["compare", "--pair", "x vs y", " ".join(map(str, a)), " ".join(map(str, b)), "--out", str(out),
            "--a-name", "x", "--b-name", "y", "--note", "protocol"]
    assert cli.main(argv) == 0
    md = (tmp_path / "out" / "cmp.md").read_text()
    assert "Paired difference (x − y)" in md and "protocol" in md and "| x vs y | 1 |" in md
    assert (tmp_path / "out" / "cmp.csv").read_text().splitlines()[0].startswith("comparison,seed,ACC x,ACC y")
    argv[3] = str(tmp_path / "gone-s0")
    assert cli.main(argv) == 2
    assert "gone-s0" in caplog.text
