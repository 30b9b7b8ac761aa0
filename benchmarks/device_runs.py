"""Run many runs of one benchmark artifact at once on a lent machine and bring back their results.

For a short device lease (e.g. 15 minutes of one GPU): the runs of ``--artifact`` (or ``--runs``)
that have no ``results/<benchmark>/<run>/metrics.json`` yet are started ``--parallel`` at a time
(``samc run`` with the run's own overrides, 1 CPU thread each; CUDA MPS helps when it is running),
each finished run is collected with ``samc evaluate`` into ``<out>/results/<benchmark>/<run>/``,
and at ``--deadline`` seconds the runs still going are stopped (their finished tasks stay in
``runs/``; a later call resumes them when the folder is still there). Copy ``<out>/results`` into
``results/`` and render the table with ``samc table --benchmark B --artifact A --partial``.

    python benchmarks/device_runs.py --benchmark split-cifar10 --artifact gap --parallel 14 \\
        --deadline 480 --out "$OUT" --set train.device=cuda
    python benchmarks/device_runs.py --benchmark quick --artifact gap --parallel 2 --out /tmp/q   # CPU check

Only settings that do not change what is computed may be given with ``--set`` (the device, the
CPU threads): a run's name must keep meaning the same computation.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

from samc import benchmarks, config

ROOT = Path(__file__).resolve().parents[1]
NEUTRAL_SETS = ("train.device", "train.threads")
log = logging.getLogger("device_runs")


def _samc(*args: str) -> list[str]:
    return [sys.executable, "-m", "samc.cli", *args]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", required=True)
    ap.add_argument("--artifact", help="run every run of this artifact (e.g. gap, table1)")
    ap.add_argument("--runs", nargs="*", default=[], help="or these run names of the benchmark")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--deadline", type=float, default=float("inf"), help="seconds; stop what still runs then")
    ap.add_argument("--out", required=True, help="where results/<benchmark>/<run>/ are written")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--workdir", default=str(ROOT), help="where runs/ go and data/ is read (default: the checkout)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help=f"only {', '.join(NEUTRAL_SETS)}")
    ap.add_argument("--force", action="store_true", help="also runs that already have results")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for s in args.sets:
        if s.split("=", 1)[0] not in NEUTRAL_SETS:
            ap.error(f"--set {s}: only {', '.join(NEUTRAL_SETS)} may be set (a run's name must mean one computation)")
    cfg = config.load(args.params)
    if args.artifact:
        todo = benchmarks.artifact_runs(cfg, args.benchmark, args.artifact)
    else:
        todo = [benchmarks.find_run(cfg, f"{args.benchmark}/{name}") for name in args.runs]
    if not todo:
        ap.error("nothing to run: give --artifact or --runs")
    unique = {r.name: r for r in todo}
    out, work = Path(args.out).resolve(), Path(args.workdir).resolve()
    pending = [r for r in unique.values()
               if args.force or not (work / "results" / r.experiment / "metrics.json").is_file()]
    log.info("%d runs to do (%d already have results), %d at a time", len(pending), len(unique) - len(pending),
             args.parallel)
    start = time.monotonic()
    running: dict[str, tuple[subprocess.Popen, benchmarks.Run]] = {}
    done, failed = [], []
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    while pending or running:
        while pending and len(running) < args.parallel and time.monotonic() - start < args.deadline:
            r = pending.pop(0)
            sets = [a for s in (*r.overrides, *args.sets) for a in ("--set", s)]
            cmd = _samc("run", "--params", args.params, *sets, "--out", f"runs/{r.experiment}", "--no-progress")
            running[r.name] = (subprocess.Popen(cmd, cwd=work, stdout=(logs / f"{r.name}.log").open("w"),
                                                stderr=subprocess.STDOUT), r)
        for name, (proc, r) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode != 0:
                failed.append(name)
                log.error("%s failed (exit %d); see %s", name, proc.returncode, logs / f"{name}.log")
                continue
            subprocess.run(_samc("evaluate", "--params", args.params, "--experiment", r.experiment, "--run-dir",
                                 f"runs/{r.experiment}", "--out", str(out / "results" / r.experiment)),
                           cwd=work, check=True,
                           stdout=subprocess.DEVNULL)
            done.append(name)
            log.info("%s done (%d/%d) at %.0f s", name, len(done), len(unique), time.monotonic() - start)
        if time.monotonic() - start >= args.deadline:
            for name, (proc, _) in running.items():
                proc.terminate()
                log.warning("%s stopped at the deadline", name)
            for proc, _ in running.values():
                proc.wait()
            failed += [*running, *(r.name for r in pending)]
            running.clear()
            pending.clear()
        time.sleep(0.5)
    log.info("done: %s; not done: %s", " ".join(done) or "none", " ".join(failed) or "none")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
