"""The paper's tables and figures as named benchmarks (``params.yaml``: ``benchmarks``).

A benchmark is a dataset configuration (``set``), the methods of Table 1 with their App. E values,
the seeds, and three sweeps: SAMC's completion variants (Table 2), SAMC's μ (Table 4, Figure 5)
and the memory per task of GEM and SAMC (Figure 2). Each artifact below is one pipeline target,
``results/<benchmark>/<artifact>.*``, that depends on exactly the runs it needs; a run needed by
several artifacts (SAMC, seed 0, default μ: Tables 1-4) has one canonical name and is trained once.

    table1   methods x seeds: ACC, BWT (both conventions) mean ± std      (Table 1)
             and its variant rows, documented departures from the paper (``table1_variants``)
    figure3  the same runs: accuracy on task 1 as tasks are learned       (Figure 3)
    table2   SAMC per completion variant                                   (Table 2)
    table3   SAMC vs GEM: memory bytes and time per phase                  (Table 3)
    table4   SAMC per μ: images stored per task and ACC                    (Table 4)
    figure5  ACC and images per task vs μ                                  (Figure 5)
    figure2  ACC vs memory per task, GEM and SAMC                          (Figure 2)
    attribution  what SAMC's gain is made of: GEM with more images, SAMC with random or
                 inverted masks, predicted-class Grad-CAM, BatchNorm variants, μ (``attribution``)
    gap      the authors' code's departures from the paper, each alone and all together, paired
             by seed with our default SAMC and our GEM (95% intervals; ``gap``)
    codecs   replay methods x memory codecs at the same bytes: images/task, records and total
             bytes, ACC, paired ΔACC against a reference row, and ACC vs images and bytes (``codecs``)
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from samc.config import BenchmarkConfig, Config, ConfigError

ARTIFACTS: dict[str, tuple[str, ...]] = {        # artifact -> the files it writes (besides <artifact>.json)
    "table1": ("table1.md", "table1.csv"),
    "figure3": ("figure3.png", "figure3.csv"),
    "table2": ("table2.md", "table2.csv"),
    "table3": ("table3.md", "table3.csv"),
    "table4": ("table4.md", "table4.csv"),
    "figure5": ("figure5.png", "figure5.csv"),
    "figure2": ("figure2.png", "figure2.csv"),
    "attribution": ("attribution.md", "attribution.csv"),
    "gap": ("gap.md", "gap.csv"),
    "codecs": ("codecs.md", "codecs.csv", "codecs.png"),
}
# the overrides that name themselves in a run's name (make_run); any other override needs a tag
_SWEPT = ("samc.completion", "samc.mu", "memory.images_per_task")


@dataclass(frozen=True)
class Run:
    """One training run of a benchmark: ``<benchmark>/<name>``, the overrides that make it."""

    benchmark: str
    name: str
    method: str
    seed: int
    overrides: tuple[str, ...]

    @property
    def experiment(self) -> str:
        return f"{self.benchmark}/{self.name}"


def _sets(mapping: dict[str, Any]) -> tuple[str, ...]:
    """{"samc.mu": 0.7} -> ("samc.mu=0.7",), values JSON-encoded (a YAML subset: strings stay strings)."""
    return tuple(f"{k}={json.dumps(v)}" for k, v in mapping.items())


def spec(cfg: Config, benchmark: str) -> BenchmarkConfig:
    if benchmark not in cfg.benchmarks:
        raise ConfigError(f"benchmark {benchmark!r} is not in params.yaml (benchmarks: "
                          f"{', '.join(cfg.benchmarks) or 'none'})")
    return cfg.benchmarks[benchmark]


def base_overrides(cfg: Config, benchmark: str) -> tuple[str, ...]:
    """The overrides shared by every run of ``benchmark`` (its dataset, mainly)."""
    return _sets(spec(cfg, benchmark).set)


def make_run(cfg: Config, benchmark: str, method: str, seed: int, completion: str | None = None,
             mu: float | None = None, memory: int | None = None, extra: dict[str, Any] | None = None,
             tag: str | None = None) -> Run:
    """The run of ``method`` with ``seed`` and optional sweep values, named canonically: a sweep
    value equal to the method's own setting is left out of the name (it is the same run).
    ``extra`` holds further overrides; they are named by ``tag`` (required when there are any)."""
    b = spec(cfg, benchmark)
    method_sets = _sets(b.methods.get(method, {}))
    def own(key: str) -> Any:           # the method's own setting of ``section.key`` in this benchmark
        section, name = key.split(".")
        return b.methods.get(method, {}).get(key, b.set.get(key, getattr(getattr(cfg, section), name)))

    parts, sweep = [method], []
    if completion is not None and completion != own("samc.completion"):
        parts.append(completion.replace("+", "_"))
        sweep.append(f"samc.completion={completion}")
    if mu is not None and mu != own("samc.mu"):
        parts.append(f"mu{mu}")
        sweep.append(f"samc.mu={mu}")
    if memory is not None and memory != own("memory.images_per_task"):
        parts.append(f"m{memory}")
        sweep.append(f"memory.images_per_task={memory}")
    if extra:
        if not tag:
            raise ConfigError(f"benchmarks.{benchmark}: overrides {', '.join(extra)} of {method} need a tag "
                              "(the part of the run's name that tells it apart)")
        parts.append(tag)
        sweep += list(_sets(extra))
    parts.append(f"s{seed}")
    return Run(benchmark, "-".join(parts), method, seed,
               (*base_overrides(cfg, benchmark), *method_sets, *sweep, f"train.method={method}", f"train.seed={seed}"))


def attribution_row_runs(cfg: Config, benchmark: str, row: dict[str, Any]) -> list[Run]:
    """The runs (one per seed: the row's ``seeds``, else the benchmark's) of one row of
    ``benchmarks.<benchmark>.attribution``."""
    sets = dict(row["set"])
    swept = {k: sets.pop(k) for k in _SWEPT if k in sets}
    return [make_run(cfg, benchmark, row["method"], s, completion=swept.get("samc.completion"),
                     mu=swept.get("samc.mu"), memory=swept.get("memory.images_per_task"),
                     extra=sets, tag=row.get("tag")) for s in row.get("seeds") or spec(cfg, benchmark).seeds]


def artifact_runs(cfg: Config, benchmark: str, artifact: str) -> list[Run]:
    """The runs ``artifact`` of ``benchmark`` is computed from, in table order."""
    b = spec(cfg, benchmark)
    seeds = b.seeds
    if artifact in ("table1", "figure3"):
        method_runs = [make_run(cfg, benchmark, m, s) for m in b.methods for s in b.method_seeds.get(m, seeds)]
        if artifact == "figure3":
            return method_runs
        names = {r.name for r in method_runs}
        variants = [r for row in b.table1_variants for r in attribution_row_runs(cfg, benchmark, row)]
        return method_runs + [r for r in variants if r.name not in names]
    if artifact == "table2":
        return [make_run(cfg, benchmark, "samc", s, completion=c) for c in b.completions for s in seeds]
    if artifact == "table3":
        return [make_run(cfg, benchmark, m, s) for m in ("gem", "samc") for s in seeds]
    if artifact in ("table4", "figure5"):
        return [make_run(cfg, benchmark, "samc", s, mu=mu) for mu in b.mu for s in seeds]
    if artifact == "figure2":
        return [make_run(cfg, benchmark, m, s, memory=n) for m in ("gem", "samc") for n in b.memory for s in seeds]
    if artifact == "attribution":
        return [r for row in b.attribution for r in attribution_row_runs(cfg, benchmark, row)]
    if artifact == "gap":
        return [r for row in b.gap for r in attribution_row_runs(cfg, benchmark, row)]
    if artifact == "codecs":
        return [r for row in b.codecs for r in attribution_row_runs(cfg, benchmark, row)]
    raise ConfigError(f"unknown artifact {artifact!r}; known: {', '.join(ARTIFACTS)}")


def artifacts(cfg: Config, benchmark: str) -> list[str]:
    """The artifacts ``benchmark`` defines (those with at least one run; e.g. no attribution rows)."""
    return [a for a in ARTIFACTS if artifact_runs(cfg, benchmark, a)]


def runs(cfg: Config, benchmark: str) -> list[Run]:
    """Every run of ``benchmark`` once (shared runs of several artifacts are merged by name)."""
    out: dict[str, Run] = {}
    for artifact in ARTIFACTS:
        for r in artifact_runs(cfg, benchmark, artifact):
            if r.name in out and set(out[r.name].overrides) != set(r.overrides):
                raise ConfigError(f"benchmark {benchmark}: run {r.name} is defined twice differently")
            out.setdefault(r.name, r)
    return list(out.values())


def find_run(cfg: Config, experiment: str) -> Run:
    """``<benchmark>/<run>`` -> its Run."""
    benchmark, _, name = experiment.partition("/")
    for r in runs(cfg, benchmark):
        if r.name == name:
            return r
    raise ConfigError(f"experiment {experiment!r}: benchmark {benchmark!r} has no run {name!r}")


def fingerprint(cfg: Config, benchmark: str) -> str:
    """Hash of one benchmark's definition (its artifacts' rerun trigger in Snakemake)."""
    return hashlib.sha256(json.dumps(asdict(spec(cfg, benchmark)), sort_keys=True).encode()).hexdigest()[:10]
