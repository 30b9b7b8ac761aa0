"""Prepared tasks on disk: one chunked, compressed Zarr store per task (the pipeline's ``prepare``).

``data/prepared/`` holds ``task_<t>.zarr`` (arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``
and, when the source has them, ``masks_train``/``masks_test``; attributes ``index``, ``classes``,
``class_names``) and ``meta.json`` with the ``dataset`` parameters it was built from. The folder is
written in a temp sibling and swapped into place, so a killed ``prepare`` leaves the old complete
folder or none; a reader checks ``meta.json`` against its own parameters and refuses a mismatch.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from samc import io
from samc.config import effective_dataset
from samc.data.sources import DataError
from samc.data.splits import Task

log = logging.getLogger(__name__)

FORMAT = "samc-prepared-tasks"
_ARRAYS = ("x_train", "y_train", "x_test", "y_test", "masks_train", "masks_test")
_CHUNK_IMAGES = 1024


def write_tasks(tasks: list[Task], dest: str | Path, dataset_params: dict[str, Any]) -> Path:
    """Write ``tasks`` under ``dest`` (replacing an old folder atomically)."""
    compressors = zarr.codecs.ZstdCodec(level=3)
    with io.building_dir(dest) as tmp:
        for task in tasks:
            group = zarr.open_group(tmp / f"task_{task.index + 1}.zarr", mode="w")
            for name in _ARRAYS:
                arr = getattr(task, name)
                if arr is None:
                    continue
                chunks = (_CHUNK_IMAGES, *arr.shape[1:])
                z = group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=chunks,
                                       compressors=compressors)
                z[:] = arr
            group.attrs.update({"index": task.index, "classes": list(task.classes),
                                "class_names": list(task.class_names)})
        io.write_json(tmp / "meta.json", {"format": FORMAT, "n_tasks": len(tasks), "dataset": dataset_params})
    log.info("prepared %d tasks in %s", len(tasks), dest)
    return Path(dest)


def read_tasks(root: str | Path, dataset_params: dict[str, Any] | None = None) -> list[Task]:
    """Read the tasks written by :func:`write_tasks`.

    Raises:
        DataError: the folder or a store is missing or incomplete, or (when ``dataset_params`` is
            given) it was prepared from different ``dataset`` parameters.
    """
    root = Path(root)
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{root}: not a prepared dataset (no meta.json); run `samc prepare`")
    meta = io.read_json(meta_path)
    if meta.get("format") != FORMAT:
        raise DataError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    prepared = effective_dataset(meta["dataset"]) if isinstance(meta.get("dataset"), dict) else {}
    want = effective_dataset(dataset_params) if dataset_params is not None else None
    if want is not None and prepared != want:
        changed = sorted(k for k in set(prepared) | set(want) if prepared.get(k) != want.get(k))
        raise DataError(f"{root}: prepared with other dataset parameters (differ: {', '.join(changed)}); "
                        "run `samc prepare` again")
    tasks = []
    for t in range(meta["n_tasks"]):
        path = root / f"task_{t + 1}.zarr"
        try:
            group = zarr.open_group(path, mode="r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            raise DataError(f"{path}: missing or not a Zarr group") from exc
        arrays = {name: np.asarray(group[name][:]) if name in group else None for name in _ARRAYS}
        if any(arrays[n] is None for n in _ARRAYS[:4]):
            raise DataError(f"{path}: incomplete store (needs {', '.join(_ARRAYS[:4])})")
        attrs = dict(group.attrs)
        tasks.append(Task(index=int(attrs["index"]), classes=[int(c) for c in attrs["classes"]],
                          class_names=list(attrs["class_names"]), **arrays))
    return tasks


def dataset_params(cfg: Any) -> dict[str, Any]:
    """The ``dataset`` section a prepared folder records (:func:`read_tasks` compares only the
    parameters the source reads, ``samc.config.effective_dataset``)."""
    return dataclasses.asdict(cfg.dataset)
