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
