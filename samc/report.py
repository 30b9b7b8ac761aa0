"""Results of finished runs: per-experiment metrics and plots, and the report over the grid.

Plots are written with matplotlib's Agg backend (no display), atomically like every other output.
"""
from __future__ import annotations

import csv
import io as _io
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from samc import io  # noqa: E402


def save_png(fig: Any, path: Path, dpi: int = 110) -> None:
    """Render ``fig`` as PNG, write it atomically, close it."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    io.write_bytes(path, buf.getvalue())


def plot_accuracy_matrix(R: np.ndarray, path: Path, title: str) -> None:
    """The accuracy matrix R (row i: after task i; column j: task j) as a heatmap."""
    T = R.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * T, 0.8 + 0.6 * T))
    im = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
    for i in range(T):
        for j in range(R.shape[1]):
            ax.text(j, i, f"{R[i, j]:.0f}", ha="center", va="center",
                    color="white" if R[i, j] < 60 else "black", fontsize=8)
    ax.set_xticks(range(R.shape[1]), [f"T{j + 1}" for j in range(R.shape[1])])
    ax.set_yticks(range(T), [f"after T{i + 1}" for i in range(T)])
    ax.set_xlabel("evaluated task")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="test accuracy (%)")
    save_png(fig, path)


def plot_first_task(R: np.ndarray, path: Path, title: str) -> None:
    """Accuracy on the first task as tasks are learned (the paper's Figure 3)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.0))
    ax.plot(range(1, R.shape[0] + 1), R[:, 0], marker="o")
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("accuracy on task 1 (%)")
    ax.set_ylim(0, 100)
    ax.set_xticks(range(1, R.shape[0] + 1))
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    save_png(fig, path)


def write_experiment_results(result: dict[str, Any], out: Path, title: str) -> None:
    """``metrics.json``, ``accuracy.csv`` (DVC plot data) and the PNGs of one experiment (accuracy
    matrix, first task, training-loss curves)."""
    out = Path(out)
    R = np.array(result["accuracy_matrix"], dtype=float)
    rows = [{"task": i + 1, "first_task_accuracy": round(float(R[i, 0]), 4),
             "average_accuracy_seen": round(float(R[i, : i + 1].mean()), 4)} for i in range(R.shape[0])]
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(out / "accuracy.csv", buf.getvalue())
    plot_accuracy_matrix(R, out / "accuracy_matrix.png", title)
    plot_first_task(R, out / "first_task.png", title)
    plot_loss_curves(result.get("loss_curves") or [], out / "loss.png", title)
    io.write_json(out / "metrics.json", result)


def plot_loss_curves(curves: list[list[list[float]]], path: Path, title: str) -> None:
    """The sampled training loss of each task, one after another along the stream."""
    fig, ax = plt.subplots(figsize=(6, 3))
    offset = 0
    for t, curve in enumerate(curves):
        if curve:
            steps, loss = zip(*curve)
            ax.plot([offset + s for s in steps], loss, lw=1, label=f"task {t + 1}")
            offset += steps[-1]
            ax.axvline(offset, color="0.8", lw=0.5)
    if offset == 0:
        ax.text(0.5, 0.5, "no training loss recorded (a run made before loss curves were kept)",
                ha="center", va="center", fontsize=8, transform=ax.transAxes)
    ax.set_xlabel("training step (tasks one after another)")
    ax.set_ylabel("training loss (window mean)")
    ax.set_title(title, fontsize=8)
    if offset:
        ax.legend(fontsize=6, ncol=min(5, len(curves)))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


def provenance() -> dict[str, str]:
    """Git commit (``-dirty`` with local changes), Python, platform and CPU of this machine."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += "-dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"commit": commit, "python": platform.python_version(), "platform": platform.platform(),
            "machine": platform.machine(), "processor": platform.processor() or "unknown"}


def summary_table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Table 1 rows: one per (method, μ, completion) over its seeds, ACC/BWT as mean ± std."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results.values():
        key = (r.get("method", "?"), r.get("mu"), r.get("completion"))
        groups.setdefault(key, []).append(r)
    rows = []
    for (method, mu, completion), rs in groups.items():
        name = method if mu is None else f"{method} (μ={mu}, {completion})"
        row: dict[str, Any] = {"method": name, "seeds": " ".join(str(r.get("seed")) for r in rs)}
        for key in ("acc", "bwt", "bwt_gem_code"):
            v = np.array([r[key] for r in rs], dtype=float)
            row[key] = f"{v.mean():.2f} ± {float(v.std(ddof=1)):.2f}" if len(v) > 1 else f"{v[0]:.2f} (n=1)"
        row["images/task"] = f"{np.mean([np.mean(r['memory_images']) for r in rs]):.1f}"
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    cols = list(rows[0]) if rows else []
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + [
        "| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]


def write_report(results: dict[str, dict[str, Any]], out: Path, params: dict[str, Any]) -> None:
    """``report.md`` and ``report.csv``: one row per experiment (ACC, BWT both ways, memory, time)."""
    out = Path(out)
    cols = ["experiment", "acc", "bwt", "bwt_gem_code", "images_per_task", "bytes_per_task", "wall_s"]
    rows = []
    for name, r in results.items():
        rows.append({"experiment": name, "acc": round(r["acc"], 2), "bwt": round(r["bwt"], 2),
                     "bwt_gem_code": round(r["bwt_gem_code"], 2),
                     "images_per_task": " ".join(str(v) for v in r["memory_images"]),
                     "bytes_per_task": " ".join(str(v) for v in r["memory_bytes"]),
                     "wall_s": r["wall_s"]})
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(out / "report.csv", buf.getvalue())
    lines = ["# samc report", "",
             "ACC and BWT in %; BWT as the paper defines it (mean over the first T-1 tasks) and as GEM's",
             "code computes it (divided by T).", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    lines += ["", "## Over seeds (the paper's Table 1 layout: mean ± sample std)", ""]
    lines += markdown_table(summary_table(results))
    shown = {k: v for k, v in params.items() if k != "benchmarks"}   # the grid's; benchmarks have their own tables
    lines += ["", "## Provenance", "", "```json", json.dumps(provenance(), indent=2), "```", "",
              "## Parameters", "", "The grid's parameters (params.yaml without its `benchmarks` definitions; each "
              "experiment's overrides are in its name and results/<experiment>/metrics.json).", "",
              "```yaml", yaml.safe_dump(shown, sort_keys=True).rstrip(), "```", ""]
    io.write_text(out / "report.md", "\n".join(lines))
