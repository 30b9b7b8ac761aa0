"""samc.io: atomic writes keep the umask's mode; a failed start leaves no run folder behind."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from samc import cli, io
from tests.helpers import ROOT


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_get_the_mode_of_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        io.write_json(tmp_path / "m.json", {"a": 1})
        io.write_text(tmp_path / "t.md", "x")
        io.write_bytes(tmp_path / "b.bin", b"x")
        io.save_torch(tmp_path / "s.pt", {"a": 1})
    finally:
        os.umask(old)
    for name in ("m.json", "t.md", "b.bin", "s.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_run_lock_removes_a_folder_it_made_when_nothing_was_written(tmp_path):
    with pytest.raises(RuntimeError):
        with io.run_lock(tmp_path / "new"):
            raise RuntimeError("failed before any output")
    assert not (tmp_path / "new").exists()
    with io.run_lock(tmp_path / "kept"):          # something written: the folder stays
        (tmp_path / "kept" / "task_1").mkdir()
    assert (tmp_path / "kept" / "task_1").is_dir()
    (tmp_path / "old").mkdir()                     # a folder that was there before stays
    with io.run_lock(tmp_path / "old"):
        pass
    assert (tmp_path / "old").is_dir()


@pytest.mark.parametrize("override", ["dataset.root=/nonexistent", "train.device=cuda"])
def test_a_run_that_fails_at_the_start_leaves_nothing(tmp_path, caplog, override, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "runs" / "r"
    sets = ["--set", "dataset.name=cifar10", "--set", override] if "root" in override else ["--set", override]
    with caplog.at_level(logging.ERROR, logger="samc"):
        code = cli.main(["run", "--params", str(ROOT / "params.yaml"), *sets, "--out", str(out), "--no-progress"])
    assert code == 2, caplog.text
    assert not out.exists() and not any((tmp_path / "runs").iterdir())


def test_tests_run_outside_the_checkout():
    """conftest's autouse fixture: a test's relative paths (data/prepared, runs/, results/) are its own."""
    assert not Path.cwd().resolve().is_relative_to(ROOT.resolve())
    assert not any(Path.cwd().iterdir())
