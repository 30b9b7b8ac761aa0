"""Shared pytest fixtures."""
from __future__ import annotations

import os
import tarfile
from collections import Counter
from pathlib import Path

import pytest

# CI checks the repository out with the shared data folder beside it: <parent>/shared/data/...
CIFAR10_TARBALL = Path(__file__).resolve().parents[1].parent / "shared/data/cifar10/cifar10-imagefolder.tar.gz"
CIFAR10_SLICE_PER_CLASS = 20


@pytest.fixture(scope="session")
def cifar10_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real ImageFolder tree: the first 20 files of each class and split of CIFAR-10.

    Streams ``shared/data/cifar10/cifar10-imagefolder.tar.gz`` (members ``cifar10/<split>/<class>/NNNN.jpg``,
    stored in name order) and writes the first ``CIFAR10_SLICE_PER_CLASS`` files per (split, class) into a
    temporary folder. Returns the path of its ``cifar10`` folder (``train/`` and ``test/`` inside).
    """
    if not CIFAR10_TARBALL.is_file():
        pytest.skip(f"CIFAR-10 tarball not found at {CIFAR10_TARBALL} (expected ../shared beside the repository)")
    dest = tmp_path_factory.mktemp("cifar10_slice") / "cifar10"
    kept: Counter[tuple[str, str]] = Counter()
    with tarfile.open(CIFAR10_TARBALL, "r|gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4 or parts[0] != "cifar10" or parts[1] not in ("train", "test"):
                continue
            key = (parts[1], parts[2])
            if kept[key] >= CIFAR10_SLICE_PER_CLASS:
                continue
            src = tar.extractfile(member)
            assert src is not None
            out = dest / parts[1] / parts[2] / parts[3]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(src.read())
            kept[key] += 1
    if not kept:
        pytest.skip(f"{CIFAR10_TARBALL} holds no cifar10/<split>/<class>/ files")
    return dest

os.environ.setdefault("DVC_NO_ANALYTICS", "1")   # the DVC tests never phone home

# The pipeline tests run `snakemake`, `dvc` and (through them) `samc` as commands: put the scripts
# folder of this interpreter (and of a --user install) first on PATH.
import site  # noqa: E402
import sysconfig  # noqa: E402

for _scripts in (os.path.join(site.getuserbase(), "bin"), sysconfig.get_path("scripts")):
    if os.path.isdir(_scripts) and _scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = _scripts + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(autouse=True)
def _outside_the_checkout(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in an empty folder of its own: the commands' relative defaults (``data/prepared``,
    ``runs/``, ``results/``, ``params.yaml``) never reach the user's checkout. Paths of the
    repository itself are spelled ``tests.helpers.ROOT / ...``."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
