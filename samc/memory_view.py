"""Look inside episodic-memory snapshots between tasks: statistics, a PNG grid, and a diff.

The grid has one row per shown image, the ``n`` newest (the paper's Figures 4 and 6): ground truth
(from prepared data, or the data the run's ``config.json`` names: the snapshot keeps each image's
index in its task's training set), the
saliency mask, the masked image x', the rule-based completion R(x') and the autoencoder's
A_ξ(R(x')), with ξ as saved in the same task folder's ``state.pt`` (the autoencoder that will
complete this memory when the next task starts). It needs nothing from later tasks.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from samc import io  # noqa: E402
from samc.inpaint import complete  # noqa: E402
from samc.memory import TaskMemory, describe, load_snapshot  # noqa: E402
from samc.models import InpaintAE  # noqa: E402
from samc.report import save_png  # noqa: E402


def _resolve(path: Path) -> tuple[Path, Path | None]:
    """(memory.zarr, state.pt or None) from a task folder or a snapshot path."""
    path = Path(path)
    if (path / "memory.zarr").exists():
        state = path / "state.pt"
        return path / "memory.zarr", state if state.is_file() else None
    if path.name == "memory.zarr" or (path / "zarr.json").is_file():
        state = path.parent / "state.pt"
        return path, state if state.is_file() else None
    if not path.exists():
        raise FileNotFoundError(f"{path}: does not exist")
    tasks = sorted((p.name for p in path.glob("task_*") if (p / "memory.zarr").exists()),
                   key=lambda n: int(n.split("_")[1]) if n.split("_")[1].isdigit() else 0)
    if tasks:
        raise FileNotFoundError(f"{path}: a run folder; give one of its task folders, e.g. {path / tasks[0]} "
                                f"(with a memory: {', '.join(tasks)})")
    raise FileNotFoundError(f"{path}: neither a task folder with memory.zarr nor a memory snapshot")


def _fmt(value: Any) -> str:
    """A statistic as printed: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _lines(mem: TaskMemory) -> list[str]:
    info = describe(mem)
    info["task"] = f"{mem.task + 1} (task_{mem.task + 1})"      # 1-based, as folders, titles and --task
    return [f"{k:>22}: {_fmt(v)}" for k, v in info.items()]


def _autoencoder(state_path: Path | None, channels: int) -> tuple[InpaintAE | None, str]:
    if state_path is None:
        return None, "none (no state.pt beside the snapshot)"
    state = io.load_torch(state_path)
    ae_state = state.get("method", {}).get("ae")
    if ae_state is None:
        return None, f"none ({state_path} has no autoencoder: not a samc run)"
    ae = InpaintAE(channels)
    ae.load_state_dict(ae_state)
    return ae.eval(), str(state_path)


def _attach_learned(mem: TaskMemory, state_path: Path | None) -> None:
    """A learned codec's records (EEC's ``latent`` codes) read back with the autoencoder of the
    run's state beside the snapshot."""
    if not mem.codec.learned:
        return
    from samc.memory.codecs.latent import STATE_KEY
    from samc.models import LatentAE

    if state_path is None:
        raise FileNotFoundError(f"task {mem.task + 1}: {mem.codec.name} records read back only with the "
                                "autoencoder in the task folder's state.pt, and there is none")
    ae_state = io.load_torch(state_path).get("method", {}).get(STATE_KEY)
    if ae_state is None:
        raise FileNotFoundError(f"{state_path}: holds no autoencoder for its {mem.codec.name} records")
    ae = LatentAE(mem.image_shape[0], int(mem.codec.values["latent"]))
    ae.load_state_dict(ae_state)
    mem.codec.attach(ae.eval())


def _ground_truth(mem: TaskMemory, data: Path | None, rows: np.ndarray,
                  run_dir: Path | None) -> tuple[np.ndarray | None, str]:
    """The original training images of the memory's records ``rows`` and where they came from:
    ``data`` (prepared tasks), else the data the run's ``config.json`` names, else data/prepared."""
    if data is not None:
        store = Path(data) / f"task_{mem.task + 1}.zarr"
        if not store.exists():
            return None, f"no ({store} does not exist)"
        import zarr

        x = zarr.open_group(store, mode="r")["x_train"]
        return np.stack([np.asarray(x[int(i)]) for i in mem.indices[rows]]), f"yes ({data})"
    from samc.train import load_tasks, run_config

    cfg = run_config(run_dir) if run_dir is not None else None
    if cfg is None:
        if Path("data/prepared").exists():
            return _ground_truth(mem, Path("data/prepared"), rows, None)
        return None, "no (pass --data with the prepared tasks, made by `samc prepare`)"
    tasks = load_tasks(cfg)
    return tasks[mem.task].x_train[mem.indices[rows]], f"yes (the run's data: {cfg.dataset.name})"


def show(path: Path, png: Path | None = None, data: Path | None = None, n: int = 8,
         rule: str = "telea") -> list[str]:
    """Statistics lines of the snapshot at ``path``; with ``png``, also write the grid of its ``n``
    newest images, one row each (labelled with its class and training-set index)."""
    snap, state_path = _resolve(path)
    mem = load_snapshot(snap)
    lines = _lines(mem)
    labels = Counter(int(v) for v in mem.labels)
    lines.append(f"{'images per class':>22}: " + ", ".join(
        f"{mem.classes[k] if k < len(mem.classes) else k}: {c}" for k, c in sorted(labels.items())))
    if png is None or len(mem) == 0:
        return lines
    _attach_learned(mem, state_path)
    images, masks = mem.decode_all()
    k = min(n, len(mem))
    pick = np.linspace(len(mem) - k, len(mem) - 1, k).astype(int)   # the newest k images
    images, masks = images[pick], masks[pick]
    masked = images * masks[:, None]
    fills = mem.codec.fills              # the codec estimates what it does not keep exactly: R is skipped
    rule_done = complete(images, masks, "rule", rule=rule, prefilled=fills).numpy()
    ae, ae_source = _autoencoder(state_path, images.shape[1])
    ae_done = (complete(images, masks, "rule+ae", rule=rule, ae=ae, prefilled=fills).numpy()
               if ae is not None else None)
    gt, gt_source = _ground_truth(mem, data, pick, snap.parent.parent)
    cols: list[tuple[str, Any]] = []
    if gt is not None:
        cols.append(("ground truth", gt.transpose(0, 2, 3, 1)))
    if mem.codec.learned:                # every pixel decoded by the run's model: nothing masked, nothing to fill
        cols.append((f"decoded ({mem.codec.spec})", images.transpose(0, 2, 3, 1)))
        ae_done, ae_source = None, f"{mem.codec.name} decoder of {state_path}"
    else:
        cols += [("mask (kept)", masks.astype(float)), ("masked x'", masked.transpose(0, 2, 3, 1)),
                 ("decoded" if fills else f"rule ({rule})", rule_done.transpose(0, 2, 3, 1))]
    if ae_done is not None:
        cols.append(("rule + AE", ae_done.transpose(0, 2, 3, 1)))
    fig, axes = plt.subplots(k, len(cols), figsize=(1.3 * len(cols), 1.3 * k + 0.4), squeeze=False)
    for j, (title, arr) in enumerate(cols):
        axes[0, j].set_title(title, fontsize=7)
        for i in range(k):
            img = arr[i]
            if img.dtype == np.uint8:
                img = img.astype(float) / 255.0
            axes[i, j].imshow(np.clip(img, 0, 1).squeeze(), cmap="gray" if img.ndim == 2 else None,
                              vmin=0, vmax=1, interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            for side in axes[i, j].spines.values():
                side.set_visible(False)
    for i, row in enumerate(pick):        # each row: the image's class and its index in the task's training set
        label = int(mem.labels[row])
        name = mem.classes[label] if label < len(mem.classes) else label
        index = int(mem.indices[row])        # -1: a class summary (EEC), shown as its centroid
        axes[i, 0].set_ylabel(f"class {name}\n" + (f"#{index}" if index >= 0 else "summary"), fontsize=6)
    fig.suptitle(f"task {mem.task + 1}, codec {mem.codec.spec}, μ={mem.mu}, {len(mem)} images, "
                 f"{mem.nbytes}/{mem.budget} B", fontsize=8)
    save_png(fig, Path(png), dpi=100)
    lines.append(f"{'grid':>22}: {png} ({k} images; autoencoder: {ae_source}; "
                 f"ground truth: {gt_source})")
    return lines


def diff(a: Path, b: Path) -> list[str]:
    """Side-by-side statistics of two snapshots, and the training samples they share."""
    ma, mb = load_snapshot(_resolve(a)[0]), load_snapshot(_resolve(b)[0])
    da, db = describe(ma), describe(mb)
    for d, m in ((da, ma), (db, mb)):
        d["task"] = m.task + 1
    changed = [key for key in da if da[key] != db.get(key)]
    wa = max([len(str(a)), 1, *(len(_fmt(da[k])) for k in changed)])
    wb = max([len(str(b)), 1, *(len(_fmt(db.get(k))) for k in changed)])
    lines = [f"{'':>22}  {'A':>{wa}}  {'B':>{wb}}", f"{'path':>22}  {str(a):>{wa}}  {str(b):>{wb}}"]
    lines += [f"{key:>22}  {_fmt(da[key]):>{wa}}  {_fmt(db.get(key)):>{wb}}" for key in changed]
    same = [key for key in da if da[key] == db.get(key)]
    if same:
        lines.append(f"{'equal':>22}  {', '.join(same)}")
    if ma.task == mb.task:
        shared = np.intersect1d(ma.indices, mb.indices)
        lines.append(f"{'shared samples':>22}  {len(shared)} of {len(ma)} / {len(mb)} (same task: "
                     "training-set indices)")
        common = [(i, j) for i, j in zip(*np.nonzero(ma.indices[:, None] == mb.indices[None, :]))]
        if common and not (ma.codec.learned or mb.codec.learned):   # a learned codec knows every pixel
            ka = np.stack([ma.decode(i)[1] for i, _ in common])
            kb = np.stack([mb.decode(j)[1] for _, j in common])
            lines.append(f"{'mask agreement':>22}  {float((ka == kb).mean()):.3f} (pixels, shared samples)")
    return lines
