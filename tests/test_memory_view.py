"""`samc memory show` on memories of any codec: the grid shows decoded images, and completion fills
only what a codec leaves missing."""
import numpy as np
import pytest
from PIL import Image

from samc import memory_view
from samc.train import load_tasks, run_stream
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def tasks():
    return load_tasks(tiny_config("dataset.n_tasks=2", "dataset.shapes_train_per_class=20",
                                  "dataset.shapes_test_per_class=5"))


@pytest.mark.parametrize("codec", ["webp:quality=30", "salient_lowres"])
def test_show_any_codec(tmp_path, tasks, codec, monkeypatch):
    cfg = tiny_config("dataset.n_tasks=2", "train.method=gem", f"memory.codec={codec}")
    run_stream(cfg, tmp_path / "run", progress=False, tasks=tasks)
    completed = []
    real = memory_view.complete

    def spy(images, masks, mode, **kw):
        out = real(images, masks, mode, **kw)
        completed.append((images, kw.get("prefilled", False), out))
        return out

    monkeypatch.setattr(memory_view, "complete", spy)
    png = tmp_path / "grid.png"
    lines = memory_view.show(tmp_path / "run" / "task_1", png=png, n=4)
    text = "\n".join(lines)
    assert codec.split(":")[0] in text and "n_images" in text
    assert Image.open(png).format == "PNG"
    images, prefilled, out = completed[0]
    # whole-image codecs know every pixel, salient_lowres estimates the rest itself: the grid shows
    # the decoded images as they are, never re-inpainted
    assert prefilled == (codec == "salient_lowres")
    np.testing.assert_array_equal((out.numpy() * 255).round().astype(np.uint8), images)


def test_show_labels_counts_from_1_and_finds_the_ground_truth_from_the_run(tmp_path, tasks, monkeypatch):
    from samc.train import run_config

    monkeypatch.chdir(tmp_path)                     # no data/prepared here: the run's config.json is used
    cfg = tiny_config("dataset.n_tasks=2", "dataset.shapes_train_per_class=20", "dataset.shapes_test_per_class=5",
                      "train.method=samc")
    run_stream(cfg, tmp_path / "run", progress=False, tasks=tasks)      # the tasks cfg makes
    assert run_config(tmp_path / "run").to_dict() == {**cfg.to_dict(), "benchmarks": {}}
    shown = {}
    real = memory_view._ground_truth

    def spy(mem, data, rows, run_dir):
        shown["gt"], source = real(mem, data, rows, run_dir)
        shown["rows"], shown["mem"] = rows, mem
        return shown["gt"], source

    monkeypatch.setattr(memory_view, "_ground_truth", spy)
    lines = memory_view.show(tmp_path / "run" / "task_2", png=tmp_path / "g.png", n=3)
    assert "task: 2 (task_2)" in lines[0]
    assert any("ground truth: yes (the run's data: shapes)" in line for line in lines)
    mem = shown["mem"]
    np.testing.assert_array_equal(shown["gt"], tasks[1].x_train[mem.indices[shown["rows"]]])
    kept = next(line for line in lines if "kept_fraction" in line).split(": ")[1]
    assert len(kept.split(".")[1]) <= 4                                    # rounded
    with pytest.raises(FileNotFoundError, match=r"a run folder; give one of its task folders, e.g. .*task_1"):
        memory_view.show(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        memory_view.show(tmp_path / "nope")
    # diff: the value columns line up whatever their widths
    rows = memory_view.diff(tmp_path / "run" / "task_1", tmp_path / "run" / "task_2")
    table = [r for r in rows if not r.lstrip().startswith(("equal", "shared", "mask agreement"))]
    assert len({len(r) for r in table}) == 1, rows
    assert any(r.split()[:3] == ["task", "1", "2"] for r in rows)
