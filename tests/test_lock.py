"""requirements.lock is a real lock: it pins what requirements.in pins, every requirement of a locked
package is locked too (closed), and this environment holds exactly the pinned versions (CI installs
from the lock, so this is checked there). Regenerate with `python tools/update_lock.py`."""
from __future__ import annotations

from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT


def _pins(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned with =="
            out[canonicalize_name(name)] = version
    return out


def test_the_lock_pins_what_requirements_in_pins():
    lock, direct = _pins(ROOT / "requirements.lock"), _pins(ROOT / "requirements.in")
    assert {name: lock.get(name) for name in direct} == direct


def test_the_lock_is_closed_and_installed_as_pinned():
    lock = _pins(ROOT / "requirements.lock")
    wrong, missing = [], []
    for name, version in lock.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}: not installed")
            continue
        if dist.version != version:
            wrong.append(f"{name}: {dist.version} installed, {version} locked")
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue                      # another platform's or an extra's requirement
            if canonicalize_name(req.name) not in lock:
                missing.append(f"{req.name} (required by {name})")
    assert not wrong, "environment differs from requirements.lock: " + "; ".join(wrong)
    assert not missing, "requirements.lock lacks: " + ", ".join(missing)
