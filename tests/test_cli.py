"""The command line: --version, -v before or after the command, and a --help without markup in
which every command has a description and every option says what it does."""
import argparse

import pytest

from samc import __version__, cli


def _parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"samc {__version__}"


def test_verbose_anywhere():
    p = cli.build_parser()
    assert p.parse_args(["-v", "run"]).verbose and p.parse_args(["run", "-v"]).verbose
    assert p.parse_args(["memory", "show", "x", "-v"]).verbose and not p.parse_args(["run"]).verbose


def test_every_command_and_option_is_described():
    parsers = list(_parsers(cli.build_parser()))
    assert len(parsers) >= 12
    for p in parsers:
        text = p.format_help()
        assert "``" not in text and "%%" not in text, p.prog
        assert p.description, f"{p.prog}: no description"
        for action in p._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{p.prog} {action.option_strings or action.dest}: no help"


def _tiny_project(path, **train):
    """A params.yaml of two tiny finetune tasks (seconds) in ``path``."""
    import yaml

    from tests.helpers import ROOT

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["dataset"].update(n_tasks=2, shapes_train_per_class=10, shapes_test_per_class=5)
    raw["train"].update(method="finetune", device="cpu", **train)
    (path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path / "params.yaml")


def test_samc_run_writes_the_pipelines_folder_and_refuses_to_resume_other_parameters(capsys, caplog):
    """One experiment, one folder: `samc run` of params.yaml as it is trains the pipeline's
    `runs/main`; with a --set it is a run of its own, named by its parameters; a folder made with
    other parameters is not resumed (its tasks left as they are)."""
    import json
    import logging
    from pathlib import Path

    tmp_path = Path.cwd()                                  # an empty folder of this test's own (conftest)
    params = _tiny_project(tmp_path)
    assert cli.main(["run", "--params", params, "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("run folder: runs/main\n")
    task1 = (tmp_path / "runs/main/task_1/metrics.json").read_text()
    assert json.loads((tmp_path / "runs/main/config.json").read_text())["train"]["method"] == "finetune"

    assert cli.main(["run", "--params", params, "--set", "train.seed=1", "--no-progress"]) == 0
    (other,) = [p.name for p in (tmp_path / "runs").iterdir() if p.name != "main"]
    assert other.startswith("shapes-finetune-s1-") and (tmp_path / "runs" / other / "task_2").is_dir()

    from samc.config import load

    was = load(params).train.lr
    _tiny_project(tmp_path, lr=0.5)                        # params.yaml edited: runs/main is another experiment
    (tmp_path / "runs/main/task_2/metrics.json").unlink()  # task 2 to redo: a resume of task 1's state
    with caplog.at_level(logging.ERROR, logger="samc"):
        assert cli.main(["run", "--params", params, "--no-progress"]) == 2
    assert "runs/main" in caplog.text and f"train.lr: {was} -> 0.5" in caplog.text
    assert not (tmp_path / "runs/main/task_2/metrics.json").exists()
    assert (tmp_path / "runs/main/task_1/metrics.json").read_text() == task1


def test_samc_run_with_a_benchmark_is_that_benchmarks_run_in_its_folder():
    """`samc run --benchmark B` takes B's protocol and the method's own values (the paper's lr 0.1,
    32x32, EWC's Fisher as B sets it), names the folder as the pipeline does, and a --set wins."""
    from samc import benchmarks
    from samc.config import RUN_SECTIONS, load
    from tests.helpers import ROOT

    def run(*sets):
        argv = ["run", "--params", str(ROOT / "params.yaml"), "--benchmark", "split-cifar10"]
        return cli._run_config(cli.build_parser().parse_args([*argv, *(x for s in sets for x in ("--set", s))]))

    params = load(ROOT / "params.yaml")
    for sets, name in [(["train.method=ewc"], "ewc-s0"), (["train.method=gem", "train.seed=2"], "gem-s2"),
                       (["train.method=samc", "samc.mu=0.7"], "samc-mu0.7-s0")]:
        cfg, folder = run(*sets)
        assert folder == f"split-cifar10/{name}"
        pipeline_cfg = params.with_overrides(benchmarks.find_run(params, folder).overrides)
        assert cfg.digest(RUN_SECTIONS) == pipeline_cfg.digest(RUN_SECTIONS)
        assert (cfg.dataset.name, cfg.dataset.image_size, cfg.train.lr) == ("cifar10", 32, 0.1)
    assert run("train.method=ewc")[0].baselines.ewc_fisher == "batch"          # the method's own value
    cfg, folder = run("train.method=ewc", "baselines.ewc_fisher=sample", "train.lr=0.05")
    assert (cfg.baselines.ewc_fisher, cfg.train.lr) == ("sample", 0.05)        # --set wins
    assert folder.startswith("cifar10-ewc-s0-")                                # not the pipeline's run
