"""Container recipes and the workflow's static checks (cheap, in CI). The images themselves are
built and run end to end by ``containers/e2e.sh`` (Docker + Apptainer), which is too heavy for CI."""
import re
import subprocess

from tests.helpers import ROOT

SECTIONS = {"%labels", "%setup", "%files", "%post", "%environment", "%runscript", "%test", "%help", "%startscript"}


def _def_sections(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    header, sections, current = {}, {}, None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("%"):
            current = line.split()[0]
            assert current in SECTIONS, f"samc.def: unknown section {current}"
            sections[current] = []
        elif current is None:
            key, _, value = line.partition(":")
            header[key.strip()] = value.strip()
        else:
            sections[current].append(line.strip())
    return header, sections


def test_apptainer_definition_parses_and_installs_the_lock():
    header, sections = _def_sections((ROOT / "containers/samc.def").read_text())
    assert header["Bootstrap"] in {"docker-archive", "docker-daemon", "localimage", "docker", "debootstrap"}
    assert header["From"]
    assert {"%files", "%post", "%runscript"} <= set(sections)
    sources = [line.split()[0] for line in sections["%files"]]
    assert "requirements.lock" in sources
    for src in sources:
        assert (ROOT / src).exists(), f"samc.def %files: {src} is not in the repository"
    assert any("requirements.lock" in line for line in sections["%post"])
    assert any(re.search(r"\bsamc\b", line) for line in sections["%runscript"])


def test_dockerfile_installs_the_same_lock_and_runs_samc():
    text = (ROOT / "containers/Dockerfile").read_text()
    assert re.search(r"^ARG BASE=", text, re.M), "the base image is a build argument (local base allowed)"
    assert re.search(r"^COPY requirements\.lock", text, re.M)
    assert re.search(r"pip install .*-r \S*requirements\.lock", text)
    assert 'ENTRYPOINT ["samc"]' in text


def test_scripts_are_valid_bash():
    for script in ("containers/e2e.sh", "containers/apptainer-host/setup.sh", "containers/apptainer-host/apptainer",
                   "containers/slurm/start-local-slurm.sh", "containers/slurm/stop-local-slurm.sh", ".ci/run"):
        proc = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


def test_snakemake_lint_is_clean():
    proc = subprocess.run(["snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "good condition" in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
