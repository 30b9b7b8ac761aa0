"""Command line: ``samc run | prepare | train-task | evaluate | memory show``.

Every command reads the one configuration, ``params.yaml`` (``--params``), with optional
``--set section.key=value`` overrides, validated before any work is done.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from samc import config as config_mod

log = logging.getLogger("samc")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter, e.g. --set samc.mu=0.7 (repeatable)")


def _format_matrix(R: list[list[float]]) -> str:
    T = len(R[0])
    head = "after task | " + " ".join(f"T{j + 1:>5}" for j in range(T))
    lines = [head, "-" * len(head)]
    for i, row in enumerate(R):
        lines.append(f"{i + 1:>10} | " + " ".join(f"{a:6.2f}" for a in row))
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from samc.train import experiment_name, run_stream

    cfg = config_mod.load(args.params, args.overrides)
    run_dir = Path(args.out) if args.out else Path(cfg.run.out) / experiment_name(cfg)
    result = run_stream(cfg, run_dir, progress=not args.no_progress)
    print(f"run: {run_dir}")
    print(_format_matrix(result["accuracy_matrix"]))
    print(f"ACC {result['acc']:.2f}  BWT {result['bwt']:.2f} (paper, /(T-1))  "
          f"BWT {result['bwt_gem_code']:.2f} (GEM code, /T)  wall {result['wall_s']:.1f} s")
    print(f"images stored per task: {result['memory_images']}")
    return 0


def cmd_train_task(args: argparse.Namespace) -> int:
    from samc.train import load_tasks, resume, save_task, train_task

    cfg = config_mod.load(args.params, args.overrides)
    tasks = load_tasks(cfg)
    t = args.task - 1
    if not 0 <= t < len(tasks):
        raise config_mod.ConfigError(f"--task {args.task}: must be between 1 and {len(tasks)}")
    learner = resume(cfg, Path(args.run_dir), t, in_channels=tasks[0].x_train.shape[1])
    row = train_task(learner, tasks, t, progress=not args.no_progress)
    save_task(learner, Path(args.run_dir), t, row)
    print(json.dumps({"task": args.task, "accuracies": row["accuracies"]}))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from samc import io
    from samc.train import collect

    cfg = config_mod.load(args.params, args.overrides)
    result = collect(Path(args.run_dir), cfg.dataset.n_tasks)
    io.write_json(Path(args.run_dir) / "metrics.json", result)
    print(_format_matrix(result["accuracy_matrix"]))
    print(f"ACC {result['acc']:.2f}  BWT {result['bwt']:.2f}")
    return 0


def cmd_memory_show(args: argparse.Namespace) -> int:
    from samc.memory import describe, load_snapshot

    mem = load_snapshot(args.snapshot)
    info = describe(mem)
    for k, v in info.items():
        print(f"{k:>20}: {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samc", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="learn the whole task stream in one process (resumes)")
    _add_config_args(p)
    p.add_argument("--out", help="run folder (default: <run.out>/<experiment>)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("train-task", help="learn one task from the previous task's state")
    _add_config_args(p)
    p.add_argument("--task", type=int, required=True, help="1-based task number")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train_task)

    p = sub.add_parser("evaluate", help="accuracy matrix, ACC and BWT of a finished run")
    _add_config_args(p)
    p.add_argument("--run-dir", required=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("memory", help="inspect episodic-memory snapshots")
    msub = p.add_subparsers(dest="memory_command", required=True)
    q = msub.add_parser("show", help="statistics of one snapshot (task_<t>/memory.zarr)")
    q.add_argument("snapshot")
    q.set_defaults(func=cmd_memory_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (config_mod.ConfigError, FileNotFoundError, ValueError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
