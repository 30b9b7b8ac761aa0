"""The per-task training loop (Algorithm 1), evaluation, and the run state saved after each task.

A run lives in ``<run.out>/<experiment>/`` with one folder per learned task::

    task_<t>/state.pt       θ, ξ, optimiser, RNG and method state (episodic memories included)
    task_<t>/memory.zarr    task t's episodic memory snapshot (samc.memory)
    task_<t>/metrics.json   row t of the accuracy matrix, memory bytes/images, phase timings

``train_task`` learns one task starting from the previous task's state, in this process or a
fresh one, with the same result bit for bit.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from samc import io
from samc.config import RUN_SECTIONS, Config, ConfigError
from samc.data import Task, load_source, split_tasks
from samc.data.store import dataset_params, read_tasks
from samc.devices import cpu_model, device_name, resolve_device, use_deterministic  # noqa: F401 - re-exported
from samc.memory import describe, save_snapshot
from samc.methods import METHODS, Batch, Method, TaskContext
from samc.metrics import summary
from samc.models import ResNet18
from samc.precision import Precision, resolve_precision
from samc.timing import PhaseTimer

log = logging.getLogger(__name__)
STATE_FORMAT = "samc-state"
STATE_VERSION = 1


def experiment_name(cfg: Config) -> str:
    """<dataset>-<method>-s<seed>-<hash of every parameter but run.out>."""
    return f"{cfg.dataset.name}-{cfg.train.method}-s{cfg.train.seed}-{cfg.digest(RUN_SECTIONS)}"


def load_tasks(cfg: Config, prepared: str | Path | None = None) -> list[Task]:
    """The task stream: from a prepared folder (``samc prepare``; checked against ``cfg.dataset``)
    when given, else built from the source."""
    if prepared is not None:
        return read_tasks(prepared, dataset_params(cfg))
    ds = cfg.dataset
    train, test = load_source(
        ds.name, root=ds.root, image_size=ds.image_size, download=ds.download, seed=ds.shapes_seed,
        limit_per_class=ds.limit_per_class, shapes_train_per_class=ds.shapes_train_per_class,
        shapes_test_per_class=ds.shapes_test_per_class,
    )
    return split_tasks(train, test, ds.n_tasks, ds.classes_per_task, ds.class_order, seed=ds.split_seed)


@dataclass
class Learner:
    """The classifier, the method that trains it, and where they run."""

    cfg: Config
    model: ResNet18
    method: Method
    device: torch.device
    timer: PhaseTimer
    precision: Precision
    tests: list[tuple[torch.Tensor, torch.Tensor]] | None = None    # prepare_test_sets, made at the first task

    @classmethod
    def create(cls, cfg: Config, in_channels: int = 3) -> "Learner":
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        device = resolve_device(cfg.train.device)
        precision = resolve_precision(cfg.train.precision, device, cfg.train.channels_last)
        log.info("precision: %s%s on %s (train.precision = %s, train.channels_last = %s)", precision.name,
                 ", channels_last" if precision.channels_last else "", device_name(device),
                 cfg.train.precision, cfg.train.channels_last)
        use_deterministic(cfg.train.deterministic)
        torch.manual_seed(cfg.train.seed)
        model = ResNet18(cfg.dataset.n_tasks, cfg.dataset.classes_per_task, in_channels=in_channels).to(device)
        model = precision.prepare(model)
        timer = PhaseTimer()
        method = METHODS[cfg.train.method](model, cfg, device, timer)
        for module in vars(method).values():           # networks a method owns (SAMC's A_ξ)
            if isinstance(module, torch.nn.Module):
                precision.prepare(module)
        return cls(cfg, model, method, device, timer, precision)

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self, task: int) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION, "task": task,
            "config_digest": self.cfg.digest(RUN_SECTIONS),
            "model": self.model.state_dict(), "method": self.method.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "state") -> int:
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError(f"{source}: not a samc run state (format {state.get('format')!r}, "
                             f"version {state.get('version')!r})")
        want = self.cfg.digest(RUN_SECTIONS)
        if state["config_digest"] != want:
            raise ValueError(f"{source}: saved with different parameters (digest {state['config_digest']}, "
                             f"current {want}); it belongs to another experiment")
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        torch.set_rng_state(state["torch_rng"])
        return int(state["task"])


def prepare_test_sets(tasks: list[Task], device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every task's test images (uint8, 4x smaller than float) and labels on ``device``, made once
    per run: evaluation then moves nothing between host and device."""
    return [(torch.from_numpy(task.x_test).to(device), torch.from_numpy(task.y_test).to(device)) for task in tasks]


def evaluate(model: ResNet18, tasks: list[Task], device: torch.device, batch_size: int = 500,
             predict: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
             precision: Precision | None = None,
             tests: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> list[float]:
    """Test accuracy (%) on every task, seen and unseen, in eval mode and inference mode (in the
    run's precision): with the task's head, or with ``predict(x, t)`` (a method's own classifier,
    e.g. iCaRL's nearest mean of exemplars). ``tests``: :func:`prepare_test_sets` of ``tasks``, if made."""
    predict = predict or (lambda x, t: model(x, t).argmax(1))
    precision = precision or Precision("fp32", device.type)
    tests = tests if tests is not None else prepare_test_sets(tasks, device)
    was_training = model.training
    model.eval()
    accs = []
    with torch.inference_mode(), precision.autocast():
        for t, (x_all, y_all) in enumerate(tests):
            correct = 0
            for i in range(0, len(y_all), batch_size):
                x = x_all[i:i + batch_size].float().div_(255.0)
                correct += int((predict(x, t) == y_all[i:i + batch_size]).sum())
            accs.append(100.0 * correct / max(1, len(y_all)))
    model.train(was_training)
    return accs


def stream_order(cfg: Config, task: Task, t: int) -> np.ndarray:
    """The task's sample stream: one seeded permutation of its training set per epoch."""
    gen = torch.Generator().manual_seed(cfg.train.seed * 100_003 + t)
    n = len(task.y_train)
    return np.concatenate([torch.randperm(n, generator=gen).numpy() for _ in range(cfg.train.epochs)])


def bn_extra_pass(model: ResNet18, x: torch.Tensor, t: int) -> None:
    """One train-mode forward of the batch without gradient: BatchNorm's running statistics take the
    batch a second time (the SAMC authors' code does this through its Grad-CAM pass after the
    optimiser step; ``train.bn_double_update``, an ablation). Weights are untouched."""
    with torch.no_grad():
        model(x, t)


class Diverged(RuntimeError):
    """The training loss became NaN or infinite: the run stops, nothing of the task is saved."""


#: points of the sampled training-loss curve kept per task (means over equal windows of steps)
LOSS_POINTS = 100


def loss_curve(losses: list[float], points: int = LOSS_POINTS) -> list[list[float]]:
    """``[[step, mean loss], ...]``: the per-step losses averaged over at most ``points`` equal windows
    (step = the window's last step, 1-based)."""
    if not losses:
        return []
    edges = np.linspace(0, len(losses), min(points, len(losses)) + 1).round().astype(int)
    return [[int(b), round(float(np.mean(losses[a:b])), 5)] for a, b in zip(edges[:-1], edges[1:]) if b > a]


def task_steps(cfg: Config, task: Task) -> int:
    """Optimiser steps of one task's stream (epochs × training set, in batches)."""
    return -(-cfg.train.epochs * len(task.y_train) // cfg.train.batch_size)


def train_task(learner: Learner, tasks: list[Task], t: int, progress: bool = True,
               bar: tqdm | None = None) -> dict[str, Any]:
    """Learn task t (0-based) and return its metrics row (accuracies after the task, memory, timings).

    ``bar``: a progress bar over the whole run (``run_stream``'s), advanced one step per batch and
    told the phase (training with its running loss, after-task work such as the autoencoder's
    fine-tuning, evaluation); without it, a bar for this task alone."""
    cfg, method, device = learner.cfg, learner.method, learner.device
    task = tasks[t]
    learner.timer.reset()
    start = time.perf_counter()
    precision = learner.precision
    if learner.tests is None:
        learner.tests = prepare_test_sets(tasks, device)
    baseline = None
    if t == 0:                                      # R's row 0 (FWT's reference): the untrained model
        with learner.timer("evaluate"):
            baseline = evaluate(learner.model, tasks, device, cfg.train.eval_batch_size, method.predict,
                                precision, learner.tests)
    order = stream_order(cfg, task, t)
    ctx = TaskContext(t=t, task=task, stream_length=len(order), n_tasks=len(tasks))
    learner.model.train()
    with precision.autocast():
        method.before_task(ctx)
    bs = cfg.train.batch_size
    losses = []
    own = bar is None
    if own:
        bar = tqdm(total=-(-len(order) // bs), desc=f"{cfg.train.method} task {t + 1}/{len(tasks)}",
                   disable=not progress, leave=False)
    phase = f"{cfg.train.method} task {t + 1}/{len(tasks)}"
    bar.set_description(f"{phase} train")
    for pos in range(0, len(order), bs):
        idx = order[pos:pos + bs]
        raw = task.x_train[idx]
        batch = Batch(
            x=torch.from_numpy(raw).to(device).float().div_(255.0),
            y=torch.from_numpy(task.y_train[idx]).to(device),
            raw=raw, index=idx, position=pos,
        )
        with precision.autocast():
            losses.append(method.observe(batch, t))
        if not math.isfinite(losses[-1]):
            raise Diverged(
                f"{cfg.train.method} diverged on task {t + 1}, step {len(losses)} (stream position {pos}): "
                f"training loss {losses[-1]}; nothing of task {t + 1} was saved. Lower train.lr "
                f"(now {cfg.train.lr}) or the method's strength (e.g. baselines.ewc_lambda)")
        if cfg.train.bn_double_update:
            with precision.autocast():
                bn_extra_pass(learner.model, batch.x, t)
        bar.update(1)
        if len(losses) % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", refresh=False)
    bar.set_description(f"{phase} after task ({method.name}: memory, autoencoder, exemplars)")
    with precision.autocast():
        method.after_task(ctx)
    bar.set_description(f"{phase} evaluate")
    with learner.timer("evaluate"):
        accs = evaluate(learner.model, tasks, device, cfg.train.eval_batch_size, method.predict, precision,
                        learner.tests)
    if own:
        bar.close()
    memory = method.task_memory(t)
    held = [m for m in (*(method.task_memory(k) for k in range(t)), memory) if m is not None]
    row: dict[str, Any] = {
        "task": t + 1,
        "accuracies": accs,
        "train_loss": float(np.mean(losses)) if losses else None,
        "loss_curve": loss_curve(losses),
        "steps": len(losses),
        "memory": describe(memory) if memory is not None else None,
        # everything the method holds now, every task's records (a reservoir's whole buffer)
        "memory_held": {"n_images": sum(len(m) for m in held), "nbytes": sum(m.nbytes for m in held)},
        "memory_model_bytes": method.model_nbytes(),
        "timings": {**learner.timer.as_dict(), "total": round(time.perf_counter() - start, 4)},
        "device": device_name(device),
        "precision": precision.name,
        "channels_last": precision.channels_last,
    }
    stats = method.task_stats()
    if stats:
        row["method_stats"] = stats
    if baseline is not None:
        row["baseline_accuracies"] = baseline
    log.info("task %d/%d: accuracies %s (%.0f s)", t + 1, len(tasks), " ".join(f"{a:.1f}" for a in accs),
             row["timings"]["total"])
    return row


def task_dir(run_dir: Path, t: int) -> Path:
    return Path(run_dir) / f"task_{t + 1}"


def save_task(learner: Learner, run_dir: Path, t: int, row: dict[str, Any]) -> None:
    """Write task t's outputs into a temp folder and swap it into place as ``task_<t>``."""
    with io.building_dir(task_dir(run_dir, t)) as tmp:   # the task folder appears whole or not at all
        io.save_torch(tmp / "state.pt", learner.state_dict(t))
        memory = learner.method.task_memory(t)
        if memory is not None:
            save_snapshot(memory, tmp / "memory.zarr")
        io.write_json(tmp / "metrics.json", row)
    if t == 0 or not (Path(run_dir) / "config.json").is_file():   # with task 1 (a rerun of it: anew)
        write_run_config(learner.cfg, run_dir)


def completed_tasks(run_dir: Path, n_tasks: int) -> int:
    """How many leading tasks of a run are complete: the last t whose folder holds the run state and
    whose tasks 1..t all hold their metrics (earlier states are not needed to resume, so a run whose
    earlier states were pruned or not copied resumes after its last saved state)."""
    done = 0
    for t in range(1, n_tasks + 1):
        if not (task_dir(run_dir, t - 1) / "metrics.json").is_file():
            break
        if (task_dir(run_dir, t - 1) / "state.pt").is_file():
            done = t
    return done


def resume(cfg: Config, run_dir: Path, t: int, in_channels: int = 3) -> Learner:
    """A learner ready for task t (0-based): fresh for t = 0, else loaded from task t-1's state."""
    learner = Learner.create(cfg, in_channels)
    if t > 0:
        path = task_dir(run_dir, t - 1) / "state.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the state after task {t} is missing; run task {t} first")
        done = learner.load_state_dict(io.load_torch(path), str(path))
        if done != t - 1:
            raise ValueError(f"{path}: holds the state after task {done + 1}, expected task {t}")
    return learner


def accuracy_matrix(rows: list[dict[str, Any]]) -> np.ndarray:
    return np.array([r["accuracies"] for r in rows], dtype=float)


def collect(run_dir: Path, n_tasks: int) -> dict[str, Any]:
    """The run's metrics: accuracy matrix, ACC, BWT (both conventions), FWT, memory, timings."""
    rows = [io.read_json(task_dir(run_dir, t) / "metrics.json") for t in range(n_tasks)]
    R = accuracy_matrix(rows)
    baseline = rows[0].get("baseline_accuracies")
    held = all("memory_held" in r for r in rows)          # recorded since issue 17
    out = {
        **summary(R, np.array(baseline) if baseline else None),
        "accuracy_matrix": R.round(4).tolist(),
        "memory_images": [r["memory"]["n_images"] if r["memory"] else 0 for r in rows],
        "memory_bytes": [r["memory"]["nbytes"] if r["memory"] else 0 for r in rows],
        # every byte a memory needs: the records (headers included) and, once, the parameters that read
        # them back (SAMC's autoencoder); equal-bytes comparisons match on this total
        "memory_held_images": [r["memory_held"]["n_images"] for r in rows] if held else None,
        "memory_held_bytes": [r["memory_held"]["nbytes"] for r in rows] if held else None,
        "memory_model_bytes": rows[-1].get("memory_model_bytes", 0),
        # the most bytes held at once (records of every task) + the parameters that read them back
        "memory_total_bytes": (max(r["memory_held"]["nbytes"] for r in rows) if held else
                               sum(r["memory"]["nbytes"] if r["memory"] else 0 for r in rows))
        + rows[-1].get("memory_model_bytes", 0),
        "loss_curves": [r.get("loss_curve", []) for r in rows],
        "timings": [r["timings"] for r in rows],
        "wall_s": round(sum(r["timings"]["total"] for r in rows), 3),
        "devices": sorted({r.get("device", "unrecorded") for r in rows}),
        "precisions": sorted({r.get("precision", "fp32") for r in rows}),
    }
    if any("method_stats" in r for r in rows):
        out["method_stats"] = [r.get("method_stats", {}) for r in rows]
    return out


def write_run_config(cfg: Config, run_dir: Path) -> None:
    """``<run>/config.json``: the run's parameters (no benchmark definitions), so that tools reading
    the run later (``samc memory show``'s ground truth) need no params.yaml."""
    io.write_json(Path(run_dir) / "config.json", {k: v for k, v in cfg.to_dict().items() if k != "benchmarks"})


def run_config(run_dir: Path) -> Config | None:
    """The parameters a run was made with (None for runs made before they were recorded)."""
    from samc.config import from_dict

    path = Path(run_dir) / "config.json"
    return from_dict(io.read_json(path), source=str(path)) if path.is_file() else None


def check_run_config(cfg: Config, run_dir: Path) -> None:
    """Refuse to resume ``run_dir`` when its completed tasks were made with other parameters (its
    ``config.json``), naming the parameters that differ."""
    old = run_config(run_dir)
    if old is None or old.digest(RUN_SECTIONS) == cfg.digest(RUN_SECTIONS):
        return
    was, now = old.to_dict(), cfg.to_dict()
    differ = [f"{sec}.{key}: {was[sec].get(key)!r} -> {value!r}" for sec in RUN_SECTIONS
              for key, value in now[sec].items() if was[sec].get(key) != value]
    raise ConfigError(f"{run_dir}: its tasks were made with other parameters ({'; '.join(differ)}); "
                      "give this run another folder (--out) or remove that one")


def run_stream(cfg: Config, run_dir: Path | None = None, progress: bool = True,
               tasks: list[Task] | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Learn the whole stream in this process, resuming after the last completed task."""
    run_dir = Path(run_dir or Path(cfg.run.out) / experiment_name(cfg))
    tasks = tasks if tasks is not None else load_tasks(cfg)
    T = len(tasks)
    start = completed_tasks(run_dir, T)
    if start:
        check_run_config(cfg, run_dir)
        log.info("%s: tasks 1..%d already complete, resuming at task %d", run_dir, start, start + 1)
    learner = resume(cfg, run_dir, start, in_channels=tasks[0].x_train.shape[1]) if start < T else None
    end = T if stop_after is None else min(T, stop_after)
    with logging_redirect_tqdm(), tqdm(total=sum(task_steps(cfg, tasks[t]) for t in range(start, end)),
                                       disable=not progress, unit="step", dynamic_ncols=True) as bar:
        # one bar for the whole run, with its ETA; log lines print above it
        for t in range(start, end):
            row = train_task(learner, tasks, t, progress, bar=bar)
            save_task(learner, run_dir, t, row)
    if end < T:
        return {}
    result = collect(run_dir, T)
    io.write_json(run_dir / "metrics.json", result)
    return result
