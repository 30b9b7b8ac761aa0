"""Data sources: in-memory datasets from ImageFolder trees, torchvision CIFAR, or the embedded shapes.

Every loader returns ``(train, test)`` as :class:`ArrayDataset` with images ``uint8 (N, C, H, W)``
(RGB, channel-first) and labels ``int64`` (global class ids). Bad input raises :class:`DataError`
whose message names the offending file, folder or parameter.
"""
from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})
SOURCES = ("shapes", "imagefolder", "cifar10", "cifar100")


class DataError(ValueError):
    """Bad data input; the message names the file, folder or parameter and what is wrong."""


@dataclass
class ArrayDataset:
    """An in-memory labelled image set.

    Attributes:
        x: uint8 ``(N, C, H, W)`` RGB images.
        y: int64 ``(N,)`` global class ids ``0..K-1``.
        class_names: ``class_names[k]`` is the name of class id ``k``.
        masks: bool ``(N, H, W)`` ground-truth object masks (shapes dataset only), else ``None``.
    """

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.x.dtype != np.uint8 or self.x.ndim != 4:
            raise DataError(f"ArrayDataset.x must be uint8 (N, C, H, W), got {self.x.dtype} {self.x.shape}")
        if self.y.dtype != np.int64 or self.y.shape != (self.x.shape[0],):
            raise DataError(f"ArrayDataset.y must be int64 ({self.x.shape[0]},), got {self.y.dtype} {self.y.shape}")
        if self.masks is not None and (self.masks.dtype != bool
                                       or self.masks.shape != (self.x.shape[0], *self.x.shape[2:])):
            raise DataError(f"ArrayDataset.masks must be bool (N, H, W) matching x {self.x.shape}, "
                            f"got {self.masks.dtype} {self.masks.shape}")

    def __len__(self) -> int:
        return int(self.x.shape[0])


# --------------------------------------------------------------------------------------------------
# ImageFolder
# --------------------------------------------------------------------------------------------------
def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    files = sorted(
        (p for p in folder.iterdir()
         if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.name,
    )
    if not files:
        raise DataError(f"class folder {folder} holds no image files "
                        f"(expected files ending in one of {sorted(IMAGE_EXTENSIONS)})")
    return files


_FORMAT_HINTS = {".jpg": ("JPEG",), ".jpeg": ("JPEG",), ".png": ("PNG",)}


def _decode(path: Path, image_size: int) -> np.ndarray:
    """One image file -> uint8 (H, W, 3) RGB, bilinear-resized to ``image_size`` when it differs."""
    try:
        data = path.read_bytes()   # one read instead of PIL's many small ones
        hint = _FORMAT_HINTS.get(path.suffix.lower())
        try:
            im = Image.open(io.BytesIO(data), formats=hint)
        except UnidentifiedImageError:
            if hint is None:
                raise
            im = Image.open(io.BytesIO(data))   # misleading extension: let PIL sniff the format
        with im:
            im.load()
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            if rgb.size != (image_size, image_size):
                rgb = rgb.resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot decode image file {path}: {exc}") from exc


def _decode_all(files: Sequence[Path], image_size: int, workers: int) -> np.ndarray:
    """Decode ``files`` into a uint8 ``(N, 3, S, S)`` array (a thread pool when ``workers > 1``)."""
    out = np.empty((len(files), 3, image_size, image_size), np.uint8)   # written in place: no 2x peak

    def work(i: int) -> None:
        out[i] = _decode(files[i], image_size).transpose(2, 0, 1)

    if workers > 1 and len(files) > 256:
        chunks = [range(s, min(s + 512, len(files))) for s in range(0, len(files), 512)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(lambda r: [work(i) for i in r], chunks):
                pass
    else:
        for i in range(len(files)):
            work(i)
    return out


def _check_size(image_size: int) -> int:
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    return int(image_size)


def _check_limit(limit_per_class: int | None) -> int | None:
    if limit_per_class is None:
        return None
    if not isinstance(limit_per_class, (int, np.integer)) or limit_per_class < 1:
        raise DataError(f"limit_per_class must be a positive integer or None, got {limit_per_class!r}")
    return int(limit_per_class)


def _build(files_per_class: list[list[Path]], class_names: list[str], image_size: int,
           workers: int) -> ArrayDataset:
    files = [f for fs in files_per_class for f in fs]
    y = np.repeat(np.arange(len(class_names), dtype=np.int64), [len(fs) for fs in files_per_class])
    return ArrayDataset(x=_decode_all(files, image_size, workers), y=y, class_names=list(class_names))


def load_imagefolder(root: str | os.PathLike[str], image_size: int, limit_per_class: int | None = None,
                     *, train_fraction: float = 5 / 6, workers: int = 1
                     ) -> tuple[ArrayDataset, ArrayDataset]:
    """Load an ImageFolder tree into memory.

    Two layouts are accepted:

    * ``root/train/<class>/*`` and ``root/test/<class>/*`` (CIFAR-10 as unpacked from
      ``cifar10-imagefolder.tar.gz``; mini-ImageNet when shipped pre-split). Both splits must hold
      the same class folders.
    * ``root/<class>/*`` with neither ``train/`` nor ``test/`` (mini-ImageNet as usually shipped,
      600 images per class). A deterministic split is built per class: the files are sorted by
      name, the first ``round(n * train_fraction)`` go to train and the rest to test -- with the
      default ``train_fraction = 5/6`` and 600 files that is the first 500 to train and the last
      100 to test. Each class needs at least 2 files and keeps at least one in each split.

    Class ids are the sorted class folder names (of ``train/`` in the first layout). Within a class,
    files are taken in name order; ``limit_per_class`` keeps the first N of each class in each split
    (after the split, in the second layout). Hidden entries and files without an image extension
    are ignored. Images are decoded with PIL, converted to RGB and resized (bilinear) to
    ``image_size x image_size`` when their size differs.

    Args:
        root: the dataset folder.
        image_size: output side in pixels.
        limit_per_class: keep only the first N files of each class per split (None: all).
        train_fraction: share of each class sent to train in the second layout, in (0, 1).
        workers: decoding threads; 1 (the default) decodes in a plain loop. PIL parses JPEG
            headers in Python under the GIL, so for small images (CIFAR's 32x32) threads gain
            nothing -- the full CIFAR-10 tree (60,000 files) took ~14 s either way on 2 busy cores;
            threads can help for large images, whose decoding releases the GIL.

    Returns:
        ``(train, test)`` as :class:`ArrayDataset`, samples grouped by class in class-id order.

    Raises:
        DataError: naming the path when ``root``, ``train/`` or ``test/`` is missing, there are no
            class folders, the splits' class folders differ, a class folder holds no images, or an
            image file cannot be decoded (unreadable or truncated).
    """
    image_size = _check_size(image_size)
    limit = _check_limit(limit_per_class)
    if not 0.0 < float(train_fraction) < 1.0:
        raise DataError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction!r}")
    workers = max(1, int(workers))
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist or is not a folder")
    train_dir, test_dir = root / "train", root / "test"

    if train_dir.is_dir() or test_dir.is_dir():
        for d in (train_dir, test_dir):
            if not d.is_dir():
                raise DataError(f"split folder {d} is missing (an ImageFolder root needs both train/ and test/)")
        classes = _class_dirs(train_dir)
        if not classes:
            raise DataError(f"no class folders in {train_dir}")
        test_classes = _class_dirs(test_dir)
        for c in classes:
            if c not in test_classes:
                raise DataError(f"class folder {test_dir / c} is missing: "
                                f"class {c!r} is in {train_dir} but not in {test_dir}")
        for c in test_classes:
            if c not in classes:
                raise DataError(f"class folder {train_dir / c} is missing: "
                                f"class {c!r} is in {test_dir} but not in {train_dir}")
        train_files = [_image_files(train_dir / c) for c in classes]
        test_files = [_image_files(test_dir / c) for c in classes]
    else:
        classes = _class_dirs(root)
        if not classes:
            raise DataError(f"no class folders in {root} (expected train/ and test/, or <class>/ folders)")
        train_files, test_files = [], []
        for c in classes:
            files = _image_files(root / c)
            if len(files) < 2:
                raise DataError(f"class folder {root / c} holds {len(files)} image file; "
                                f"at least 2 are needed to split it into train and test")
            n_train = min(max(int(round(len(files) * float(train_fraction))), 1), len(files) - 1)
            train_files.append(files[:n_train])
            test_files.append(files[n_train:])
        log.info("%s has no train/test split: first %s of each class (sorted by name) -> train, rest -> test",
                 root, f"{train_fraction:.4g}")

    if limit is not None:
        train_files = [fs[:limit] for fs in train_files]
        test_files = [fs[:limit] for fs in test_files]
    train = _build(train_files, classes, image_size, workers)
    test = _build(test_files, classes, image_size, workers)
    log.info("loaded %s: %d classes, %d train / %d test images at %dx%d",
             root, len(classes), len(train), len(test), image_size, image_size)
    return train, test


def is_imagefolder(root: str | os.PathLike[str]) -> bool:
    """True when ``root`` has the split ImageFolder layout: ``train/`` and ``test/`` holding class folders."""
    root = Path(root)
    return all((root / s).is_dir() and any(p.is_dir() for p in (root / s).iterdir()) for s in ("train", "test"))


# --------------------------------------------------------------------------------------------------
# torchvision CIFAR
# --------------------------------------------------------------------------------------------------
def _resize_array(x: np.ndarray, image_size: int) -> np.ndarray:
    """Bilinear (PIL) resize of uint8 ``(N, C, H, W)`` images to ``image_size`` when the size differs."""
    if x.shape[2:] == (image_size, image_size):
        return x
    hwc = x.transpose(0, 2, 3, 1)
    out = np.stack([np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BILINEAR))
                    for im in hwc])
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def load_torchvision(name: str, root: str | os.PathLike[str], download: bool, image_size: int = 32
                     ) -> tuple[ArrayDataset, ArrayDataset]:
    """CIFAR-10 or CIFAR-100 (fine labels) through ``torchvision.datasets``.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: folder holding (or to receive) ``cifar-10-batches-py`` / ``cifar-100-python``.
        download: let torchvision fetch the archive when it is absent.
        image_size: output side; images are resized (bilinear) when it is not 32.

    Raises:
        DataError: unknown name, or the data is absent/corrupted (naming the folder looked in and,
            when ``download`` is false, that ``dataset.download: true`` would fetch it).
    """
    from torchvision import datasets

    classes = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}
    if name not in classes:
        raise DataError(f"load_torchvision: unknown dataset name {name!r}; allowed: {sorted(classes)}")
    image_size = _check_size(image_size)
    cls = classes[name]
    if root is None:
        raise DataError(f"dataset.root is required for dataset {name!r} (the folder holding {cls.base_folder}/)")
    root = Path(root)
    where = root / cls.base_folder
    if not download and not where.is_dir():
        raise DataError(f"{name} not found: looked for {where} (torchvision format); "
                        f"set dataset.download: true to fetch it into {root}")
    out = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=download)
        except (RuntimeError, OSError, ValueError, KeyError, EOFError) as exc:
            hint = "" if download else "; set dataset.download: true to fetch it again"
            raise DataError(f"{name} could not be loaded from {where}: {exc}{hint}") from exc
        x = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2))
        out.append(ArrayDataset(x=_resize_array(x, image_size), y=np.asarray(ds.targets, dtype=np.int64),
                                class_names=[str(c) for c in ds.classes]))
    log.info("loaded %s from %s: %d train / %d test images", name, where, len(out[0]), len(out[1]))
    return out[0], out[1]


# --------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------
def load_source(name: str, *, root: str | os.PathLike[str] | None = None, image_size: int = 32,
                download: bool = False, seed: int = 0, limit_per_class: int | None = None,
                shapes_train_per_class: int = 500, shapes_test_per_class: int = 100
                ) -> tuple[ArrayDataset, ArrayDataset]:
    """Load ``(train, test)`` of the named source.

    * ``shapes``: the embedded generated dataset (:func:`samc.data.shapes.load_shapes`) with
      ``shapes_*_per_class`` images per class (capped by ``limit_per_class``), ``seed`` and
      ``image_size``; ``root``/``download`` are ignored.
    * ``imagefolder``: :func:`load_imagefolder` on ``root`` (required).
    * ``cifar10`` / ``cifar100``: :func:`load_imagefolder` when ``root`` has the split ImageFolder
      layout (``train/`` and ``test/`` class folders), else :func:`load_torchvision`.
    """
    if name not in SOURCES:
        raise DataError(f"unknown dataset name {name!r}; allowed: {', '.join(SOURCES)}")
    limit = _check_limit(limit_per_class)
    if name == "shapes":
        from samc.data.shapes import load_shapes

        n_train, n_test = shapes_train_per_class, shapes_test_per_class
        if limit is not None:
            n_train, n_test = min(n_train, limit), min(n_test, limit)
        return load_shapes(n_train, n_test, seed, image_size)
    if root is None:
        raise DataError(f"dataset.root is required for dataset {name!r}")
    if name == "imagefolder" or is_imagefolder(root):
        return load_imagefolder(root, image_size, limit)
    train, test = load_torchvision(name, root, download, image_size)
    if limit is not None:
        train, test = _limit(train, limit), _limit(test, limit)
    return train, test


def _limit(ds: ArrayDataset, limit: int) -> ArrayDataset:
    """Keep the first ``limit`` samples (in dataset order) of each class."""
    keep = np.zeros(len(ds), bool)
    for k in range(len(ds.class_names)):
        keep[np.flatnonzero(ds.y == k)[:limit]] = True
    masks = None if ds.masks is None else ds.masks[keep]
    return ArrayDataset(x=ds.x[keep], y=ds.y[keep], class_names=list(ds.class_names), masks=masks)
