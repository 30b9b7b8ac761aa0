"""``samc compare``: two variants run on the same seeds, per seed and as a paired mean difference
with its 95% interval (samc.stats), written as a Markdown table and a CSV.

A side is a list of run folders (``runs/<experiment>``, one ``task_<t>/metrics.json`` per task) or
collected results (``results/<benchmark>/<run>/metrics.json``); runs are paired by seed (the
results' ``seed``, else the ``-s<N>`` suffix of the folder's name).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samc import io
from samc.stats import paired_difference
from samc.tables import csv_text, markdown_table
from samc.train import collect


@dataclass(frozen=True)
class Pair:
    """One row group: variant A against variant B (same seeds)."""

    label: str
    a: list[Path]
    b: list[Path]


def load_result(folder: Path) -> dict[str, Any]:
    """ACC, BWT, wall time (and seed where recorded) of one finished run or collected result."""
    folder = Path(folder)
    tasks = sorted(folder.glob("task_*/metrics.json"))
    if tasks:
        n = len(tasks)
        if {p.parent.name for p in tasks} != {f"task_{t + 1}" for t in range(n)}:
            raise ValueError(f"{folder}: task folders are not task_1..task_{n}")
        return collect(folder, n)
    if (folder / "metrics.json").is_file():
        return io.read_json(folder / "metrics.json")
    raise FileNotFoundError(f"{folder}: neither task_*/metrics.json (a run) nor metrics.json (a result)")


def seed_of(folder: Path, result: dict[str, Any]) -> int:
    if result.get("seed") is not None:
        return int(result["seed"])
    m = re.search(r"-s(\d+)$", Path(folder).name)
    if not m:
        raise ValueError(f"{folder}: no seed recorded and its name does not end in -s<seed>")
    return int(m.group(1))


def _side(folders: list[Path]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for f in folders:
        r = load_result(f)
        s = seed_of(f, r)
        if s in out:
            raise ValueError(f"{f}: seed {s} given twice on one side")
        out[s] = {**r, "folder": str(f)}
    return out


def compare(pairs: list[Pair], names: tuple[str, str] = ("A", "B")) -> tuple[list[dict], list[dict]]:
    """Per-seed rows and one summary row per pair (mean A − B of ACC and BWT with 95% intervals)."""
    per_seed, summary = [], []
    for p in pairs:
        a, b = _side(p.a), _side(p.b)
        if set(a) != set(b):
            raise ValueError(f"{p.label}: seeds differ between the sides ({sorted(a)} vs {sorted(b)}); "
                             "a paired comparison needs the same seeds on both")
        seeds = sorted(a)
        for s in seeds:
            per_seed.append({"comparison": p.label, "seed": s,
                             f"ACC {names[0]}": round(a[s]["acc"], 2), f"ACC {names[1]}": round(b[s]["acc"], 2),
                             "ΔACC": round(a[s]["acc"] - b[s]["acc"], 2),
                             f"BWT {names[0]}": round(a[s]["bwt"], 2), f"BWT {names[1]}": round(b[s]["bwt"], 2),
                             "ΔBWT": round(a[s]["bwt"] - b[s]["bwt"], 2),
                             f"wall s {names[0]}": round(a[s].get("wall_s", float("nan"))),
                             f"wall s {names[1]}": round(b[s].get("wall_s", float("nan")))})
        d_acc = paired_difference([a[s]["acc"] for s in seeds], [b[s]["acc"] for s in seeds])
        d_bwt = paired_difference([a[s]["bwt"] for s in seeds], [b[s]["bwt"] for s in seeds])
        wall = [a[s].get("wall_s", float("nan")) / b[s].get("wall_s", float("nan")) for s in seeds]
        summary.append({"comparison": p.label, "seeds": len(seeds),
                        f"mean ACC {names[0]}": round(sum(a[s]["acc"] for s in seeds) / len(seeds), 2),
                        f"mean ACC {names[1]}": round(sum(b[s]["acc"] for s in seeds) / len(seeds), 2),
                        "ΔACC [95% CI]": str(d_acc), "ΔBWT [95% CI]": str(d_bwt),
                        "ΔACC excludes 0": d_acc.excludes_zero,
                        f"wall {names[0]} / {names[1]}": round(sum(wall) / len(wall), 2)})
    return per_seed, summary


def write_comparison(out: Path, title: str, note: str, per_seed: list[dict], summary: list[dict],
                     names: tuple[str, str] = ("A", "B")) -> None:
    """``<out>.md`` (summary, then per seed) and ``<out>.csv`` (per seed), written atomically."""
    md = f"# {title}\n\n{note}\n\n## Paired difference ({names[0]} − {names[1]}), 95% Student-t interval over seeds\n\n" \
         f"{markdown_table(summary)}\n\n## Per seed\n\n{markdown_table(per_seed)}\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    io.write_text(out.with_suffix(".md"), md)
    io.write_text(out.with_suffix(".csv"), csv_text(per_seed))
