"""params.yaml ⇄ typed configuration.

One schema (workflow/schemas/params.schema.json) validates it for the CLI and for Snakemake alike.
Every value lives in ``params.yaml`` and nowhere else: the dataclasses carry no defaults and the
schema requires every key, so a value is never typed twice."""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).with_name("params.schema.json")
# the sections a run's results depend on (experiment names, state digests, pipeline fingerprints)
RUN_SECTIONS: tuple[str, ...] = ("dataset", "train", "memory", "samc", "baselines")
# options added after results were committed, with the value that reproduces the earlier code: at
# that value they are left out of digests, so existing experiments keep their names and states
NEUTRAL: dict[tuple[str, str], Any] = {("train", "precision"): "fp32", ("train", "channels_last"): False,
                                       ("memory", "constraint_sample"): None, ("samc", "gradcam_mode"): "eval",
                                       ("samc", "complete_at"): "task_start", ("samc", "budget_charge"): "bytes",
                                       ("memory", "codec"): "auto", ("memory", "budget_counts"): "records",
                                       ("baselines", "eec_latent"): 4, ("baselines", "eec_summary_rank"): 8,
                                       ("baselines", "eec_cls_weight"): 1.0, ("baselines", "eec_ae_lr"): 0.001}


def effective_dataset(d: dict[str, Any]) -> dict[str, Any]:
    """The ``dataset`` parameters the data actually depend on: the generator's sizes and seed only
    for ``shapes``, the folder only for real sources, never ``download`` (it only allows fetching).
    Digests and prepared-data checks use this, so e.g. the shapes defaults do not touch CIFAR runs."""
    drop = {"download"} | ({"root"} if d.get("name") == "shapes" else
                           {"shapes_train_per_class", "shapes_test_per_class", "shapes_seed"})
    return {k: v for k, v in d.items() if k not in drop}


class ConfigError(ValueError):
    """A parameter is missing, of the wrong type or out of range; the message names the key."""


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    root: str | None
    download: bool
    image_size: int
    n_tasks: int
    classes_per_task: int
    class_order: str
    limit_per_class: int | None
    shapes_train_per_class: int
    shapes_test_per_class: int
    shapes_seed: int
    split_seed: int


@dataclass(frozen=True)
class TrainConfig:
    method: str
    seed: int
    epochs: int
    batch_size: int
    lr: float
    device: str
    deterministic: bool
    bn_double_update: bool
    threads: int
    eval_batch_size: int
    precision: str                 # fp32 | bf16 | auto (samc.precision)
    channels_last: bool | str = "auto"   # auto | true | false (samc.precision)


@dataclass(frozen=True)
class MemoryConfig:
    images_per_task: int
    strength: float
    agem_ref_size: int
    grad_mode: str
    update_bn: bool
    constraint_sample: int | None  # None: GEM's exact constraint; N: N images per past task per step
    codec: str = "auto"            # samc.memory.codecs spec; auto = the method's own (samc: sparse, else raw)
    budget_counts: str = "records"  # records | all (+ the autoencoder's parameters, amortised over tasks)


@dataclass(frozen=True)
class SamcConfig:
    mu: float
    completion: str
    rule: str
    saliency_target: str
    mask: str
    ae_steps: int
    ae_lr: float
    ae_batch_size: int
    ae_patience: int
    ae_pairs: int
    gradcam_mode: str = "eval"         # eval | train (the authors' code)
    complete_at: str = "task_start"    # task_start (Algorithm 1, line 5) | storage (the authors' code)
    budget_charge: str = "bytes"       # bytes (real encoded bytes) | values (C per kept pixel, the authors')


@dataclass(frozen=True)
class BaselinesConfig:
    ewc_lambda: float
    ewc_gamma: float
    ewc_fisher_samples: int
    ewc_fisher: str                # sample (empirical Fisher) | batch (GEM's code)
    lwf_alpha: float
    lwf_temperature: float
    icarl_lambda: float
    mer_batches: int
    mer_beta: float
    mer_gamma: float
    eec_latent: int = 4            # EEC (samc.methods.eec): code channels
    eec_summary_rank: int = 8      #   eigenpairs of a class summary's covariance
    eec_cls_weight: float = 1.0    #   classification loss on the code
    eec_ae_lr: float = 0.001       #   the autoencoder's Adam learning rate


@dataclass(frozen=True)
class RunConfig:
    out: str
    container: str


@dataclass(frozen=True)
class GridConfig:
    """The pipeline's experiments: methods x seeds x mu (an empty list keeps the section's value)."""

    method: list[str]
    seed: list[int]
    mu: list[float]


@dataclass(frozen=True)
class BenchmarkConfig:
    """A named benchmark (the paper's tables and figures; see samc.benchmarks)."""

    set: dict[str, Any]                    # section.key -> value, for every run of the benchmark
    methods: dict[str, dict[str, Any]]     # Table 1 rows: method -> its App. E overrides
    seeds: list[int]
    completions: list[str]                 # Table 2
    mu: list[float]                        # Table 4, Figure 5
    memory: list[int]                      # Figure 2 (memory.images_per_task)
    attribution: list[dict[str, Any]]      # attribution ablations: {row, method, tag?, set}
    gap: list[dict[str, Any]] = field(default_factory=list)   # the gap to the authors' code: rows + ref
    codecs: list[dict[str, Any]] = field(default_factory=list)   # memory codecs at equal bytes: rows, ref, vs
    method_seeds: dict[str, list[int]] = field(default_factory=dict)   # Table 1: a method's own seeds
    table1_variants: list[dict[str, Any]] = field(default_factory=list)   # Table 1: variant rows


@dataclass(frozen=True)
class Config:
    dataset: DatasetConfig
    train: TrainConfig
    memory: MemoryConfig
    samc: SamcConfig
    baselines: BaselinesConfig
    run: RunConfig
    grid: GridConfig
    benchmarks: dict[str, BenchmarkConfig]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> "Config":
        """This configuration with ``section.key=value`` overrides, validated; the benchmark
        definitions are left out (a run's configuration does not depend on them)."""
        raw = {k: v for k, v in self.to_dict().items() if k != "benchmarks"}
        return from_dict(raw, overrides)

    def digest(self, sections: tuple[str, ...] | None = None) -> str:
        """Short stable hash of the config (or of some sections), used to name experiments."""
        d = self.to_dict()
        d["dataset"] = effective_dataset(d["dataset"])
        for (section, key), value in NEUTRAL.items():
            if d[section].get(key, value) == value:
                d[section].pop(key, None)
        if sections is not None:
            d = {k: d[k] for k in sections}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


_CLASSES = {
    "dataset": DatasetConfig, "train": TrainConfig, "memory": MemoryConfig,
    "samc": SamcConfig, "baselines": BaselinesConfig, "run": RunConfig, "grid": GridConfig,
}


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema())


def _closest(word: Any, allowed: Any) -> str:
    """`` (did you mean 'gem'?)`` for a near miss among ``allowed``, else nothing."""
    import difflib

    if not isinstance(word, str):
        return ""
    match = difflib.get_close_matches(word, [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _format_error(err: jsonschema.ValidationError, origin: dict[str, str]) -> str:
    """One line per schema error, naming the key, its value, what is allowed and, for a value given
    by ``--set``, that override (``origin``: dotted key -> the --set item)."""
    key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    where = f" (from --set {origin[key]})" if key in origin else ""
    if err.validator == "additionalProperties":
        allowed = list(err.schema.get("properties", {}))
        named = []
        for u in sorted(set(err.instance) - set(allowed)):
            dotted = u if key == "<top level>" else f"{key}.{u}"
            named.append(f"{u!r}{_closest(u, allowed)}" + (f" (from --set {origin[dotted]})" if dotted in origin else ""))
        return f"{key}: unknown parameter(s): {', '.join(named)}; allowed: {', '.join(allowed)}"
    if err.validator == "enum":
        return (f"{key} = {err.instance!r} is not allowed{_closest(err.instance, err.validator_value)}{where}; "
                f"allowed values: {', '.join(map(str, err.validator_value))}")
    return f"{key} = {err.instance!r}: {err.message}{where}"


def _schema_messages(raw: dict[str, Any], origin: dict[str, str]) -> list[str]:
    """The schema's errors, unknown names first; a section absent from the file is one line, not
    one line per key it lacks (a misspelled section name reads as unknown + absent)."""
    errors = sorted(_validator().iter_errors(raw), key=str)
    absent = {e.path[0] for e in errors if e.validator == "required" and len(e.path) == 1 and not e.instance}
    msgs = [_format_error(e, origin) for e in errors if e.validator == "additionalProperties"]
    msgs += [f"{section}: section missing from the parameter file" for section in sorted(absent)]
    msgs += [_format_error(e, origin) for e in errors if e.validator != "additionalProperties"
             and not (e.validator == "required" and len(e.path) == 1 and e.path[0] in absent)]
    return msgs


def validate(raw: dict[str, Any], source: str = "params", origin: dict[str, str] | None = None) -> None:
    """Check ``raw`` against the JSON schema and the cross-field rules; raise ConfigError naming
    every offending key, its value and what is allowed (``origin``: keys set by ``--set``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    msgs = _schema_messages(raw, origin or {})
    if not msgs:
        ds = raw.get("dataset", {})
        n_tasks, cpt = ds["n_tasks"], ds["classes_per_task"]
        n_classes = {"cifar10": 10, "cifar100": 100, "shapes": 10}.get(ds["name"])
        if n_classes is not None and n_tasks * cpt > n_classes:
            msgs.append(
                f"dataset.n_tasks * dataset.classes_per_task = {n_tasks} * {cpt} = {n_tasks * cpt} "
                f"exceeds the {n_classes} classes of dataset {ds.get('name', 'shapes')!r}"
            )
        if ds.get("name") in ("imagefolder",) and not ds.get("root"):
            msgs.append("dataset.root is required for dataset.name = 'imagefolder'")
        msgs.extend(_codec_errors(raw["train"]["method"], raw["memory"]["codec"]))
    if msgs:
        given = f" (with --set {' '.join(origin.values())})" if origin else ""
        raise ConfigError(f"{source}{given}: invalid parameters:\n  " + "\n  ".join(msgs))


def _codec_errors(method: str, spec: str) -> list[str]:
    """``memory.codec`` names a codec with valid parameters that ``train.method`` can store."""
    from samc.memory import CODECS, MemoryFormatError, get_codec
    from samc.methods import METHODS

    if spec == "auto":
        return []
    try:
        codec = get_codec(spec)
    except MemoryFormatError as exc:
        return [f"memory.codec = {spec!r}: {exc}"]
    cls = METHODS.get(method)
    if cls is None or cls.default_codec is None:
        return [f"memory.codec = {spec!r}: train.method = {method!r} keeps no codec-coded memory; "
                f"leave memory.codec = auto (codecs apply to "
                f"{', '.join(n for n, m in METHODS.items() if m.default_codec)})"]
    if codec.learned and not cls.trains_codec:
        trainers = ", ".join(n for n, m in METHODS.items() if m.trains_codec)
        return [f"memory.codec = {spec!r}: its records read back only with the autoencoder that wrote them, "
                f"which train.method = {trainers} trains; {method!r} does not"]
    if cls.learned_codec_only and not codec.learned:
        learned = ", ".join(n for n, k in CODECS.items() if k.learned)
        return [f"memory.codec = {spec!r}: train.method = {method!r} stores {learned} codes only; "
                "leave memory.codec = auto"]
    if cls.saliency_codec_only and not codec.uses_saliency:
        return [f"memory.codec = {spec!r}: train.method = {method!r} stores saliency-selected pixels; "
                f"use a saliency codec ({', '.join(n for n, k in CODECS.items() if k.uses_saliency)}) "
                f"or train.method = gem for a whole-image codec"]
    return []


def parse_override(item: str) -> tuple[list[str], Any]:
    """``section.key=value`` (value parsed as YAML) → (path, value)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    key, value = item.split("=", 1)
    path = key.strip().split(".")
    if len(path) != 2 or not all(path):
        raise ConfigError(f"--set {item!r}: the key must be section.key, e.g. samc.mu=0.7")
    return path, yaml.safe_load(value)


def from_dict(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), source: str = "params") -> Config:
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    raw = copy.deepcopy(raw) if raw is not None else {}
    origin: dict[str, str] = {}
    for item in overrides:
        (section, key), value = parse_override(item)
        if not isinstance(raw.get(section, {}), dict):
            raise ConfigError(f"--set {item!r}: {section} is not a section")
        if section not in raw and section not in (*_CLASSES, "benchmarks"):
            raise ConfigError(f"--set {item!r}: unknown section {section!r}{_closest(section, _CLASSES)}; "
                              f"sections: {', '.join(_CLASSES)}")
        raw.setdefault(section, {})[key] = value
        origin[f"{section}.{key}"] = item
    for section in (*_CLASSES, "benchmarks"):
        raw.setdefault(section, {})
    validate(raw, source, origin)
    return Config(**{name: _CLASSES[name](**raw[name]) for name in _CLASSES},
                  benchmarks={k: BenchmarkConfig(**v) for k, v in raw["benchmarks"].items()})


def load(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameter file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return from_dict(raw or {}, overrides, source=str(path))
