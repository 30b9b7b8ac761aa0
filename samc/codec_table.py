"""The codec benchmark (issue 17): replay methods x memory codecs at the same bytes.

One row per entry of ``benchmarks.<name>.codecs``: images stored per task and the records' bytes
per task when the stream ends, the bytes of the parameters needed to read the memory back (SAMC's autoencoder, charged
once), the total, ACC, BWT, learned (mean of R's diagonal) and forgetting as mean ± std over the
row's seeds, and the paired ΔACC (same seed = same data order and initialisation) against the row
its ``vs`` names, with the 95% Student-t interval. The figure plots ACC against images per task
and against total bytes.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from samc.benchmarks import Run, spec
from samc.config import Config
from samc.methods import METHODS
from samc.report import plt


def model_bytes(result: dict[str, Any], cfg: Config) -> int:
    """The parameters a run's memory needs to be read back (recorded; for runs made before it was,
    SAMC's A_ξ at float32 whenever its completion uses it)."""
    if "memory_model_bytes" in result:
        return int(result["memory_model_bytes"])
    if cfg.train.method == "samc" and cfg.samc.completion in ("ae", "rule+ae"):
        from samc.models import InpaintAE
        return sum(v.numel() * v.element_size() for v in InpaintAE(3).state_dict().values())
    return 0


def held(result: dict[str, Any], cfg: Config) -> tuple[float, float, int]:
    """(images per task, record bytes per task, most record bytes held at once) of a run: what it
    holds when the stream ends, every task's records (a reservoir's whole buffer), per task. Runs made
    before this was recorded: the sum of the task memories, or for a reservoir (er, mer) its buffer
    after task 1, when it held only task 1's records (exact for raw, whose buffer is full by then)."""
    n = len(result["memory_bytes"])
    if result.get("memory_held_bytes"):
        images, nbytes = result["memory_held_images"][-1], result["memory_held_bytes"][-1]
        return images / n, nbytes / n, max(result["memory_held_bytes"])
    if cfg.train.method in ("er", "mer"):
        return result["memory_images"][0] / n, result["memory_bytes"][0] / n, result["memory_bytes"][0]
    return sum(result["memory_images"]) / n, sum(result["memory_bytes"]) / n, sum(result["memory_bytes"])


def codec_rows(cfg: Config, benchmark: str, results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per row of the definition: its label, method, codec, and per seed the numbers plotted."""
    from samc.tables import _config, _forgetting, _learned, row_runs

    out = []
    for i, row, rs in row_runs(cfg, benchmark, spec(cfg, benchmark).codecs, results):
        if not rs:                                    # samc table --partial: a row not run yet
            continue
        res = [results[r.name] for r in rs]
        c = _config(cfg, rs[0])
        model = [model_bytes(x, _config(cfg, r)) for x, r in zip(res, rs)]
        kept = [held(x, _config(cfg, r)) for x, r in zip(res, rs)]
        out.append({
            "#": i, "row": row["row"], "method": row["method"], "ref": row.get("ref"), "vs": row.get("vs"),
            "codec": c.memory.codec if c.memory.codec != "auto" else METHODS[row["method"]].default_codec,
            "seeds": [r.seed for r in rs], "acc": [x["acc"] for x in res], "bwt": [x["bwt"] for x in res],
            "learned": _learned(res), "forgetting": _forgetting(res), "images": [k[0] for k in kept],
            "records_kb": [k[1] / 1e3 for k in kept], "model_kb": [m / 1e3 for m in model],
            "total_kb": [(k[2] + m) / 1e3 for k, m in zip(kept, model)],
        })
    return out


def codecs(cfg: Config, benchmark: str, runs: list[Run], results: dict[str, Any]) -> tuple[str, list[dict], Any]:
    from samc.tables import _fmt, _markdown, paired_by_seed

    rows = codec_rows(cfg, benchmark, results)
    refs = {r["ref"]: r for r in rows if r["ref"]}

    def versus(r: dict[str, Any]) -> str:
        other = refs.get(r["vs"]) if r["vs"] else None
        if other is None or other is r:
            return "—"
        d = paired_by_seed(dict(zip(r["seeds"], r["acc"])), dict(zip(other["seeds"], other["acc"])))
        return "—" if d is None else f"{d} vs {other['ref']} (n={d.n})"

    table = [{"#": r["#"], "row": r["row"], "method": r["method"], "codec": r["codec"],
              "seeds": " ".join(map(str, r["seeds"])), "images/task": _fmt(r["images"], 1),
              "records KB/task": _fmt(r["records_kb"], 2), "model KB (once)": _fmt(r["model_kb"], 1),
              "total KB": _fmt(r["total_kb"], 1), "ACC": _fmt(r["acc"]), "BWT (paper)": _fmt(r["bwt"]),
              "learned (diag R)": _fmt(r["learned"]), "forgetting": _fmt(r["forgetting"]),
              "ΔACC [95% CI]": versus(r)} for r in rows]
    b = spec(cfg, benchmark)
    budget = b.set.get("memory.images_per_task", cfg.memory.images_per_task)
    note = ("Memory codecs at the same byte budget (issue 17): every row's FIFO or reservoir holds "
            f"{budget} raw images' bytes per task (a reservoir, ER's, the bytes of all tasks' from the "
            "start), each record charged by its real length (headers included). images/task and records "
            "KB/task: what the memory holds when the stream ends (every task's records), per task. Total KB "
            "= the most record bytes held at once + the parameters needed to read them back (SAMC's "
            "autoencoder, float32; the latent codec's, float16; once). Mean ± std over the seeds listed; ΔACC: mean paired difference of "
            "ACC to the row named (same seeds), with its 95% Student-t interval (samc.stats).")
    fig = _figure(rows, benchmark)
    return _markdown(f"{benchmark}: memory codecs at equal bytes", note, table), table, fig


def _figure(rows: list[dict[str, Any]], benchmark: str) -> Any:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(r["method"] for r in rows))}
    for r in rows:
        acc, sd = float(np.mean(r["acc"])), float(np.std(r["acc"], ddof=1)) if len(r["acc"]) > 1 else 0.0
        for ax, key in zip(axes, ("images", "total_kb")):
            ax.errorbar(float(np.mean(r[key])), acc, yerr=sd, fmt="o", color=colours[r["method"]], capsize=2, ms=4)
            ax.annotate(r["codec"], (float(np.mean(r[key])), acc), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    for m, c in colours.items():
        axes[0].plot([], [], "o", color=c, label=m)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("images stored per task (log)")
    axes[1].set_xlabel("total memory KB (records of all tasks + model to read them)")
    axes[0].set_ylabel("ACC (%)")
    axes[0].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"{benchmark}: memory codecs at equal bytes (mean ± std over seeds)", fontsize=9)
    fig.tight_layout()
    return fig
