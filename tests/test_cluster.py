"""Clusters and execution profiles: the tiny pipeline through a real one-node SLURM cluster
(``containers/slurm/start-local-slurm.sh``: munge, MariaDB + slurmdbd, slurmctld, slurmd), and the
profiles' per-kind resources."""
import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
import yaml

from samc import config, pipeline
from samc.train import run_stream
from tests.helpers import ROOT
from tests.test_pipeline import _project, _run, _tiny_params


def _slurm_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sacct") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0 and \
        subprocess.run(["sacct", "-X", "-n"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def slurm():
    if not _slurm_up():
        if os.environ.get("SAMC_REQUIRE_SLURM"):
            pytest.fail("SAMC_REQUIRE_SLURM is set but no SLURM cluster answers (sinfo/sacct); "
                        "start one with containers/slurm/start-local-slurm.sh")
        pytest.skip("no SLURM cluster here (containers/slurm/start-local-slurm.sh starts one, as root)")


def test_profiles_declare_resources_per_kind_of_rule(tmp_path):
    slurm_profile = yaml.safe_load((ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    assert slurm_profile["executor"] == "slurm"
    kinds = slurm_profile["config"]["rule_resources"]
    assert set(kinds) == {"prepare", "train", "evaluate"} and all({"mem_mb", "runtime"} <= set(v) for v in kinds.values())
    gpu = yaml.safe_load((ROOT / "workflow/profiles/gpu/config.yaml").read_text())
    assert gpu["config"]["rule_resources"]["train"] == {"gpu": 1} and "--nv" in gpu["singularity-args"]
    # the resources reach the rules: a dry run with the GPU profile lists gpu=1 for training only
    project = _project(tmp_path / "p", _tiny_params())
    out = _run(["snakemake", "-n", "-p", "--cores", "1", "--profile", "workflow/profiles/gpu"], project)
    train_blocks = [b for b in out.split("\n\n") if "rule train_" in b or "localrule train_" in b]
    assert train_blocks and all("gpu=1" in b for b in train_blocks), out[-2000:]
    assert not any("gpu=1" in b for b in out.split("\n\n") if "rule evaluate_" in b)


@pytest.mark.slow
def test_tiny_pipeline_on_slurm_equals_the_local_run(slurm, tmp_path):
    params = _tiny_params()
    project = _project(tmp_path / "slurm", params)
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5))
    _run(["snakemake", "--profile", str(ROOT / "workflow/profiles/slurm"), "--jobs", "4", "--slurm-no-account",
          "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2"],
         project, timeout=1800)
    # every job went through SLURM and completed there
    acct = subprocess.run(["sacct", "-X", "-n", "-P", "--starttime", started, "--format=JobID,Comment,State"],
                          capture_output=True, text=True, check=True).stdout
    rows = [line.split("|") for line in acct.splitlines() if line.strip()]
    stages = pipeline.stages(config.load(project / "params.yaml"))
    for st in stages:
        hits = [r for r in rows if r[1].startswith(f"rule_{st.name}")]
        assert hits and all(r[2] == "COMPLETED" for r in hits), (st.name, acct)
    # and the metrics equal the same experiments run locally in one process
    cfg = config.load(project / "params.yaml")
    for exp in pipeline.experiments(cfg):
        got = json.loads((project / "results" / exp.name / "metrics.json").read_text())
        local = run_stream(cfg.with_overrides(exp.overrides), tmp_path / "local" / exp.name, progress=False)
        np.testing.assert_array_equal(np.array(got["accuracy_matrix"]), np.array(local["accuracy_matrix"]))
        assert got["memory_bytes"] == local["memory_bytes"]
