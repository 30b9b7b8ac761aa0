"""The pipeline's stages, described once: the Snakefile builds its rules from :func:`stages`, and
``dvc.yaml`` is rendered from the same list (``samc dvc-yaml``; a test fails when it is stale).

    prepare ─► train <exp> task 1 ─► … ─► train <exp> task T ─► evaluate <exp> ─┐
                (one chain per experiment of the grid)                           ├─► report
                                                                                 ┘
An experiment is the configuration with one choice of (method, seed, μ) from ``grid``; each stage
is one ``samc`` command that reads ``params.yaml`` itself, so no value is typed twice.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from samc.config import RUN_SECTIONS, Config, from_dict

PREPARED = "data/prepared"
RESULTS = "results"


@dataclass(frozen=True)
class Experiment:
    name: str                      # stable id: "main", or e.g. "gem-s1-mu0.7" for a grid
    overrides: tuple[str, ...]     # --set arguments that turn params.yaml into this experiment


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    deps: list[str]
    outs: list[str]                # directories or files the stage produces (cached by DVC)
    params: list[str]              # params.yaml sections the stage depends on
    metrics: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)   # "kind": prepare | train | evaluate
    fingerprint: str = ""          # hash of the params the stage reads (Snakemake's rerun trigger)


def experiments(cfg: Config) -> list[Experiment]:
    """The grid's experiments (one, named ``main``, when every grid list is empty)."""
    g = cfg.grid
    dims = [("train.method", g.method, "{}"), ("train.seed", g.seed, "s{}"), ("samc.mu", g.mu, "mu{}")]
    dims = [(key, values, fmt) for key, values, fmt in dims if values]
    if not dims:
        return [Experiment("main", ())]
    out = []
    for combo in itertools.product(*(values for _, values, _ in dims)):
        name = "-".join(fmt.format(v) for (_, _, fmt), v in zip(dims, combo))
        out.append(Experiment(name, tuple(f"{key}={v}" for (key, _, _), v in zip(dims, combo))))
    return out


def grid_name(params: Config, cfg: Config) -> str | None:
    """The name of the experiment of ``params``'s grid that has ``cfg``'s parameters (None when
    none has): `samc run` then writes the folder the pipeline writes (``runs/main``)."""
    want = cfg.digest(RUN_SECTIONS)
    for exp in experiments(params):
        if params.with_overrides(exp.overrides).digest(RUN_SECTIONS) == want:
            return exp.name
    return None


def experiment(cfg: Config, name: str) -> Experiment:
    """Experiment ``name`` of the grid, or ``<benchmark>/<run>`` of a benchmark."""
    if "/" in name:
        from samc.benchmarks import find_run

        run = find_run(cfg, name)
        return Experiment(run.experiment, run.overrides)
    for exp in experiments(cfg):
        if exp.name == name:
            return exp
    known = ", ".join(e.name for e in experiments(cfg))
    raise ValueError(f"experiment {name!r} is not in the grid of params.yaml (known: {known})")


def experiment_config(raw: dict[str, Any], name: str, overrides: tuple[str, ...] = ()) -> Config:
    """The configuration of experiment ``name`` (params + the experiment's grid choice)."""
    base = from_dict(raw, overrides)
    return from_dict(raw, (*overrides, *experiment(base, name).overrides))


def run_dir(cfg: Config, exp: str) -> str:
    return f"{cfg.run.out}/{exp}"


def task_dir(cfg: Config, exp: str, t: int) -> str:
    """Run state after task ``t`` (1-based): state.pt, memory.zarr, metrics.json."""
    return f"{run_dir(cfg, exp)}/task_{t}"


def results_dir(exp: str) -> str:
    return f"{RESULTS}/{exp}"


def prepared_dir(exp: str) -> str:
    """The prepared tasks an experiment trains on: one folder per benchmark, one for the grid."""
    return f"data/benchmarks/{exp.split('/')[0]}" if "/" in exp else PREPARED


def _stage_name(kind: str, exp: str) -> str:
    return f"{kind}_{exp.replace('/', '.')}"


def _chain(cfg: Config, exp: Experiment, p: str) -> list[Stage]:
    """train task 1 -> ... -> task T -> evaluate, for one experiment."""
    exp_cfg = cfg.with_overrides(exp.overrides)
    train_params = list(RUN_SECTIONS)
    fingerprint = exp_cfg.digest(tuple(train_params))
    T = exp_cfg.dataset.n_tasks
    data = prepared_dir(exp.name)
    out = []
    for t in range(1, T + 1):
        deps = [data] + ([task_dir(cfg, exp.name, t - 1)] if t > 1 else [])
        out.append(Stage(
            _stage_name("train", exp.name) + f"_task{t}",
            f"samc train-task {p} --experiment {exp.name} --task {t} --no-progress",
            deps=deps, outs=[task_dir(cfg, exp.name, t)], params=train_params,
            resources={"kind": "train", "threads": exp_cfg.train.threads or 1}, fingerprint=fingerprint))
    res = results_dir(exp.name)
    out.append(Stage(
        _stage_name("evaluate", exp.name), f"samc evaluate {p} --experiment {exp.name}",
        deps=[task_dir(cfg, exp.name, t) for t in range(1, T + 1)],
        outs=[f"{res}/accuracy_matrix.png", f"{res}/first_task.png", f"{res}/loss.png"],
        params=["dataset"], metrics=[f"{res}/metrics.json"], plots=[f"{res}/accuracy.csv"],
        resources={"kind": "evaluate"}, fingerprint=fingerprint))
    return out


def stages(cfg: Config, params: str = "params.yaml") -> list[Stage]:
    """Every stage of the DAG, in a valid execution order."""
    p = f"--params {params}"
    out = [Stage("prepare", f"samc prepare {p}", deps=[], outs=[PREPARED], params=["dataset"],
                 resources={"kind": "prepare"}, fingerprint=cfg.digest(("dataset",)))]
    for exp in experiments(cfg):
        out += _chain(cfg, exp, p)
    out.append(Stage(
        "report", f"samc report {p}",
        deps=[f"{results_dir(e.name)}/metrics.json" for e in experiments(cfg)],
        outs=[f"{RESULTS}/report.md", f"{RESULTS}/report.csv"], params=["grid"],
        resources={"kind": "evaluate"}, fingerprint=cfg.digest(("grid",))))
    return out


def benchmark_stages(cfg: Config, params: str = "params.yaml", only: set[str] | None = None) -> list[Stage]:
    """The stages of every benchmark (Snakemake targets ``results/<benchmark>/<artifact>.*``), or of
    those in ``only``: prepare its dataset, train each of its runs once, evaluate them, write each
    artifact."""
    from samc import benchmarks

    p = f"--params {params}"
    out = []
    for b in cfg.benchmarks:
        if only is not None and b not in only:
            continue
        base = cfg.with_overrides(benchmarks.base_overrides(cfg, b))
        out.append(Stage(_stage_name("prepare", b), f"samc prepare {p} --benchmark {b}", deps=[],
                         outs=[prepared_dir(f"{b}/")], params=["benchmarks"], resources={"kind": "prepare"},
                         fingerprint=base.digest(("dataset",))))
        for run in benchmarks.runs(cfg, b):
            out += _chain(cfg, Experiment(run.experiment, run.overrides), p)
        for artifact in benchmarks.artifacts(cfg, b):
            files = benchmarks.ARTIFACTS[artifact]
            deps = [f"{results_dir(r.experiment)}/metrics.json" for r in benchmarks.artifact_runs(cfg, b, artifact)]
            out.append(Stage(
                _stage_name(artifact, b), f"samc table {p} --benchmark {b} --artifact {artifact}", deps=deps,
                outs=[f"{RESULTS}/{b}/{f}" for f in (*files, f"{artifact}.json")], params=["benchmarks"],
                resources={"kind": "evaluate"},
                fingerprint=benchmarks.fingerprint(cfg, b)))
    return out


def benchmark_targets(cfg: Config, benchmark: str) -> list[str]:
    """Every file of every artifact of ``benchmark`` (``snakemake --cores 4 <these>``)."""
    from samc import benchmarks

    return [f"{RESULTS}/{benchmark}/{f}" for a in benchmarks.artifacts(cfg, benchmark)
            for f in benchmarks.ARTIFACTS[a]]


def dvc_yaml(cfg: Config, params: str = "params.yaml") -> str:
    """``dvc.yaml`` for :func:`stages` (image outputs are declared as plots, cached)."""
    doc: dict[str, Any] = {"stages": {}}
    for st in stages(cfg, params):
        entry: dict[str, Any] = {"cmd": st.cmd}
        if st.deps:
            entry["deps"] = list(st.deps)
        entry["params"] = list(st.params)
        images = [o for o in st.outs if o.endswith(".png")]
        outs = [o for o in st.outs if o not in images]
        if outs:
            entry["outs"] = outs
        if st.metrics:
            entry["metrics"] = [{m: {"cache": False}} for m in st.metrics]
        if st.plots or images:
            entry["plots"] = [{pl: {"cache": False, "x": "task", "y": "first_task_accuracy"}} for pl in st.plots]
            entry["plots"] += images
        doc["stages"][st.name] = entry
    header = ("# Generated by `samc dvc-yaml` from samc/pipeline.py (the one DAG definition, also read by\n"
              "# the Snakefile). Do not edit: change the grid in params.yaml and run `samc dvc-yaml`.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)


def write_dvc_yaml(cfg: Config, path: str | Path = "dvc.yaml", params: str = "params.yaml") -> Path:
    from samc import io

    io.write_text(path, dvc_yaml(cfg, params))
    return Path(path)


def benchmarks_for(cfg: Config, targets: list[str] | set[str], grid_rules: set[str]) -> set[str] | None:
    """The benchmarks whose stages the requested Snakemake ``targets`` (files, folders or rule names)
    can need: none for the default target (the grid's report), those a path or rule name names, or
    None (every benchmark) for a target this cannot place."""
    names = set(cfg.benchmarks)
    wanted: set[str] = set()
    for target in targets:
        t = str(target).strip().strip("/")
        parts = t.split("/")
        if t == "all" or t in grid_rules:
            continue
        if parts[0] in (RESULTS, cfg.run.out) and len(parts) >= 2:
            if parts[1] in names:
                wanted.add(parts[1])
            continue                      # results/main/..., results/report.md, runs/s0/...: the grid's
        if t == PREPARED or t.startswith(PREPARED + "/"):
            continue
        if t.startswith("data/benchmarks/") and len(parts) >= 3 and parts[2] in names:
            wanted.add(parts[2])
            continue
        rule_benchmark = t.partition("_")[2].split(".")[0]      # <kind>_<benchmark>[.<run>...]
        if rule_benchmark in names:
            wanted.add(rule_benchmark)
            continue
        return None
    return wanted
