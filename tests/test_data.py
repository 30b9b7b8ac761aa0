"""Tests of samc.data: the embedded shapes dataset, the ImageFolder / torchvision loaders, task splits."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samc.data import (
    SHAPE_CLASSES,
    ArrayDataset,
    DataError,
    Task,
    load_imagefolder,
    load_shapes,
    load_source,
    load_torchvision,
    make_shapes,
    split_tasks,
)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --------------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes40() -> ArrayDataset:
    return make_shapes(40, seed=3)


def test_shapes_deterministic_per_seed() -> None:
    a, b, c = make_shapes(3, seed=7), make_shapes(3, seed=7), make_shapes(3, seed=8)
    assert a.x.tobytes() == b.x.tobytes() and a.masks.tobytes() == b.masks.tobytes()
    assert np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)
    assert not np.array_equal(a.masks, c.masks)


def test_shapes_arrays(shapes40: ArrayDataset) -> None:
    d = shapes40
    assert d.x.dtype == np.uint8 and d.x.shape == (400, 3, 32, 32) and d.x.flags.c_contiguous
    assert d.y.dtype == np.int64 and d.y.shape == (400,)
    assert d.masks is not None and d.masks.dtype == bool and d.masks.shape == (400, 32, 32)
    assert d.class_names == SHAPE_CLASSES and len(set(SHAPE_CLASSES)) == 10
    assert np.array_equal(np.bincount(d.y, minlength=10), np.full(10, 40))
    assert make_shapes(1, seed=0, size=48).x.shape == (10, 3, 48, 48)


def test_shapes_masks_are_objects_inside_the_image(shapes40: ArrayDataset) -> None:
    d = shapes40
    area = d.masks.sum(axis=(1, 2))
    assert area.min() > 0.02 * 32 * 32, "every image has a visible object"
    assert area.max() < 0.6 * 32 * 32, "the object never fills the image"
    # mostly inside: the mask's centroid is well inside the frame
    ys, xs = np.mgrid[0:32, 0:32]
    cy = (d.masks * ys).sum(axis=(1, 2)) / area
    cx = (d.masks * xs).sum(axis=(1, 2)) / area
    assert cy.min() > 2 and cy.max() < 29 and cx.min() > 2 and cx.max() < 29
    # the object stands out from the background around it
    img = d.x.astype(np.float32).transpose(0, 2, 3, 1)
    inside = np.stack([img[i][d.masks[i]].mean(axis=0) for i in range(len(d))])
    outside = np.stack([img[i][~d.masks[i]].mean(axis=0) for i in range(len(d))])
    assert np.median(np.linalg.norm(inside - outside, axis=1)) > 60


def test_shapes_class_lives_in_the_object_not_the_background(shapes40: ArrayDataset) -> None:
    d = shapes40
    img = d.x.astype(np.float32).transpose(0, 2, 3, 1)
    bg = np.stack([img[i][~d.masks[i]].mean(axis=0) for i in range(len(d))])    # (N, 3) per image
    obj = np.stack([img[i][d.masks[i]].mean(axis=0) for i in range(len(d))])
    # the background colour is class-independent: each class's mean lies within sampling noise of
    # the overall mean (|z| < 4.5 for all 10 classes x 3 channels; a loose check)
    class_means = np.stack([bg[d.y == k].mean(axis=0) for k in range(10)])
    z = (class_means - bg.mean(axis=0)) / (bg.std(axis=0) / np.sqrt(40))
    assert np.abs(z).max() < 4.5, z
    # the object's colour carries the class (its hue), far beyond sampling noise
    class_means = np.stack([obj[d.y == k].mean(axis=0) for k in range(10)])
    z = (class_means - obj.mean(axis=0)) / (obj.std(axis=0) / np.sqrt(40))
    assert np.abs(z).max() > 6, z
    # ... while the object outline differs: mean mask area and mean mask shape per class
    area = np.array([d.masks[d.y == k].sum(axis=(1, 2)).mean() for k in range(10)])
    assert area.max() / area.min() > 1.8
    fill = {k: d.masks[d.y == k].mean(axis=0) for k in range(10)}
    centre = np.s_[12:20, 12:20]
    ring, circle = SHAPE_CLASSES.index("ring"), SHAPE_CLASSES.index("circle")
    assert fill[circle][centre].mean() > 1.5 * fill[ring][centre].mean()   # the ring's hole


def test_load_shapes_splits_are_independent_streams() -> None:
    train, test = load_shapes(4, 2, seed=5)
    assert len(train) == 40 and len(test) == 20
    train2, test2 = load_shapes(6, 2, seed=5)
    assert np.array_equal(test.x, test2.x), "the test set does not depend on the train size"
    assert not any(np.array_equal(a, b) for a in test.x[:5] for b in train.x)


def test_shapes_bad_parameters() -> None:
    with pytest.raises(DataError, match="n_per_class"):
        make_shapes(0, seed=0)
    with pytest.raises(DataError, match="size"):
        make_shapes(1, seed=0, size=8)


# --------------------------------------------------------------------------------------------------
# ImageFolder
# --------------------------------------------------------------------------------------------------
def _copy_tree(src: Path, dst: Path, classes: int = 3, per_class: int = 2) -> Path:
    """A small writable copy of an ImageFolder tree: the first classes and files of each split."""
    for split in ("train", "test"):
        for cdir in sorted((src / split).iterdir())[:classes]:
            (dst / split / cdir.name).mkdir(parents=True)
            for f in sorted(cdir.iterdir())[:per_class]:
                shutil.copy(f, dst / split / cdir.name / f.name)
    return dst


def test_imagefolder_cifar10_slice(cifar10_slice: Path) -> None:
    train, test = load_imagefolder(cifar10_slice, 32)
    assert train.class_names == CIFAR10_CLASSES == test.class_names
    assert train.x.shape == (200, 3, 32, 32) and test.x.shape == (200, 3, 32, 32)
    assert train.x.dtype == np.uint8 and train.y.dtype == np.int64 and train.masks is None
    assert np.array_equal(train.y, np.repeat(np.arange(10), 20))
    assert np.array_equal(np.bincount(test.y), np.full(10, 20))
    # values: the PIL decoding of the file, channel-first; order: sorted names within a class
    f = cifar10_slice / "train" / "cat" / "0003.jpg"
    ref = np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(train.x[3 * 20 + 3], ref)
    ref_test = np.asarray(Image.open(cifar10_slice / "test" / "truck" / "0019.jpg").convert("RGB"))
    assert np.array_equal(test.x[-1], ref_test.transpose(2, 0, 1))

    small, small_test = load_imagefolder(cifar10_slice, 32, limit_per_class=5)
    assert len(small) == 50 and len(small_test) == 50
    assert np.array_equal(small.x, train.x[np.tile(np.arange(20) < 5, 10)])


def test_imagefolder_resize(cifar10_slice: Path) -> None:
    train, test = load_imagefolder(cifar10_slice, 16, limit_per_class=2)
    assert train.x.shape == (20, 3, 16, 16) and test.x.shape == (20, 3, 16, 16)
    ref = Image.open(cifar10_slice / "train" / "bird" / "0001.jpg").convert("RGB").resize((16, 16), Image.BILINEAR)
    assert np.array_equal(train.x[2 * 2 + 1], np.asarray(ref).transpose(2, 0, 1))


def test_imagefolder_without_test_split(tmp_path: Path) -> None:
    """``root/<class>/*`` only: the first round(n * train_fraction) sorted files go to train."""
    root = tmp_path / "mini"
    for c, cname in enumerate(["n01", "n02", "n03"]):
        (root / cname).mkdir(parents=True)
        for i in range(6):   # pixel value encodes (class, file index); PNG keeps it exact
            Image.fromarray(np.full((10, 12, 3), 40 * c + i, np.uint8)).save(root / cname / f"img_{i:02d}.png")
    (root / "n02" / "notes.txt").write_text("ignored: not an image")
    train, test = load_imagefolder(root, 8)   # default train_fraction = 5/6: 600 -> 500/100, here 6 -> 5/1
    assert train.class_names == ["n01", "n02", "n03"]
    assert train.x.shape == (15, 3, 8, 8) and test.x.shape == (3, 3, 8, 8)
    assert train.x[:, 0, 0, 0].tolist() == [40 * c + i for c in range(3) for i in range(5)]
    assert test.x[:, 0, 0, 0].tolist() == [40 * c + 5 for c in range(3)]
    assert train.y.tolist() == [0] * 5 + [1] * 5 + [2] * 5 and test.y.tolist() == [0, 1, 2]
    half_train, half_test = load_imagefolder(root, 8, train_fraction=0.5)
    assert len(half_train) == 9
    assert half_test.x[:, 0, 0, 0].tolist() == [40 * c + i for c in range(3) for i in (3, 4, 5)]
    lim_train, lim_test = load_imagefolder(root, 8, limit_per_class=2)
    assert len(lim_train) == 6 and len(lim_test) == 3


def test_imagefolder_errors(cifar10_slice: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=str(missing)):
        load_imagefolder(missing, 32)

    no_test = _copy_tree(cifar10_slice, tmp_path / "no_test")
    shutil.rmtree(no_test / "test")
    with pytest.raises(DataError, match=str(no_test / "test")):
        load_imagefolder(no_test, 32)

    empty_root = tmp_path / "empty_root"
    empty_root.mkdir()
    with pytest.raises(DataError, match=str(empty_root)):
        load_imagefolder(empty_root, 32)

    test_class = _copy_tree(cifar10_slice, tmp_path / "test_class")
    shutil.rmtree(test_class / "test" / "automobile")
    with pytest.raises(DataError, match=str(test_class / "test" / "automobile")):
        load_imagefolder(test_class, 32)

    extra_class = _copy_tree(cifar10_slice, tmp_path / "extra_class")
    (extra_class / "test" / "zebra").mkdir()
    with pytest.raises(DataError, match=str(extra_class / "train" / "zebra")):
        load_imagefolder(extra_class, 32)

    empty_class = _copy_tree(cifar10_slice, tmp_path / "empty_class")
    for f in (empty_class / "train" / "bird").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=str(empty_class / "train" / "bird")):
        load_imagefolder(empty_class, 32)

    truncated = _copy_tree(cifar10_slice, tmp_path / "truncated")
    bad = truncated / "test" / "airplane" / "0001.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=str(bad)):
        load_imagefolder(truncated, 32)

    garbage = _copy_tree(cifar10_slice, tmp_path / "garbage")
    bad = garbage / "train" / "bird" / "0000.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=str(bad)):
        load_imagefolder(garbage, 32)

    with pytest.raises(DataError, match="limit_per_class"):
        load_imagefolder(cifar10_slice, 32, limit_per_class=0)


# --------------------------------------------------------------------------------------------------
# torchvision CIFAR (fake files in the real pickle format)
# --------------------------------------------------------------------------------------------------
def _pickle(path: Path, obj: dict) -> None:
    # The official files are Python 2 pickles; read with encoding="latin1" their keys come back as
    # str, which is what torchvision indexes with ("data", "labels", ...).
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def _fake_images(n: int, offset: int) -> np.ndarray:
    """(n, 3072) uint8 rows in CIFAR order (R plane, G plane, B plane); pixel (0,0,c) = offset + 10*c + i."""
    x = np.zeros((n, 3, 32, 32), np.uint8)
    for i in range(n):
        for c in range(3):
            x[i, c] = (offset + 10 * c + i) % 256
        x[i, 0, 5, 7] = 255   # an off-diagonal marker to catch H/W transposition
    return x.reshape(n, 3072)


@pytest.fixture
def fake_integrity(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)   # the meta file's md5


def test_torchvision_cifar10_fake(tmp_path: Path, fake_integrity: None) -> None:
    base = tmp_path / "cifar-10-batches-py"
    for b in range(1, 6):
        _pickle(base / f"data_batch_{b}", {"data": _fake_images(2, 20 * b), "labels": [b % 10, (b + 1) % 10]})
    _pickle(base / "test_batch", {"data": _fake_images(3, 200), "labels": [9, 8, 7]})
    _pickle(base / "batches.meta", {"label_names": CIFAR10_CLASSES})
    train, test = load_torchvision("cifar10", tmp_path, download=False)
    assert train.x.shape == (10, 3, 32, 32) and test.x.shape == (3, 3, 32, 32) and train.x.dtype == np.uint8
    assert train.y.dtype == np.int64 and train.y.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert test.y.tolist() == [9, 8, 7] and train.class_names == CIFAR10_CLASSES
    assert np.array_equal(train.x.reshape(10, 3072), np.concatenate([_fake_images(2, 20 * b) for b in range(1, 6)]))
    assert train.x[0, 0, 5, 7] == 255 and train.x[0, 0, 7, 5] != 255
    # load_source: a root without the ImageFolder layout goes to torchvision
    src_train, _ = load_source("cifar10", root=tmp_path, limit_per_class=1)
    assert src_train.y.tolist() == [1, 2, 3, 4, 5, 6]
    small, _ = load_torchvision("cifar10", tmp_path, download=False, image_size=16)
    assert small.x.shape == (10, 3, 16, 16)


def test_torchvision_cifar100_fake(tmp_path: Path, fake_integrity: None) -> None:
    names = [f"class_{i:02d}" for i in range(100)]
    base = tmp_path / "cifar-100-python"
    _pickle(base / "train", {"data": _fake_images(4, 0), "fine_labels": [99, 0, 42, 7], "coarse_labels": [0, 1, 2, 3]})
    _pickle(base / "test", {"data": _fake_images(2, 50), "fine_labels": [5, 6], "coarse_labels": [0, 0]})
    _pickle(base / "meta", {"fine_label_names": names, "coarse_label_names": [f"c{i}" for i in range(20)]})
    train, test = load_source("cifar100", root=tmp_path)
    assert train.y.tolist() == [99, 0, 42, 7] and test.y.tolist() == [5, 6]
    assert train.class_names == names and test.class_names == names
    assert np.array_equal(test.x.reshape(2, 3072), _fake_images(2, 50))


def test_torchvision_missing_data(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_torchvision("cifar100", tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "cifar-100-python") in msg and "dataset.download: true" in msg
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_source("cifar10", root=tmp_path / "absent")
    with pytest.raises(DataError, match="allowed"):
        load_torchvision("svhn", tmp_path, download=False)


# --------------------------------------------------------------------------------------------------
# load_source
# --------------------------------------------------------------------------------------------------
def test_load_source_dispatch(cifar10_slice: Path) -> None:
    train, test = load_source("shapes", seed=2, shapes_train_per_class=3, shapes_test_per_class=2)
    ref_train, ref_test = load_shapes(3, 2, seed=2)
    assert np.array_equal(train.x, ref_train.x) and np.array_equal(test.x, ref_test.x)
    lim, _ = load_source("shapes", seed=2, limit_per_class=1, shapes_train_per_class=3, shapes_test_per_class=2)
    assert len(lim) == 10

    a, _ = load_source("cifar10", root=cifar10_slice, limit_per_class=3)   # ImageFolder layout
    b, _ = load_source("imagefolder", root=cifar10_slice, limit_per_class=3)
    assert len(a) == 30 and np.array_equal(a.x, b.x) and a.class_names == CIFAR10_CLASSES

    with pytest.raises(DataError) as err:
        load_source("mnist")
    assert all(n in str(err.value) for n in ("shapes", "imagefolder", "cifar10", "cifar100"))
    with pytest.raises(DataError, match="root"):
        load_source("imagefolder")


# --------------------------------------------------------------------------------------------------
# split_tasks
# --------------------------------------------------------------------------------------------------
def test_split_tasks_sequential() -> None:
    train, test = load_shapes(3, 2, seed=1)
    tasks = split_tasks(train, test, n_tasks=5, classes_per_task=2)
    assert len(tasks) == 5 and all(isinstance(t, Task) for t in tasks)
    assert [t.classes for t in tasks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [t.index for t in tasks] == list(range(5))
    for t in tasks:
        assert t.class_names == [SHAPE_CLASSES[c] for c in t.classes]
        keep = np.isin(train.y, t.classes)
        assert np.array_equal(t.x_train, train.x[keep]), "original sample order preserved"
        assert np.array_equal(t.masks_train, train.masks[keep])
        assert t.y_train.dtype == np.int64 and t.y_test.dtype == np.int64
        assert np.array_equal(np.asarray(t.classes)[t.y_train], train.y[keep])
        assert np.array_equal(np.asarray(t.classes)[t.y_test], test.y[np.isin(test.y, t.classes)])
        assert t.x_test.shape == (4, 3, 32, 32) and t.masks_test.shape == (4, 32, 32)
    # fewer classes than the dataset has: the rest is left out
    assert [t.classes for t in split_tasks(train, test, 3, 3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_split_tasks_permuted() -> None:
    train, test = load_shapes(2, 1, seed=1)
    a = split_tasks(train, test, 5, 2, class_order="permuted", seed=4)
    b = split_tasks(train, test, 5, 2, class_order="permuted", seed=4)
    c = split_tasks(train, test, 5, 2, class_order="permuted", seed=5)
    order = [k for t in a for k in t.classes]
    assert order == [k for t in b for k in t.classes]
    assert sorted(order) == list(range(10)) and order != list(range(10))
    assert order != [k for t in c for k in t.classes]
    t = a[0]
    assert np.array_equal(np.asarray(t.classes)[t.y_train], train.y[np.isin(train.y, t.classes)])
    assert set(t.y_train.tolist()) == {0, 1}


def test_split_tasks_errors(cifar10_slice: Path) -> None:
    train, test = load_shapes(1, 1, seed=0)
    with pytest.raises(DataError, match="n_tasks"):
        split_tasks(train, test, 6, 2)
    with pytest.raises(DataError, match="class_order"):
        split_tasks(train, test, 5, 2, class_order="random")
    with pytest.raises(DataError, match="classes_per_task"):
        split_tasks(train, test, 5, 0)
    cifar_train, cifar_test = load_imagefolder(cifar10_slice, 32, limit_per_class=1)
    with pytest.raises(DataError, match="class_names"):
        split_tasks(train, cifar_test, 5, 2)
    masks_free = split_tasks(cifar_train, cifar_test, 5, 2)
    assert masks_free[0].masks_train is None and masks_free[4].class_names == ["ship", "truck"]
