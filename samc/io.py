"""Atomic file output: every file is written to a temporary sibling and renamed into place, so a
killed process leaves either the previous complete file or none, never a half-written one."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    _atomic(Path(path), lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def write_text(path: str | Path, text: str) -> None:
    _atomic(Path(path), lambda p: p.write_text(text))


def save_torch(path: str | Path, obj: Any) -> None:
    _atomic(Path(path), lambda p: torch.save(obj, p))


def load_torch(path: str | Path) -> Any:
    """Load a checkpoint without executing code from it (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
