"""The paper's tables and figures, rendered from the runs' ``metrics.json`` (samc.benchmarks).

Every artifact is written atomically into ``results/<benchmark>/``: a Markdown table and its CSV,
or a PNG and the CSV of what it plots, and ``<artifact>.json`` beside it with the provenance (git
commit, machine), the benchmark's definition, the seeds and every run's overrides. ACC and BWT
are in %; BWT as the paper defines it (mean over the first T-1 tasks) and, labelled, as GEM's code
computes it (divided by T). Spreads are the sample standard deviation over seeds (0 for one seed).
"""
from __future__ import annotations

import csv
import io as _io
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from samc import io
from samc.benchmarks import Run, artifact_runs, attribution_row_runs, spec
from samc.config import Config
from samc.report import plt, provenance, save_png

# The paper's Table 1 (ACC, BWT), for the comparison column of table1.md.
PAPER_TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "split-cifar10": {"finetune": (63.24, -17.91), "ewc": (65.64, -18.37), "lwf": (67.22, -16.78),
                      "icarl": (72.53, -12.43), "gem": (70.82, -15.82), "er": (72.13, -12.78),
                      "mer": (71.09, -13.69), "ebm": (72.20, -12.26), "eec": (73.48, -12.13),
                      "samc": (75.37, -11.12)},
    "split-cifar100": {"finetune": (41.06, -17.36), "ewc": (42.22, -16.54), "lwf": (43.79, -16.23),
                       "icarl": (48.78, -15.94), "gem": (50.28, -13.56), "er": (49.72, -13.84),
                       "mer": (47.37, -15.23), "ebm": (51.29, -11.03), "eec": (53.03, -10.69),
                       "samc": (56.16, -8.24)},
    "split-mini-imagenet": {"finetune": (33.31, -16.40), "ewc": (32.66, -14.83), "lwf": (34.17, -13.72),
                            "icarl": (40.03, -12.16), "gem": (40.78, -9.87), "er": (40.04, -13.43),
                            "mer": (39.63, -11.93), "ebm": (39.52, -11.75),
                            "eec": (37.32, -12.46), "samc": (46.98, -4.12)},
}
TIME_PHASES = ("train_step", "gradcam", "encode", "inpaint", "completion", "autoencoder", "memory_grads", "qp",
               "evaluate")


def _ms(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _fmt(values: list[float], digits: int = 2) -> str:
    """``mean ± sample std``; one value has no spread to show: ``value (n=1)``."""
    m, s = _ms(values)
    if len(values) == 1:
        return f"{m:.{digits}f} (n=1)"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _groups(runs: list[Run], key: Callable[[Run], Any]) -> dict[Any, list[Run]]:
    out: dict[Any, list[Run]] = {}
    for r in runs:
        out.setdefault(key(r), []).append(r)
    return out


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Rows (dicts with the same keys) as CSV text, the keys as header."""
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows (dicts with the same keys) as a Markdown table, the keys as header."""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _markdown(title: str, note: str, rows: list[dict[str, Any]]) -> str:
    return f"# {title}\n\n{note}\n\n{markdown_table(rows)}\n"


def _score_cols(res: list[dict[str, Any]]) -> dict[str, str]:
    return {"ACC": _fmt([r["acc"] for r in res]), "BWT (paper, /(T-1))": _fmt([r["bwt"] for r in res]),
            "BWT (GEM code, /T)": _fmt([r["bwt_gem_code"] for r in res])}


def _per_task(res: list[dict[str, Any]], key: str) -> list[float]:
    """``key`` (memory_images, memory_bytes) averaged over the tasks that keep a memory (all but the
    last), per run."""
    return [float(np.mean(r[key][:-1] or r[key])) for r in res]


def _learned(res: list[dict[str, Any]]) -> list[float]:
    """Mean accuracy of each task right after it is learned (the diagonal of R): plasticity."""
    return [float(np.mean(np.diag(np.array(r["accuracy_matrix"])))) for r in res]


def _projected(res: list[dict[str, Any]]) -> str:
    """Percentage of the steps with past memories whose gradient GEM's constraint projected."""
    pct = []
    for r in res:
        stats = r.get("method_stats") or []
        steps = sum(s.get("constrained_steps", 0) for s in stats)
        if steps:
            pct.append(100.0 * sum(s.get("projected_steps", 0) for s in stats) / steps)
    return _fmt(pct, 1) if len(pct) == len(res) else "—"


def _images(res: list[dict[str, Any]]) -> list[float]:
    return _per_task(res, "memory_images")


def table1(cfg: Config, benchmark: str, runs: list[Run], results: dict[str, Any]) -> tuple[str, list[dict]]:
    """One row per method (its Table 1 runs), then one per ``table1_variants`` entry, labelled by it."""
    paper = PAPER_TABLE1.get(benchmark, {})
    b = spec(cfg, benchmark)
    wanted = {r.name for r in runs}
    groups = [(m, [r for r in rs if r.name in wanted]) for m, rs in
              _groups(artifact_runs(cfg, benchmark, "figure3"), lambda r: r.method).items()]
    groups += [(row["row"], [r for r in rs if r.name in wanted])
               for _, row, rs in row_runs(cfg, benchmark, b.table1_variants, results)]
    rows = []
    for label, rs in groups:
        if not rs:                                    # samc table --partial: a row not run yet
            continue
        res = [results[r.name] for r in rs]
        row = {"method": label, "seeds": " ".join(str(r.seed) for r in rs), **_score_cols(res),
               "images/task": f"{np.mean(_images(res)):.1f}", "wall s": f"{np.mean([r['wall_s'] for r in res]):.0f}"}
        if paper:
            acc, bwt = paper.get(label, (None, None))
            row["paper ACC / BWT"] = f"{acc} / {bwt}" if acc is not None else "—"
        rows.append(row)
    note = ("Table 1: ACC and BWT (%) mean ± std over seeds; the paper's BWT convention is the main "
            "column. Memory: the budget of `memory.images_per_task` raw images per task."
            + (" Rows after the methods are documented variants (`table1_variants`), not the paper's method."
               if b.table1_variants else ""))
    return _markdown(f"{benchmark}: Table 1", note, rows), rows


def _sweep_rows(runs: list[Run], results: dict[str, Any], column: str, value: Callable[[Run], Any],
                images: Callable[[list[dict[str, Any]]], str], images_first: bool) -> list[dict[str, Any]]:
    """One row per value of a swept setting: the value, the seeds, images per task and the scores."""
    rows = []
    for v, rs in _groups(runs, value).items():
        res = [results[r.name] for r in rs]
        head = {column: v, "seeds": " ".join(str(r.seed) for r in rs)}
        imgs = {"images/task": images(res)}
        rows.append({**head, **imgs, **_score_cols(res)} if images_first else {**head, **_score_cols(res), **imgs})
    return rows


def table2(cfg: Config, benchmark: str, runs: list[Run], results: dict[str, Any]) -> tuple[str, list[dict]]:
    rows = _sweep_rows(runs, results, "completion", lambda r: _config(cfg, r).samc.completion,
                       lambda res: f"{np.mean(_images(res)):.1f}", images_first=False)
    note = "Table 2: SAMC's pattern completion R / A_ξ (zero padding, rule-based, autoencoder, rule + autoencoder)."
    return _markdown(f"{benchmark}: Table 2", note, rows), rows


def _megabytes(module: Any) -> float:
    return sum(p.numel() * p.element_size() for p in module.parameters()) / 1e6


def table3(cfg: Config, benchmark: str, runs: list[Run], results: dict[str, Any]) -> tuple[str, list[dict]]:
    from samc.models import InpaintAE, ResNet18

    rows = []
    for method, rs in _groups(runs, lambda r: r.method).items():
        c = _config(cfg, rs[0])
        res = [results[r.name] for r in rs]
        model_mb = _megabytes(ResNet18(c.dataset.n_tasks, c.dataset.classes_per_task))
        ae_mb = _megabytes(InpaintAE(3)) if method == "samc" else 0.0
        image_bytes = 3 * c.dataset.image_size ** 2
        mem_mb = [sum(r["memory_bytes"]) / 1e6 for r in res]
        dense_mb = [sum(r["memory_images"]) * image_bytes / 1e6 for r in res]
        row = {"method": method, "seeds": " ".join(str(r.seed) for r in rs),
               "classifier MB": f"{model_mb:.3f}", "memory MB": _fmt(mem_mb, 3),
               "same images dense MB": _fmt(dense_mb, 3), "AE MB": f"{ae_mb:.3f}",
               "images stored": _fmt([float(sum(r["memory_images"])) for r in res], 1),
               "wall s": _fmt([r["wall_s"] for r in res], 1)}
        for phase in TIME_PHASES:
            row[f"{phase} s"] = _fmt([sum(t.get(phase, 0.0) for t in r["timings"]) for r in res], 1)
        rows.append(row)
    by = {r["method"]: r for r in rows}
    res_all = [results[r.name] for r in runs]
    if "gem" in by and "samc" in by:
        def mean(cell: str) -> float:
            return float(cell.split(" ± ")[0])
        g, s = by["gem"], by["samc"]
        ratio = {k: "" for k in rows[0]}
        ratio.update({"method": "samc / gem", "memory MB": f"{mean(s['memory MB']) / mean(g['memory MB']):.2f}",
                      "same images dense MB": f"{mean(s['memory MB']) / mean(s['same images dense MB']):.2f} (samc)",
                      "images stored": f"{mean(s['images stored']) / mean(g['images stored']):.2f}",
                      "wall s": f"{mean(s['wall s']) / mean(g['wall s']):.2f}" if _one_device(res_all)
                      else "— (devices differ)"})
        rows.append(ratio)
    note = ("Table 3: memory and time of SAMC vs GEM (means ± std over seeds, sums over tasks). "
            "`same images dense MB`: what the stored images would take as raw uint8; the ratio row "
            "compares SAMC with GEM (time: whole run wall time, given only when every run was trained "
            "on one and the same device; it cannot see other work sharing that device).")
    return _markdown(f"{benchmark}: Table 3", note, rows), rows


def _one_device(res: list[dict[str, Any]]) -> bool:
    """Every run trained on the same single device (a run resumed elsewhere lists several)."""
    devices = {tuple(r.get("devices", ())) for r in res}
    return len(devices) == 1 and len(next(iter(devices))) == 1


def table4(cfg: Config, benchmark: str, runs: list[Run], results: dict[str, Any]) -> tuple[str, list[dict]]:
    rows = _sweep_rows(runs, results, "mu", lambda r: _config(cfg, r).samc.mu,
                       lambda res: _fmt(_images(res), 1), images_first=True)
    note = ("Table 4 (and Figure 5): images SAMC stores per task (mean over tasks with a memory, ± std "
            f"over seeds) at a budget of {_config(cfg, runs[0]).memory.images_per_task} raw images, and ACC, vs μ.")
    return _markdown(f"{benchmark}: Table 4", note, rows), rows


def row_runs(cfg: Config, benchmark: str, rows: list[dict[str, Any]],
             results: dict[str, Any]) -> list[tuple[int, dict[str, Any], list[Run]]]:
    """``(number, row, its runs that have results)`` for each row of a benchmark's row list
    (attribution, gap, codecs); with ``samc table --partial`` a row's list may be empty."""
    return [(i, row, [r for r in attribution_row_runs(cfg, benchmark, row) if r.name in results])
            for i, row in enumerate(rows, 1)]


def paired_by_seed(mine: dict[int, float], theirs: dict[int, float]) -> Any:
    """The paired difference (samc.stats) of ACC over the seeds both rows have, None if none."""
    from samc.stats import paired_difference

    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    return paired_difference([mine[s] for s in seeds], [theirs[s] for s in seeds])


def attribution(cfg: Config, benchmark: str, runs: list[Run], results: dict[str, Any]) -> tuple[str, list[dict]]:
    rows = []
    for i, row, rs in row_runs(cfg, benchmark, spec(cfg, benchmark).attribution, results):
        if not rs:                                    # samc table --partial: a row not run yet
            continue
        res = [results[r.name] for r in rs]
        kb = [b / 1e3 for b in _per_task(res, "memory_bytes")]
        rows.append({"#": i, "row": row["row"], "method": row["method"],
                     "overrides": " ".join(f"{k}={v}" for k, v in row["set"].items()) or "—",
                     "seeds": " ".join(str(r.seed) for r in rs), "images/task": _fmt(_images(res), 1),
                     "memory kB/task": _fmt(kb, 1), **_score_cols(res),
                     "learned (diag R)": _fmt(_learned(res)), "projected %": _projected(res)})
    note = ("Attribution ablations: what SAMC's gain over GEM is made of. Each row is the benchmark's "
            "protocol with the overrides shown (mean ± std over seeds; images and memory: per task, over "
            "the tasks that keep a memory). learned: mean accuracy of each task right after learning it "
            "(plasticity); projected: share of the steps with past memories whose gradient the GEM "
            "constraint projected (— for runs that predate the counter).")
    return _markdown(f"{benchmark}: attribution", note, rows), rows


def _forgetting(res: list[dict[str, Any]]) -> list[float]:
    """Mean over the first T-1 tasks of (best accuracy before the last task − final accuracy)."""
    out = []
    for r in res:
        R = np.array(r["accuracy_matrix"])
        T = len(R)
        out.append(float(np.mean([R[j:T - 1, j].max() - R[T - 1, j] for j in range(T - 1)])) if T > 1 else 0.0)
    return out


def gap(cfg: Config, benchmark: str, runs: list[Run], results: dict[str, Any]) -> tuple[str, list[dict]]:
    """Each departure of the authors' code from the paper, and all together, against our default SAMC
    and our GEM: paired by seed (the seeds both rows have), mean difference and its 95% interval."""
    by_row = [(row, {r.seed: results[r.name] for r in rs})
              for _, row, rs in row_runs(cfg, benchmark, spec(cfg, benchmark).gap, results)]
    refs = {row["ref"]: got for row, got in by_row if row.get("ref")}

    def versus(got: dict[int, dict], ref: str) -> str:
        other = refs.get(ref)
        if other is None or other is got:
            return "—"
        d = paired_by_seed({s: x["acc"] for s, x in got.items()}, {s: x["acc"] for s, x in other.items()})
        if d is None:
            return "—"
        return f"{d} (n={d.n})" if d.n > 1 else str(d)

    rows = []
    for i, (row, got) in enumerate(by_row, 1):
        if not got:                                   # samc table --partial: a row not run yet
            continue
        res = [got[s] for s in sorted(got)]
        rows.append({"#": i, "row": row["row"], "method": row["method"],
                     "overrides": " ".join(f"{k}={v}" for k, v in row["set"].items()) or "—",
                     "seeds": " ".join(str(s) for s in sorted(got)), "images/task": _fmt(_images(res), 1),
                     "ACC": _fmt([r["acc"] for r in res]), "BWT (paper)": _fmt([r["bwt"] for r in res]),
                     "learned (diag R)": _fmt(_learned(res)), "forgetting": _fmt(_forgetting(res)),
                     "ΔACC vs our SAMC [95% CI]": versus(got, "samc"),
                     "ΔACC vs our GEM [95% CI]": versus(got, "gem")})
    note = ("The gap to the SAMC authors' public code (issue 16): each of its departures from the paper "
            "alone, then all together, beside our default SAMC and our GEM. ACC, BWT, learned (mean "
            "accuracy of each task right after learning it: plasticity) and forgetting (mean over the "
            "first T-1 tasks of best earlier accuracy minus final accuracy) are mean ± std over seeds; "
            "Δ columns: mean paired difference of ACC over the seeds both rows have, with its 95% "
            "Student-t interval (samc.stats). The authors' whole-batch admission is not a row: it keeps "
            "the same memory as our FIFO whenever a batch fits the budget (tests/test_samc_variants.py).")
    return _markdown(f"{benchmark}: the gap to the authors' code", note, rows), rows


def figure3(cfg: Config, benchmark: str, runs: list[Run], results: dict[str, Any]) -> tuple[Any, list[dict]]:
    rows = []
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for method, rs in _groups(runs, lambda r: r.method).items():
        curves = np.array([np.array(results[r.name]["accuracy_matrix"])[:, 0] for r in rs])
        m, s = curves.mean(0), curves.std(0, ddof=1) if len(curves) > 1 else np.zeros(curves.shape[1])
        x = np.arange(1, len(m) + 1)
        ax.plot(x, m, marker="o", ms=3, label=method, lw=2.2 if method == "samc" else 1.2)
        ax.fill_between(x, m - s, m + s, alpha=0.12)
        rows += [{"method": method, "tasks_learned": int(t), "task1_accuracy_mean": round(float(a), 3),
                  "task1_accuracy_std": round(float(d), 3)} for t, a, d in zip(x, m, s)]
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("accuracy on task 1 (%)")
    ax.set_title(f"{benchmark}: Figure 3 (mean ± std over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig, rows


def figure5(cfg: Config, benchmark: str, runs: list[Run], results: dict[str, Any]) -> tuple[Any, list[dict]]:
    rows = []
    for mu, rs in _groups(runs, lambda r: _config(cfg, r).samc.mu).items():
        res = [results[r.name] for r in rs]
        (a, da), (n, dn) = _ms([r["acc"] for r in res]), _ms(_images(res))
        rows.append({"mu": mu, "acc_mean": round(a, 3), "acc_std": round(da, 3),
                     "images_per_task_mean": round(n, 2), "images_per_task_std": round(dn, 2)})
    fig, ax = plt.subplots(figsize=(5, 3.4))
    mus = [r["mu"] for r in rows]
    ax.errorbar(mus, [r["acc_mean"] for r in rows], yerr=[r["acc_std"] for r in rows], marker="o", capsize=3,
                color="C3", label="ACC")
    ax.set_xlabel("μ")
    ax.set_ylabel("ACC (%)", color="C3")
    ax2 = ax.twinx()
    ax2.plot(mus, [r["images_per_task_mean"] for r in rows], marker="s", ls="--", color="C0")
    ax2.set_ylabel("images stored per task", color="C0")
    ax.set_title(f"{benchmark}: Figure 5 / Table 4 (SAMC vs μ)", fontsize=9)
    ax.grid(alpha=0.3)
    return fig, rows


def figure2(cfg: Config, benchmark: str, runs: list[Run], results: dict[str, Any]) -> tuple[Any, list[dict]]:
    rows = []
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for method, rs in _groups(runs, lambda r: r.method).items():
        pts = []
        for size, group in _groups(rs, lambda r: _config(cfg, r).memory.images_per_task).items():
            a, da = _ms([results[r.name]["acc"] for r in group])
            pts.append((size, a, da))
            rows.append({"method": method, "memory_per_task": size, "acc_mean": round(a, 3), "acc_std": round(da, 3),
                         "seeds": " ".join(str(r.seed) for r in group)})
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                    label=method)
    ax.set_xlabel("memory per task (raw images of budget)")
    ax.set_ylabel("ACC (%)")
    ax.set_title(f"{benchmark}: Figure 2 (mean ± std over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig, rows


def _config(cfg: Config, run: Run) -> Config:
    return cfg.with_overrides(run.overrides)


def _codecs(cfg: Config, benchmark: str, runs: list[Run], results: dict[str, Any]) -> tuple[str, list[dict], Any]:
    from samc.codec_table import codecs      # it reads this module's helpers
    return codecs(cfg, benchmark, runs, results)


TABLES = {"table1": table1, "table2": table2, "table3": table3, "table4": table4, "attribution": attribution,
          "gap": gap, "codecs": _codecs}
FIGURES = {"figure3": figure3, "figure5": figure5, "figure2": figure2}


def _devices(runs: list[Run], results: dict[str, Any]) -> dict[str, list[str]]:
    """Which machine trained which runs (from each run's metrics; older runs did not record it)."""
    out: dict[str, list[str]] = {}
    for r in runs:
        out.setdefault(", ".join(results[r.name].get("devices", ["unrecorded"])), []).append(r.name)
    return out


def write_artifact(cfg: Config, benchmark: str, artifact: str, runs: list[Run], results: dict[str, Any],
                   out: Path, missing: list[str] | None = None) -> list[Path]:
    """Render ``artifact`` from ``results`` (run name -> metrics.json) into ``out``; return the files.
    ``missing``: runs of the artifact without results (``samc table --partial``), named in the output."""
    out = Path(out)
    missing = list(missing or [])
    prov = {"artifact": artifact, "benchmark": benchmark, "provenance": provenance(),
            "definition": asdict(spec(cfg, benchmark)), "seeds": sorted({r.seed for r in runs}),
            "runs": {r.name: list(r.overrides) for r in runs}, "missing_runs": missing,
            "devices": _devices(runs, results), "params": cfg.to_dict()}
    written = []
    if artifact in TABLES:
        text, rows, *figure = TABLES[artifact](cfg, benchmark, runs, results)   # a table may bring its figure
        if missing:
            title, _, rest = text.partition("\n")
            text = (f"{title} (PARTIAL: {len(runs)} of {len(runs) + len(missing)} runs)\n{rest}\n"
                    f"Missing runs ({len(missing)}), not counted in the rows above: {', '.join(missing)}\n")
        text += ("\n## Provenance\n\n```json\n" + json.dumps(prov["provenance"], indent=2) + "\n```\n\n"
                 "Trained on: " + "; ".join(f"{d} ({len(n)} runs)" for d, n in prov["devices"].items()) + "\n\n"
                 f"Runs ({len(runs)}; overrides of params.yaml in `{artifact}.json`): "
                 + ", ".join(r.name for r in runs) + "\n")
        io.write_text(out / f"{artifact}.csv", csv_text(rows))
        io.write_text(out / f"{artifact}.md", text)
        written = [out / f"{artifact}.md", out / f"{artifact}.csv"]
        if figure:
            save_png(figure[0], out / f"{artifact}.png")
            written.append(out / f"{artifact}.png")
    else:
        fig, rows = FIGURES[artifact](cfg, benchmark, runs, results)
        if missing:
            ax = fig.axes[0]
            ax.set_title(f"{ax.get_title()}\nPARTIAL: {len(runs)} of {len(runs) + len(missing)} runs", fontsize=9)
        save_png(fig, out / f"{artifact}.png")
        io.write_text(out / f"{artifact}.csv", csv_text(rows))
        written = [out / f"{artifact}.png", out / f"{artifact}.csv"]
    io.write_json(out / f"{artifact}.json", prov)
    return [*written, out / f"{artifact}.json"]
