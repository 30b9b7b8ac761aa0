"""Split a labelled dataset into a sequence of tasks of disjoint classes (Split CIFAR-10/100, ...)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from samc.data.sources import ArrayDataset, DataError

log = logging.getLogger(__name__)

CLASS_ORDERS = ("sequential", "permuted")


@dataclass
class Task:
    """One task of a class-split benchmark.

    Attributes:
        index: 0-based task id.
        classes: global class ids of the task; the LOCAL label of a sample is the position of its
            class in this list.
        class_names: names of ``classes``, same order.
        x_train, x_test: uint8 ``(N, C, H, W)`` images.
        y_train, y_test: int64 LOCAL labels ``0..len(classes)-1``.
        masks_train, masks_test: bool ``(N, H, W)`` object masks when the source has them, else None.
    """

    index: int
    classes: list[int]
    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    masks_train: np.ndarray | None = None
    masks_test: np.ndarray | None = None


def class_sequence(n_classes: int, order: str = "sequential", seed: int = 0) -> list[int]:
    """Global class ids in task order: ``0..K-1`` or a permutation drawn from ``default_rng(seed)``."""
    if order == "sequential":
        return list(range(n_classes))
    if order == "permuted":
        return [int(c) for c in np.random.default_rng(seed).permutation(n_classes)]
    raise DataError(f"class_order must be one of {CLASS_ORDERS}, got {order!r}")


def _select(ds: ArrayDataset, classes: list[int], split: str, names: list[str]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    keep = np.isin(ds.y, classes)
    local = np.full(len(names), -1, np.int64)
    local[classes] = np.arange(len(classes))
    y = local[ds.y[keep]]
    for j, c in enumerate(classes):
        if not np.any(y == j):
            raise DataError(f"class {names[c]!r} (id {c}) has no {split} samples")
    masks = None if ds.masks is None else ds.masks[keep]
    return ds.x[keep], y, masks


def split_tasks(train: ArrayDataset, test: ArrayDataset, n_tasks: int, classes_per_task: int,
                class_order: str = "sequential", seed: int = 0) -> list[Task]:
    """Cut ``train``/``test`` into ``n_tasks`` tasks of ``classes_per_task`` consecutive classes.

    With ``class_order="sequential"`` task ``t`` holds classes ``t*c .. t*c+c-1`` (Split CIFAR-10:
    5 tasks x 2, Split CIFAR-100 / mini-ImageNet: 20 x 5); ``"permuted"`` first permutes the class
    ids with ``np.random.default_rng(seed)``. Classes beyond ``n_tasks * classes_per_task`` are left
    out. The original sample order is preserved within a task (shuffling is the trainer's job).

    Raises:
        DataError: non-positive counts, ``n_tasks * classes_per_task`` above the number of
            classes, differing class lists of train and test, an unknown ``class_order``, or a
            task class without samples.
    """
    for pname, v in (("n_tasks", n_tasks), ("classes_per_task", classes_per_task)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise DataError(f"{pname} must be a positive integer, got {v!r}")
    if list(train.class_names) != list(test.class_names):
        raise DataError("train and test class_names differ: "
                        f"{list(train.class_names)} vs {list(test.class_names)}")
    n_classes = len(train.class_names)
    if n_tasks * classes_per_task > n_classes:
        raise DataError(f"n_tasks * classes_per_task = {n_tasks} * {classes_per_task} = "
                        f"{n_tasks * classes_per_task} exceeds the {n_classes} classes of the dataset")
    order = class_sequence(n_classes, class_order, seed)
    names = list(train.class_names)
    tasks = []
    for t in range(n_tasks):
        classes = order[t * classes_per_task:(t + 1) * classes_per_task]
        x_tr, y_tr, m_tr = _select(train, classes, "train", names)
        x_te, y_te, m_te = _select(test, classes, "test", names)
        tasks.append(Task(index=t, classes=classes, class_names=[names[c] for c in classes],
                          x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
                          masks_train=m_tr, masks_test=m_te))
    log.info("split %d classes into %d tasks of %d (%s order): %s",
             n_classes, n_tasks, classes_per_task, class_order, [task.classes for task in tasks])
    return tasks

