"""Benchmarks: the paper's tables and figures as pipeline targets (samc.benchmarks, samc.tables)."""
import csv
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from samc import benchmarks, config, pipeline
from samc.tables import write_artifact
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def cfg():
    return config.load(ROOT / "params.yaml")


def test_named_benchmarks_carry_the_papers_settings(cfg):
    c10 = cfg.with_overrides(benchmarks.make_run(cfg, "split-cifar10", "samc", 0).overrides)
    assert (c10.dataset.name, c10.dataset.n_tasks, c10.dataset.classes_per_task, c10.dataset.image_size) == \
        ("cifar10", 5, 2, 32)
    assert (c10.train.lr, c10.train.epochs, c10.train.batch_size, c10.memory.images_per_task, c10.samc.mu,
            c10.memory.strength) == (0.1, 1, 10, 10, 0.6, 0.5)
    for name, size in (("split-cifar100", 32), ("split-mini-imagenet", 84)):
        runs = {r.name: cfg.with_overrides(r.overrides) for r in benchmarks.runs(cfg, name)}
        assert runs["samc-s0"].samc.mu == 0.7 and runs["samc-s0"].dataset.image_size == size
        assert (runs["samc-s0"].dataset.n_tasks, runs["samc-s0"].dataset.classes_per_task) == (20, 5)
        assert runs["finetune-s0"].train.lr == runs["ewc-s0"].train.lr == runs["icarl-s0"].train.lr == 1.0
        assert runs["gem-s0"].train.lr == runs["er-s0"].train.lr == 0.1     # App. E
        assert len({c.dataset for c in runs.values()}) == 1, "every run of a benchmark shares its dataset"


def test_runs_are_shared_between_artifacts_and_named_canonically(cfg):
    t1 = {r.name for r in benchmarks.artifact_runs(cfg, "split-cifar10", "table1")}
    t2 = [r.name for r in benchmarks.artifact_runs(cfg, "split-cifar10", "table2")]
    t4 = [r.name for r in benchmarks.artifact_runs(cfg, "split-cifar10", "table4")]
    f2 = [r.name for r in benchmarks.artifact_runs(cfg, "split-cifar10", "figure2")]
    # the default completion, the default mu and the default memory size are the Table 1 run itself
    assert "samc-s0" in t1 and "samc-s0" in t2 and "samc-s0" in t4 and "samc-s0" in f2 and "gem-s2" in f2
    assert {"samc-zero-s0", "samc-rule-s0", "samc-ae-s0", "samc-mu0.4-s2", "gem-m20-s1", "samc-m1-s2"} <= \
        set(t2 + t4 + f2)
    every = benchmarks.runs(cfg, "split-cifar10")
    assert len({r.name for r in every}) == len(every)
    by_name = {r.name: cfg.with_overrides(r.overrides) for r in every}
    assert by_name["samc-mu0.4-s2"].samc.mu == 0.4 and by_name["samc-mu0.4-s2"].train.seed == 2
    assert by_name["gem-m20-s1"].memory.images_per_task == 20 and by_name["gem-m20-s1"].train.method == "gem"
    assert by_name["samc-zero-s0"].samc.completion == "zero"
    exp = pipeline.experiment(cfg, "split-cifar10/samc-rule-s1")
    assert cfg.with_overrides(exp.overrides).samc.completion == "rule"
    assert pipeline.prepared_dir(exp.name) == "data/benchmarks/split-cifar10"
    with pytest.raises(config.ConfigError, match="no run 'samc-s19'"):
        pipeline.experiment(cfg, "split-cifar10/samc-s19")
    with pytest.raises(config.ConfigError, match="not in params.yaml"):
        benchmarks.runs(cfg, "split-cifar7")


def test_benchmark_stages_target_every_artifact(cfg):
    stages = {s.name: s for s in pipeline.benchmark_stages(cfg)}
    t1 = stages["table1_split-cifar10"]
    assert t1.outs == ["results/split-cifar10/table1.md", "results/split-cifar10/table1.csv",
                       "results/split-cifar10/table1.json"]
    assert "results/split-cifar10/samc-s2/metrics.json" in t1.deps and len(t1.deps) == 8 * 3 + 2 * 5 + 3   # 8 methods x 3 seeds, EBM and EEC x 5 (method_seeds),
    # Telea-only SAMC x 3 (table1_variants)
    assert "results/split-cifar10/eec-s4/metrics.json" in t1.deps
    attribution = stages["attribution_split-cifar10"]
    assert "results/split-cifar10/samc-mask_random-s2/metrics.json" in attribution.deps
    assert attribution.outs[0] == "results/split-cifar10/attribution.md"
    chain = stages["train_split-cifar10.samc-s0_task2"]
    assert chain.deps == ["data/benchmarks/split-cifar10", "runs/split-cifar10/samc-s0/task_1"]
    assert stages["prepare_split-cifar10"].outs == ["data/benchmarks/split-cifar10"]
    # the default grid (and so dvc.yaml) does not include the benchmarks
    assert not any(b in s.name for s in pipeline.stages(cfg) for b in cfg.benchmarks)


def _fake_metrics(rng, T, acc, images):
    R = np.tril(rng.uniform(60, 90, (T, T))) + np.triu(np.full((T, T), 50.0), 1)
    R[-1] = acc
    return {"accuracy_matrix": R.tolist(), "acc": float(np.mean(R[-1])),
            "bwt": float(np.mean([R[-1, i] - R[i, i] for i in range(T - 1)])),
            "bwt_gem_code": float(np.sum([R[-1, i] - R[i, i] for i in range(T - 1)]) / T),
            "memory_images": images, "memory_bytes": [n * 100 for n in images],
            "timings": [{"total": 10.0, "train_step": 5.0, "memory_grads": 3.0}] * T, "wall_s": 10.0 * T,
            "devices": ["cpu: test"]}


def test_tables_render_from_metrics_files(cfg, tmp_path):
    rng = np.random.default_rng(0)
    runs = benchmarks.artifact_runs(cfg, "quick", "table1")
    results = {r.name: _fake_metrics(rng, 2, [70.0 + r.seed, 80.0 + 2 * r.seed], [10, 0]) for r in runs}
    written = write_artifact(cfg, "quick", "table1", runs, results, tmp_path)
    assert [p.name for p in written] == ["table1.md", "table1.csv", "table1.json"]
    rows = list(csv.DictReader((tmp_path / "table1.csv").open()))
    assert [r["method"] for r in rows] == list(cfg.benchmarks["quick"].methods)
    # seeds 0 and 1: ACC 75 and 76.5 -> mean 75.75, sample std 1.06
    assert rows[0]["ACC"] == "75.75 ± 1.06" and rows[0]["seeds"] == "0 1"
    prov = json.loads((tmp_path / "table1.json").read_text())
    assert prov["seeds"] == [0, 1] and set(prov["runs"]) == set(results) and "commit" in prov["provenance"]
    assert "## Provenance" in (tmp_path / "table1.md").read_text()

    runs3 = benchmarks.artifact_runs(cfg, "quick", "table3")
    res3 = {r.name: _fake_metrics(rng, 2, [70.0, 80.0], [40 if r.method == "samc" else 10, 0]) for r in runs3}
    write_artifact(cfg, "quick", "table3", runs3, res3, tmp_path)
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "table3.csv").open())}
    assert rows["samc / gem"]["images stored"] == "4.00" and rows["samc / gem"]["wall s"] == "1.00"
    # wall times of runs trained on different devices are not compared
    res3[runs3[0].name]["devices"] = ["cuda: H100"]
    write_artifact(cfg, "quick", "table3", runs3, res3, tmp_path)
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "table3.csv").open())}
    assert rows["samc / gem"]["wall s"] == "— (devices differ)" and rows["samc / gem"]["images stored"] == "4.00"

    for artifact in ("figure2", "figure3", "figure5"):
        runs_a = benchmarks.artifact_runs(cfg, "quick", artifact)
        res = {r.name: _fake_metrics(rng, 2, [60.0, 70.0], [12, 0]) for r in runs_a}
        write_artifact(cfg, "quick", artifact, runs_a, res, tmp_path)
        assert Image.open(tmp_path / f"{artifact}.png").format == "PNG"
    f2 = list(csv.DictReader((tmp_path / "figure2.csv").open()))
    assert {(r["method"], r["memory_per_task"]) for r in f2} == {(m, str(n)) for m in ("gem", "samc")
                                                                 for n in cfg.benchmarks["quick"].memory}


def test_attribution_rows_are_runs_named_by_their_overrides(cfg):
    names = [r.name for r in benchmarks.artifact_runs(cfg, "split-cifar10", "attribution")]
    seeds = cfg.benchmarks["split-cifar10"].seeds
    rows = cfg.benchmarks["split-cifar10"].attribution
    assert len(names) == sum(len(row.get("seeds") or seeds) for row in rows)
    # a row may name its own seeds (a diagnostic row on fewer seeds): only those are runs
    row = {"row": "x", "method": "samc", "tag": "bn_frozen", "seeds": [1], "set": {"memory.update_bn": False}}
    assert [r.name for r in benchmarks.attribution_row_runs(cfg, "split-cifar10", row)] == ["samc-bn_frozen-s1"]
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["benchmarks"]["quick"]["attribution"][0]["seeds"] = [0, 0]
    with pytest.raises(config.ConfigError, match="seeds"):
        config.from_dict(raw)
    table1 = {r.name for r in benchmarks.artifact_runs(cfg, "split-cifar10", "table1")}
    table4 = {r.name for r in benchmarks.artifact_runs(cfg, "split-cifar10", "table4")}
    # rows 1 and 3 are Table 1's GEM and SAMC runs, the mu rows Table 4's: trained once
    assert {"gem-s0", "samc-s0"} <= table1 & set(names) and {"samc-mu0.4-s0", "samc-mu0.8-s0"} <= table4 & set(names)
    runs = {r.name: cfg.with_overrides(r.overrides) for r in benchmarks.runs(cfg, "split-cifar10")}
    assert runs["gem-m53-s0"].memory.images_per_task == 53
    assert runs["samc-mask_inverted-s1"].samc.mask == "inverted" and runs["samc-mask_inverted-s1"].train.seed == 1
    assert runs["samc-target_predicted-s0"].samc.saliency_target == "predicted"
    assert runs["gem-bn2-s0"].train.bn_double_update and runs["gem-bn2-s0"].train.method == "gem"
    assert not runs["samc-bn_frozen-s0"].memory.update_bn
    with pytest.raises(config.ConfigError, match="need a tag"):
        benchmarks.make_run(cfg, "split-cifar10", "samc", 0, extra={"samc.mask": "random"})
    # a benchmark without attribution rows has no attribution target
    assert "attribution" not in benchmarks.artifacts(cfg, "split-cifar100")
    assert not any("attribution" in t for t in pipeline.benchmark_targets(cfg, "split-cifar100"))


def test_attribution_table_renders_one_row_per_entry(cfg, tmp_path):
    rng = np.random.default_rng(1)
    runs = benchmarks.artifact_runs(cfg, "split-cifar10", "attribution")
    results = {r.name: _fake_metrics(rng, 5, [70.0 + r.seed] * 5, [60 if r.method == "samc" else 10] * 4 + [0])
               for r in runs}
    write_artifact(cfg, "split-cifar10", "attribution", runs, results, tmp_path)
    rows = list(csv.DictReader((tmp_path / "attribution.csv").open()))
    assert [r["row"] for r in rows] == [a["row"] for a in cfg.benchmarks["split-cifar10"].attribution]
    n = len(cfg.benchmarks["split-cifar10"].seeds)
    assert rows[0]["images/task"] == "10.0 ± 0.0" and rows[2]["images/task"] == "60.0 ± 0.0"
    assert rows[0]["ACC"] == f"{70 + np.mean(range(n)):.2f} ± {np.std(range(n), ddof=1):.2f}"
    assert rows[0]["memory kB/task"] == "1.0 ± 0.0"
    diag = [np.mean(np.diag(np.array(results[r.name]["accuracy_matrix"]))) for r in runs if r.name.startswith("gem-s")]
    assert rows[0]["learned (diag R)"] == f"{np.mean(diag):.2f} ± {np.std(diag, ddof=1):.2f}"
    assert rows[0]["projected %"] == "—"        # the fake runs carry no counters
    for r in runs:
        results[r.name]["method_stats"] = [{}] + [{"constrained_steps": 100, "projected_steps": 25}] * 4
    write_artifact(cfg, "split-cifar10", "attribution", runs, results, tmp_path)
    rows = list(csv.DictReader((tmp_path / "attribution.csv").open()))
    assert rows[0]["projected %"] == "25.0 ± 0.0"


def test_table1_shows_its_variant_rows_after_the_methods_and_figure3_does_not(cfg, tmp_path):
    """split-cifar10's Telea-only SAMC (issue 16) is a Table 1 row of its own, under its label, from its
    own runs (shared with Table 2's rule row), while Figure 3 keeps the methods' runs only."""
    rng = np.random.default_rng(3)
    b = cfg.benchmarks["split-cifar10"]
    (variant,) = b.table1_variants
    runs = benchmarks.artifact_runs(cfg, "split-cifar10", "table1")
    names = [r.name for r in runs]
    assert names[-3:] == [f"samc-rule-s{s}" for s in b.seeds] and len(set(names)) == len(names)
    for shared in ("gap", "table2"):            # the same runs as the gap's row (1) and Table 2's rule row
        assert set(names[-3:]) <= {r.name for r in benchmarks.artifact_runs(cfg, "split-cifar10", shared)}
    assert not {r.name for r in benchmarks.artifact_runs(cfg, "split-cifar10", "figure3")} & set(names[-3:])
    assert cfg.with_overrides(runs[-1].overrides).samc.completion == "rule"
    assert cfg.with_overrides(runs[-1].overrides).samc.mu == 0.6          # the method's own overrides kept
    results = {r.name: _fake_metrics(rng, 5, [60.0 + 5 * r.name.startswith("samc-rule")] * 5, [10] * 4 + [0])
               for r in runs}
    write_artifact(cfg, "split-cifar10", "table1", runs, results, tmp_path)
    rows = list(csv.DictReader((tmp_path / "table1.csv").open()))
    assert [r["method"] for r in rows] == [*b.methods, variant["row"]]
    assert rows[-1]["seeds"] == "0 1 2" and rows[-1]["ACC"] == "65.00 ± 0.00"
    assert rows[-1]["paper ACC / BWT"] == "—" and "documented variants" in (tmp_path / "table1.md").read_text()
    # samc table --partial: a variant without results is left out, the others stay
    part = [r for r in runs if not r.name.startswith("samc-rule")]
    write_artifact(cfg, "split-cifar10", "table1", part, {r.name: results[r.name] for r in part}, tmp_path)
    assert [r["method"] for r in csv.DictReader((tmp_path / "table1.csv").open())] == list(b.methods)


def test_gap_table_pairs_every_row_with_our_samc_and_gem(cfg, tmp_path):
    from samc.stats import paired_difference

    rng = np.random.default_rng(2)
    runs = benchmarks.artifact_runs(cfg, "split-cifar10", "gap")
    offset = {"gem": 0.0, "samc": -1.0, "samc-rule": 1.0}
    results = {}
    for r in runs:
        base = r.name.rsplit("-s", 1)[0]
        results[r.name] = _fake_metrics(rng, 5, [70.0 + offset.get(base, 3.0) + (r.seed % 2) * (base == "samc")] * 5,
                                        [10] * 4 + [0])
    write_artifact(cfg, "split-cifar10", "gap", runs, results, tmp_path)
    rows = list(csv.DictReader((tmp_path / "gap.csv").open()))
    spec_rows = cfg.benchmarks["split-cifar10"].gap
    assert [r["row"] for r in rows] == [g["row"] for g in spec_rows]
    ten = " ".join(map(str, range(10)))            # GEM and SAMC: 10 paired seeds (issue 17), the rest 5
    assert [r["seeds"] for r in rows[:2]] == [ten, ten] and all(r["seeds"] == "0 1 2 3 4" for r in rows[2:])
    assert rows[0]["ΔACC vs our SAMC [95% CI]"].endswith("(n=10)")
    acc = lambda name: [results[f"{name}-s{s}"]["acc"] for s in range(5)]   # noqa: E731
    want = paired_difference(acc("samc-rule"), acc("samc"))
    assert rows[2]["ΔACC vs our SAMC [95% CI]"] == f"{want} (n=5)"
    assert rows[2]["ΔACC vs our GEM [95% CI]"] == "+1.00 [+1.00, +1.00] (n=5)"
    assert rows[0]["ΔACC vs our GEM [95% CI]"] == "—" and rows[1]["ΔACC vs our SAMC [95% CI]"] == "—"
    def forgetting(name):          # best accuracy before the last task minus the final one, first 4 tasks
        R = np.array(results[name]["accuracy_matrix"])
        return np.mean([R[j:4, j].max() - R[4, j] for j in range(4)])
    f = [forgetting(f"gem-s{s}") for s in range(10)]
    assert rows[0]["forgetting"] == f"{np.mean(f):.2f} ± {np.std(f, ddof=1):.2f}" and min(f) >= 0
    # a partial table (samc table --partial) pairs over the seeds both rows have
    del results["samc-rule-s4"]
    write_artifact(cfg, "split-cifar10", "gap", [r for r in runs if r.name in results], results, tmp_path)
    rows = list(csv.DictReader((tmp_path / "gap.csv").open()))
    assert rows[2]["seeds"] == "0 1 2 3" and rows[2]["ΔACC vs our SAMC [95% CI]"].endswith("(n=4)")


@pytest.mark.slow
def test_quick_benchmark_regenerates_every_table_and_figure_through_snakemake(tmp_path):
    """Every method runs two tasks through the pipeline, and every artifact is written from them."""
    from tests.test_pipeline import _project, _run, _tiny_params

    params = _tiny_params()
    params["benchmarks"] = {"quick": yaml.safe_load((ROOT / "params.yaml").read_text())["benchmarks"]["quick"]}
    project = _project(tmp_path / "bench", params)
    cfg = config.load(project / "params.yaml")
    targets = pipeline.benchmark_targets(cfg, "quick")
    _run(["snakemake", "--cores", "2", *targets], project, timeout=1800)
    out = project / "results" / "quick"
    t1 = list(csv.DictReader((out / "table1.csv").open()))
    assert [r["method"] for r in t1] == ["finetune", "ewc", "lwf", "icarl", "gem", "agem", "er", "mer", "ebm", "eec", "samc"]
    for run in benchmarks.runs(cfg, "quick"):
        assert len(json.loads((out / run.name / "metrics.json").read_text())["accuracy_matrix"]) == 2
    assert [r["completion"] for r in csv.DictReader((out / "table2.csv").open())] == ["zero", "rule", "ae", "rule+ae"]
    t4 = list(csv.DictReader((out / "table4.csv").open()))
    assert [float(r["mu"]) for r in t4] == [0.4, 0.6]
    for fig in ("figure2", "figure3", "figure5"):
        assert Image.open(out / f"{fig}.png").format == "PNG"
    assert "samc / gem" in (out / "table3.md").read_text()
    # attribution rows 3-5 (saliency, random, inverted mask) through the same target as split-cifar10's
    attr = list(csv.DictReader((out / "attribution.csv").open()))
    assert [r["overrides"] for r in attr] == ["—", "samc.mask=random", "samc.mask=inverted"]
    assert all(r["seeds"] == "0 1" and " ± " in r["ACC"] for r in attr)
    gap = list(csv.DictReader((out / "gap.csv").open()))
    assert [r["row"] for r in gap] == ["GEM", "SAMC (ours, default)", "SAMC, the authors' settings"]
    assert gap[2]["seeds"] == "0" and gap[1]["seeds"] == "0 1"          # one pair: no interval
    assert gap[2]["ΔACC vs our SAMC [95% CI]"].endswith("(n = 1, no interval)")
    codecs_rows = list(csv.DictReader((out / "codecs.csv").open()))
    assert [r["codec"] for r in codecs_rows] == ["raw", "jxl:distance=2", "salient_lowres"]
    assert Image.open(out / "codecs.png").format == "PNG"
    random_cfg = config.load(project / "params.yaml").with_overrides(
        benchmarks.find_run(cfg, "quick/samc-mask_random-s0").overrides)
    assert random_cfg.samc.mask == "random"
    assert "Nothing to be done" in _run(["snakemake", "--cores", "2", "-n", *targets], project)


def test_partial_table_names_the_missing_runs(tmp_path, monkeypatch, caplog):
    """`samc table --partial` renders what has results and lists the rest; without it, a missing run is an error."""
    from samc import cli

    monkeypatch.chdir(tmp_path)
    cfg = config.load(ROOT / "params.yaml")
    runs = benchmarks.artifact_runs(cfg, "quick", "table1")
    rng = np.random.default_rng(2)
    for r in runs[:3]:
        path = tmp_path / "results" / r.experiment / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({**_fake_metrics(rng, 2, [70.0, 80.0], [10, 0]), "devices": ["cpu: test"]}))
    args = ["table", "--params", str(ROOT / "params.yaml"), "--benchmark", "quick", "--artifact", "table1"]
    assert cli.main(args) == 2
    assert f"results/{runs[3].experiment}/metrics.json: missing" in caplog.text
    assert cli.main([*args, "--partial"]) == 0
    text = (tmp_path / "results" / "quick" / "table1.md").read_text()
    assert f"(PARTIAL: 3 of {len(runs)} runs)" in text and runs[3].name in text.split("Missing runs")[1]
    assert "cpu: test (3 runs)" in text
    prov = json.loads((tmp_path / "results" / "quick" / "table1.json").read_text())
    assert set(prov["missing_runs"]) == {r.name for r in runs[3:]} and set(prov["runs"]) == {r.name for r in runs[:3]}


def test_codec_table_pairs_each_row_with_its_reference_and_counts_every_byte(cfg, tmp_path):
    from PIL import Image as _Image

    rng = np.random.default_rng(4)
    runs = benchmarks.artifact_runs(cfg, "quick", "codecs")
    assert [r.name for r in runs] == ["gem-s0", "gem-s1", "gem-jxl2-s0", "er-lowres-s0"]
    results = {r.name: {**_fake_metrics(rng, 2, [70.0 + i, 80.0], [10, 0]), "memory_model_bytes": 1000 * i}
               for i, r in enumerate(runs)}
    written = write_artifact(cfg, "quick", "codecs", runs, results, tmp_path)
    assert sorted(p.name for p in written) == ["codecs.csv", "codecs.json", "codecs.md", "codecs.png"]
    assert _Image.open(tmp_path / "codecs.png").format == "PNG"
    rows = list(csv.DictReader((tmp_path / "codecs.csv").open()))
    assert [r["codec"] for r in rows] == ["raw", "jxl:distance=2", "salient_lowres"]
    jxl = results["gem-jxl2-s0"]
    assert rows[1]["total KB"].startswith(f"{(sum(jxl['memory_bytes']) + jxl['memory_model_bytes']) / 1e3:.1f}")
    assert rows[1]["ΔACC [95% CI]"].endswith("vs gem-raw (n=1)") and rows[2]["ΔACC [95% CI]"] == "—"


def test_one_seed_shows_no_spread():
    from samc.tables import _fmt

    assert _fmt([68.18]) == "68.18 (n=1)" and _fmt([1.0, 3.0]) == "2.00 ± 1.41" and _fmt([5.0, 5.0], 1) == "5.0 ± 0.0"
