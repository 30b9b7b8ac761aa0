"""samc: Saliency-Augmented Memory Completion for continual learning: train a task stream, inspect
its episodic memory, build the paper's tables (``samc run | prepare | train-task | evaluate | report
| table | dvc-yaml | compare | memory show/diff``).

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
from samc import io

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


def _run_config(args: argparse.Namespace) -> tuple[config_mod.Config, str]:
    """(configuration, folder name) of `samc run`: params.yaml, with ``--benchmark`` that benchmark's
    settings for the method (its `set`, then its `methods` entry), then the ``--set`` overrides. The
    name is the pipeline's when the pipeline has this experiment (``main`` of the grid,
    ``<benchmark>/<run>``), else ``<dataset>-<method>-s<seed>-<hash of every parameter>``."""
    from samc import benchmarks
    from samc.pipeline import grid_name
    from samc.train import experiment_name

    params = config_mod.load(args.params)
    if not args.benchmark:
        cfg = config_mod.load(args.params, args.overrides)
        return cfg, grid_name(params, cfg) or experiment_name(cfg)
    base = benchmarks.base_overrides(params, args.benchmark)
    chosen = config_mod.load(args.params, [*base, *args.overrides])          # the method and seed
    run = benchmarks.make_run(params, args.benchmark, chosen.train.method, chosen.train.seed,
                              completion=chosen.samc.completion, mu=chosen.samc.mu,
                              memory=chosen.memory.images_per_task)      # the sweeps' names
    cfg = config_mod.load(args.params, [*run.overrides, *args.overrides])
    sections = config_mod.RUN_SECTIONS
    same = cfg.digest(sections) == params.with_overrides(run.overrides).digest(sections)
    return cfg, run.experiment if same else experiment_name(cfg)


def cmd_run(args: argparse.Namespace) -> int:
    from samc.train import run_stream

    cfg, name = _run_config(args)
    run_dir = Path(args.out) if args.out else Path(cfg.run.out) / name
    print(f"run folder: {run_dir}", flush=True)     # named at the start: watch it, or inspect it later
    with io.run_lock(run_dir):
        result = run_stream(cfg, run_dir, progress=not args.no_progress)
    print(f"run: {run_dir}")
    print(_format_matrix(result["accuracy_matrix"]))
    print(f"ACC {result['acc']:.2f}  BWT {result['bwt']:.2f} (paper, /(T-1))  "
          f"BWT {result['bwt_gem_code']:.2f} (GEM code, /T)  wall {result['wall_s']:.1f} s")
    print(f"images stored per task: {result['memory_images']}")
    return 0


def _experiment(args: argparse.Namespace) -> tuple[config_mod.Config, str]:
    """(config of experiment ``--experiment`` of the grid, its name) for the pipeline commands."""
    from samc import pipeline

    exp = pipeline.experiment(config_mod.load(args.params, args.overrides), args.experiment)
    return config_mod.load(args.params, [*args.overrides, *exp.overrides]), exp.name


def cmd_prepare(args: argparse.Namespace) -> int:
    from samc import pipeline
    from samc.data.store import dataset_params, write_tasks
    from samc.train import load_tasks

    cfg = config_mod.load(args.params, args.overrides)
    out = Path(args.out or pipeline.PREPARED)
    if args.benchmark:
        from samc.benchmarks import base_overrides

        cfg = config_mod.load(args.params, [*args.overrides, *base_overrides(cfg, args.benchmark)])
        out = Path(args.out or pipeline.prepared_dir(f"{args.benchmark}/"))
    tasks = load_tasks(cfg)
    write_tasks(tasks, out, dataset_params(cfg))
    print(f"prepared {len(tasks)} tasks in {out}: " + ", ".join(
        f"task {t.index + 1} {t.class_names} ({len(t.y_train)}/{len(t.y_test)})" for t in tasks))
    return 0


def cmd_train_task(args: argparse.Namespace) -> int:
    from samc import pipeline
    from samc.train import load_tasks, resume, save_task, train_task

    cfg, exp = _experiment(args)
    data = Path(args.data or pipeline.prepared_dir(exp))
    tasks = load_tasks(cfg, data if data.exists() or args.data else None)
    t = args.task - 1
    if not 0 <= t < len(tasks):
        raise config_mod.ConfigError(f"--task {args.task}: must be between 1 and {len(tasks)}")
    run_dir = Path(args.run_dir or pipeline.run_dir(cfg, exp))
    with io.run_lock(run_dir):
        learner = resume(cfg, run_dir, t, in_channels=tasks[0].x_train.shape[1])
        row = train_task(learner, tasks, t, progress=not args.no_progress)
        save_task(learner, run_dir, t, row)
    print(json.dumps({"experiment": exp, "task": args.task, "accuracies": row["accuracies"]}))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from samc import pipeline
    from samc.report import write_experiment_results
    from samc.train import collect

    cfg, exp = _experiment(args)
    run_dir = Path(args.run_dir or pipeline.run_dir(cfg, exp))
    result = collect(run_dir, cfg.dataset.n_tasks)
    result.update(experiment=exp, dataset=cfg.dataset.name, method=cfg.train.method, seed=cfg.train.seed,
                  mu=cfg.samc.mu if cfg.train.method == "samc" else None,
                  completion=cfg.samc.completion if cfg.train.method == "samc" else None)
    out = Path(args.out or pipeline.results_dir(exp))
    write_experiment_results(result, out, f"{exp}: {cfg.dataset.name}, {cfg.train.method}, seed {cfg.train.seed}")
    print(_format_matrix(result["accuracy_matrix"]))
    print(f"ACC {result['acc']:.2f}  BWT {result['bwt']:.2f} (paper)  BWT {result['bwt_gem_code']:.2f} (GEM code)")
    print(f"wrote {out}/metrics.json, accuracy.csv, accuracy_matrix.png, first_task.png, loss.png")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from samc import io, pipeline
    from samc.report import write_report

    cfg = config_mod.load(args.params, args.overrides)
    results = {}
    for exp in pipeline.experiments(cfg):
        path = Path(pipeline.results_dir(exp.name)) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run `samc evaluate --experiment {exp.name}` first")
        results[exp.name] = io.read_json(path)
    write_report(results, Path(pipeline.RESULTS), cfg.to_dict())
    print((Path(pipeline.RESULTS) / "report.md").read_text().split("## Provenance")[0])
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from samc import benchmarks, io, pipeline
    from samc.tables import write_artifact

    cfg = config_mod.load(args.params, args.overrides)
    runs = benchmarks.artifact_runs(cfg, args.benchmark, args.artifact)
    if not runs:
        raise config_mod.ConfigError(f"{args.params}: benchmarks.{args.benchmark} defines no runs for {args.artifact}")
    results, missing = {}, []
    for run in runs:
        path = Path(pipeline.results_dir(run.experiment)) / "metrics.json"
        if path.is_file():
            results[run.name] = io.read_json(path)
        elif args.partial:
            missing.append(run.name)
        else:
            raise FileNotFoundError(f"{path}: missing; run `snakemake --cores 4 {path}` (or "
                                    f"`samc train-task`/`samc evaluate --experiment {run.experiment}`) first")
    if not results:
        raise FileNotFoundError(f"{pipeline.RESULTS}/{args.benchmark}: no run of {args.artifact} has results yet")
    out = Path(pipeline.RESULTS) / args.benchmark
    written = write_artifact(cfg, args.benchmark, args.artifact, [r for r in runs if r.name in results],
                             results, out, missing=missing)
    for path in written:
        if path.suffix == ".md":
            print(path.read_text().split("## Provenance")[0])
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_dvc_yaml(args: argparse.Namespace) -> int:
    from samc import pipeline

    cfg = config_mod.load(args.params, args.overrides)
    text = pipeline.dvc_yaml(cfg, args.params)
    if args.check:
        current = Path(args.out).read_text() if Path(args.out).is_file() else ""
        if current != text:
            log.error("%s is stale: run `samc dvc-yaml` to regenerate it from samc/pipeline.py", args.out)
            return 1
        print(f"{args.out} is up to date")
        return 0
    pipeline.write_dvc_yaml(cfg, args.out, args.params)
    print(f"wrote {args.out} ({len(pipeline.stages(cfg))} stages)")
    return 0


def cmd_memory_show(args: argparse.Namespace) -> int:
    from samc.memory_view import show

    for line in show(Path(args.snapshot), png=Path(args.png) if args.png else None,
                     data=Path(args.data) if args.data else None, n=args.n):
        print(line)
    return 0


def cmd_memory_diff(args: argparse.Namespace) -> int:
    from samc.memory_view import diff

    for line in diff(Path(args.a), Path(args.b)):
        print(line)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from samc.compare import Pair, compare, write_comparison

    pairs = [Pair(label, [Path(f) for f in a.split()], [Path(f) for f in b.split()]) for label, a, b in args.pair]
    per_seed, summary = compare(pairs, names=(args.a_name, args.b_name))
    out = Path(args.out)
    write_comparison(out, args.title or out.stem, args.note, per_seed, summary, (args.a_name, args.b_name))
    for row in summary:
        print(f"{row['comparison']}: {row['seeds']} seeds, ΔACC ({args.a_name} − {args.b_name}) "
              f"{row['ΔACC [95% CI]']}, ΔBWT {row['ΔBWT [95% CI]']}")
    print(f"wrote {out.with_suffix('.md')}, {out.with_suffix('.csv')}")
    return 0


def _plain(text: str) -> str:
    """Docstring text for ``--help``: without the reST literal markup."""
    return text.replace("``", "")


def build_parser() -> argparse.ArgumentParser:
    from samc import __version__
    from samc.benchmarks import ARTIFACTS

    parser = argparse.ArgumentParser(prog="samc", description=_plain(__doc__.split("\n\n")[0]),
                                     epilog=_plain(__doc__.split("\n\n")[1]))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"samc {__version__}")
    # -v also after the subcommand (samc run -v); SUPPRESS keeps the top-level value when absent
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(subparsers, name: str, help: str) -> argparse.ArgumentParser:  # noqa: A002 - argparse's word
        return subparsers.add_parser(name, help=help, description=(help[:1].upper() + help[1:]).replace("%%", "%") + ".",
                                     parents=[verbose])

    p = command(sub, "run", help="learn the whole task stream in one process (resumes)")
    _add_config_args(p)
    p.add_argument("--benchmark", help="with the settings of this benchmark of params.yaml (its dataset "
                   "and protocol, the method's own values); --set still overrides them")
    p.add_argument("--out", help="run folder (default: <run.out>/<experiment>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=cmd_run)

    p = command(sub, "prepare", help="split the dataset into tasks and write them as Zarr (data/prepared)")
    _add_config_args(p)
    p.add_argument("--out", help="folder (default: data/prepared, or data/benchmarks/<benchmark>)")
    p.add_argument("--benchmark", help="prepare the dataset of this benchmark of params.yaml")
    p.set_defaults(func=cmd_prepare)

    p = command(sub, "train-task", help="learn one task of an experiment from the previous task's state")
    _add_config_args(p)
    p.add_argument("--experiment", default="main", help="experiment of the grid (default: main)")
    p.add_argument("--task", type=int, required=True, help="1-based task number")
    p.add_argument("--run-dir", help="default: <run.out>/<experiment>")
    p.add_argument("--data", help="prepared tasks (default: data/prepared when present, else the source)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=cmd_train_task)

    p = command(sub, "evaluate", help="accuracy matrix, ACC, BWT and plots of a finished experiment")
    _add_config_args(p)
    p.add_argument("--experiment", default="main", help="experiment of the grid (default: main)")
    p.add_argument("--run-dir", help="default: <run.out>/<experiment>")
    p.add_argument("--out", help="default: results/<experiment>")
    p.set_defaults(func=cmd_evaluate)

    p = command(sub, "report", help="one table over every experiment of the grid (results/report.md)")
    _add_config_args(p)
    p.set_defaults(func=cmd_report)

    p = command(sub, "table", help="one table or figure of a benchmark (results/<benchmark>/<artifact>.*)")
    _add_config_args(p)
    p.add_argument("--benchmark", required=True, help="a benchmark of params.yaml, e.g. split-cifar10")
    p.add_argument("--artifact", required=True, choices=list(ARTIFACTS), metavar="ARTIFACT",
                   help=f"one of {', '.join(ARTIFACTS)}")
    p.add_argument("--partial", action="store_true",
                   help="render from the runs that have results, list the missing ones in the table "
                        "(a long benchmark's progress; the pipeline target always waits for every run)")
    p.set_defaults(func=cmd_table)

    p = command(sub, "dvc-yaml", help="render dvc.yaml from the pipeline's stages (samc/pipeline.py)")
    _add_config_args(p)
    p.add_argument("--out", default="dvc.yaml", help="where to write it (default: dvc.yaml)")
    p.add_argument("--check", action="store_true", help="exit 1 when the file differs (stale)")
    p.set_defaults(func=cmd_dvc_yaml)

    p = command(sub, "compare", help="paired comparison over seeds: per-seed ACC/BWT, mean difference, 95%% interval")
    p.add_argument("--pair", nargs=3, action="append", required=True, metavar=("LABEL", "A_RUNS", "B_RUNS"),
                   help="one comparison: its label, then the A and B run folders, each a space-separated list "
                        "(paired by seed; repeatable)")
    p.add_argument("--out", required=True, help="output path without suffix: writes <out>.md and <out>.csv")
    p.add_argument("--a-name", default="A", help="column name of the A side (default A)")
    p.add_argument("--b-name", default="B", help="column name of the B side (default B)")
    p.add_argument("--title", default="", help="the table's title (default: the --out file name)")
    p.add_argument("--note", default="", help="a paragraph under the title (protocol, command)")
    p.set_defaults(func=cmd_compare)

    p = command(sub, "memory", help="inspect episodic-memory snapshots")
    msub = p.add_subparsers(dest="memory_command", required=True, metavar="SUBCOMMAND")
    q = command(msub, "show", help="statistics of one snapshot, and a PNG grid of its images")
    q.add_argument("snapshot", help="task_<t> folder of a run, or its memory.zarr")
    q.add_argument("--png", help="write the grid here: ground truth, mask, masked, rule, autoencoder")
    q.add_argument("--data", help="prepared tasks for the ground truth (default: the data the run was made with)")
    q.add_argument("-n", type=int, default=8, help="images in the grid, the newest (default 8)")
    q.set_defaults(func=cmd_memory_show)
    q = command(msub, "diff", help="compare two snapshots (two tasks, or one task of two runs)")
    q.add_argument("a", help="a snapshot: task_<t> folder of a run, or its memory.zarr")
    q.add_argument("b", help="the other snapshot (another task of the run, or the same task of another run)")
    q.set_defaults(func=cmd_memory_diff)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    try:
        return args.func(args)
    except torch.OutOfMemoryError as exc:
        log.error("out of GPU memory in `samc %s`: %s. Completed tasks are kept; lower "
                  "train.eval_batch_size, set memory.grad_mode=loop, use a larger GPU or train.device=cpu",
                  args.command, str(exc).splitlines()[0] if str(exc) else "OutOfMemoryError")
        return 3
    except (config_mod.ConfigError, FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
