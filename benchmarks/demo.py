"""The default run (`samc run`, params.yaml as it is) measured: does the embedded stream show the
problem and its remedy? Trains ``finetune`` (no remedy), ``gem`` and ``samc`` on ``--seeds`` with the
parameters of ``--params`` and nothing else changed, one after another, 1 thread each (as
params.yaml says), and checks what the README promises of the default (issue 18):

* every task learned to >= 80 % right after training it (the diagonal of the accuracy matrix), by
  every method on every seed;
* ``finetune`` forgets: BWT <= -15 (the paper's convention) on every seed;
* ``gem`` and ``samc`` ahead of ``finetune`` by >= 5 ACC on each seed (paired: same data and seed);
* ``samc``, the default method, in <= 180 s of wall time per run.

Prints one markdown table (per seed and mean) and the checks; ``--out`` (default ``runs/demo``)
keeps the runs, so a second call only reads them (a run resumes where it stopped).

    python benchmarks/demo.py                       # 3 seeds x 3 methods, ~10 min on 2 cores
    python benchmarks/demo.py --seeds 0 --methods samc
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from samc.config import load
from samc.train import run_stream

log = logging.getLogger("demo")

LEARNED, FORGETS, AHEAD, SAMC_WALL_S = 80.0, -15.0, 5.0, 180.0


def measure(params: str, methods: list[str], seeds: list[int], out: Path) -> dict[tuple[str, int], dict]:
    results = {}
    for seed in seeds:
        for method in methods:
            cfg = load(params, [f"train.method={method}", f"train.seed={seed}"])
            log.info("%s seed %d", method, seed)
            results[method, seed] = run_stream(cfg, out / f"{method}-s{seed}", progress=False)
    return results


def table(results: dict[tuple[str, int], dict], methods: list[str], seeds: list[int]) -> list[str]:
    lines = ["| method | seed | ACC | BWT | least accuracy right after learning a task | wall (s) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for method in methods:
        for seed in seeds:
            r = results[method, seed]
            diag = np.diag(np.array(r["accuracy_matrix"]))
            lines.append(f"| {method} | {seed} | {r['acc']:.2f} | {r['bwt']:.2f} | {diag.min():.1f} | "
                         f"{r['wall_s']:.0f} |")
        accs = [results[method, s]["acc"] for s in seeds]
        bwts = [results[method, s]["bwt"] for s in seeds]
        lines.append(f"| {method} | mean | {np.mean(accs):.2f} | {np.mean(bwts):.2f} | | |")
    return lines


def checks(results: dict[tuple[str, int], dict], methods: list[str], seeds: list[int]) -> list[tuple[bool, str]]:
    out = []
    for (method, seed), r in sorted(results.items()):
        low = float(np.diag(np.array(r["accuracy_matrix"])).min())
        out.append((low >= LEARNED, f"{method} s{seed}: every task learned to >= {LEARNED:.0f} % (least {low:.1f})"))
    for seed in seeds if "finetune" in methods else []:
        fine = results["finetune", seed]
        out.append((fine["bwt"] <= FORGETS, f"finetune s{seed}: BWT {fine['bwt']:.2f} <= {FORGETS:.0f}"))
        for method in ("gem", "samc"):
            if method in methods:
                gain = results[method, seed]["acc"] - fine["acc"]
                out.append((gain >= AHEAD, f"{method} s{seed}: ACC - finetune's = {gain:+.2f} >= +{AHEAD:.0f}"))
    for seed in seeds:
        if "samc" in methods:
            wall = results["samc", seed]["wall_s"]
            out.append((wall <= SAMC_WALL_S, f"samc s{seed}: wall {wall:.0f} s <= {SAMC_WALL_S:.0f} s"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--methods", nargs="+", default=["finetune", "gem", "samc"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", default="runs/demo", help="run folders (kept; reused on a second call)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("samc").setLevel(logging.WARNING)
    results = measure(args.params, args.methods, args.seeds, Path(args.out))
    print("\n".join(table(results, args.methods, args.seeds)))
    verdicts = checks(results, args.methods, args.seeds)
    for ok, text in verdicts:
        print(f"{'ok  ' if ok else 'FAIL'} {text}")
    return 0 if all(ok for ok, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
