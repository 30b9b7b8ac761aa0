"""The finished episodic memory ``M_t`` of one task (§4.1, Algorithm 1 line 11): its records,
labels and codec, as a weights-only state and as a size summary against the budget (App. H)."""
from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from samc.memory.codecs import Codec, canonical_name, get_codec
from samc.memory.codecs.coo import coo_nbytes
from samc.memory.errors import MemoryFormatError, as_int, check_shape
from samc.memory.fifo import budget_bytes
from samc.memory.records import concat_records, split_records

FORMAT = "samc-memory"
FORMAT_VERSION = 1

# finished task memory


def records_digest(data: np.ndarray, offsets: np.ndarray, labels: np.ndarray, indices: np.ndarray,
                   codec_params: Mapping[str, Any] | None = None) -> str:
    """sha256(records || offsets <i8 || labels <i8 || indices <i8 [|| codec parameters as JSON]),
    hex; the parameters enter only when some differ from the codec's defaults (so that digests
    written before the codec package stay valid)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data, dtype=np.uint8).tobytes())
    for arr in (offsets, labels, indices):
        h.update(np.ascontiguousarray(arr, dtype="<i8").tobytes())
    if codec_params:
        h.update(json.dumps(dict(codec_params), sort_keys=True).encode())
    return h.hexdigest()


@dataclass
class TaskMemory:
    """The finished episodic memory ``M_t`` of one task (§4.1, Algorithm 1 line 11)."""

    task: int
    classes: list[int]
    image_shape: tuple[int, int, int]
    encoding: str
    mu: float | None
    budget: int
    records: list[bytes] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    codec_params: dict[str, Any] = field(default_factory=dict)   # the codec's non-default values

    def __post_init__(self) -> None:
        self.task = as_int(self.task, "task")
        self.classes = [as_int(c, "classes") for c in self.classes]
        self.image_shape = check_shape(self.image_shape, "image_shape")
        self.encoding = canonical_name(self.encoding)
        if not isinstance(self.codec_params, Mapping):
            raise MemoryFormatError(f"codec_params: expected a mapping, got {self.codec_params!r}")
        self._codec = get_codec(self.encoding, **dict(self.codec_params))
        self.codec_params = {k: v for k, v in self._codec.values.items()
                             if v != self._codec.params[k][1]}
        if self.mu is not None:
            if isinstance(self.mu, bool) or not isinstance(self.mu, numbers.Real):
                raise MemoryFormatError(f"mu: expected a float or None, got {self.mu!r}")
            self.mu = float(self.mu)
        self.budget = as_int(self.budget, "budget")
        if not all(isinstance(r, (bytes, bytearray, memoryview)) for r in self.records):
            raise MemoryFormatError("records: every record must be bytes")
        self.records = [bytes(r) for r in self.records]
        n = len(self.records)
        for name in ("labels", "indices"):
            arr = np.asarray(getattr(self, name))
            if arr.shape != (n,) or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
                raise MemoryFormatError(
                    f"{name}: expected int64 of shape ({n},), got {arr.dtype} {arr.shape}"
                )
            setattr(self, name, arr.astype(np.int64))

    @property
    def codec(self) -> Codec:
        """The codec that reads the records (``encoding`` with ``codec_params``)."""
        return self._codec

    @property
    def nbytes(self) -> int:
        """Bytes used by the records (the quantity the budget bounds), plus any table the codec's
        records share (charged once)."""
        return sum(len(r) for r in self.records) + (self._codec.shared_nbytes if self.records else 0)

    def __len__(self) -> int:
        return len(self.records)

    def decode(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``COO^-1`` of record ``i`` (Eq. 4.6)."""
        try:
            return self._codec.decode(self.records[i], self.image_shape)
        except MemoryFormatError as exc:
            raise MemoryFormatError(f"task {self.task} record {i}: {exc}") from exc

    def decode_all(self) -> tuple[np.ndarray, np.ndarray]:
        """``COO^-1(M_k)`` of Eq. 4.6: images uint8 ``(N,C,H,W)`` and masks bool ``(N,H,W)``."""
        c, h, w = self.image_shape
        images = np.zeros((len(self), c, h, w), dtype=np.uint8)
        masks = np.zeros((len(self), h, w), dtype=bool)
        for i in range(len(self)):
            images[i], masks[i] = self.decode(i)
        return images, masks

    def kept_fraction(self) -> float:
        """Mean over images of the kept-pixel fraction, i.e. ``1 - mean drop ratio`` (§4.4)."""
        if not len(self):
            return math.nan
        return float(self.decode_all()[1].mean(axis=(1, 2)).mean())

    def to_state(self) -> dict[str, Any]:
        """Dict of torch tensors + plain python types (``torch.load(weights_only=True)``-safe)."""
        data, offsets = concat_records(self.records)
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "classes": list(self.classes),
            "image_shape": list(self.image_shape),
            "encoding": self.encoding,
            "codec_params": dict(self.codec_params),
            "mu": self.mu,
            "budget": self.budget,
            "records": torch.from_numpy(data),
            "offsets": torch.from_numpy(offsets),
            "labels": torch.from_numpy(self.labels.copy()),
            "indices": torch.from_numpy(self.indices.copy()),
            "sha256": records_digest(data, offsets, self.labels, self.indices, self.codec_params),
        }

    @classmethod
    def from_parts(cls, meta: dict, records: list[bytes], arrays: dict) -> "TaskMemory":
        """A TaskMemory from its metadata (state dict or Zarr attrs) and decoded arrays."""
        return cls(
            task=meta["task"],
            classes=list(meta["classes"]),
            image_shape=tuple(meta["image_shape"]),  # type: ignore[arg-type]
            encoding=meta["encoding"],
            mu=meta["mu"],
            budget=meta["budget"],
            records=records,
            labels=arrays["labels"],
            indices=arrays["indices"],
            codec_params=dict(meta.get("codec_params") or {}),
        )

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TaskMemory:
        """Inverse of :meth:`to_state`, verifying format, offsets and digest."""
        if not isinstance(state, Mapping):
            raise MemoryFormatError(f"state: expected a dict, got {type(state).__name__}")
        required = ("task", "classes", "image_shape", "encoding", "mu", "budget", "records",
                    "offsets", "labels", "indices")
        for key in required:
            if key not in state:
                raise MemoryFormatError(f"state[{key!r}]: missing")
        if state.get("format", FORMAT) != FORMAT:
            raise MemoryFormatError(f"state['format']: expected {FORMAT!r}, got {state['format']!r}")
        if state.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise MemoryFormatError(
                f"state['format_version']: unsupported {state['format_version']!r}"
            )
        arrays = {}
        for key, dtype in (("records", torch.uint8), ("offsets", torch.int64),
                           ("labels", torch.int64), ("indices", torch.int64)):
            t = state[key]
            if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.dim() != 1:
                raise MemoryFormatError(f"state[{key!r}]: expected a 1-D {dtype} tensor")
            arrays[key] = t.detach().cpu().numpy()
        params = state.get("codec_params") or {}
        if not isinstance(params, Mapping):
            raise MemoryFormatError(f"state['codec_params']: expected a mapping, got {params!r}")
        if "sha256" in state:
            digest = records_digest(arrays["records"], arrays["offsets"], arrays["labels"],
                                    arrays["indices"], params)
            if digest != state["sha256"]:
                raise MemoryFormatError("state['sha256']: digest mismatch, memory state is corrupt")
        records = split_records(arrays["records"], arrays["offsets"], "state")
        return cls.from_parts(state, records, arrays)


def dense_task_memory(task: int, classes: Sequence[int], images: np.ndarray, labels: np.ndarray,
                      indices: np.ndarray, images_per_task: int) -> "TaskMemory":
    """Whole uint8 images (N, C, H, W) as task ``task``'s memory, raw records charged against the
    budget of ``images_per_task`` raw images (replay buffers and exemplar sets, for inspection)."""
    shape = tuple(images.shape[1:])
    return TaskMemory(
        task=task, classes=list(classes), image_shape=shape, encoding="raw", mu=None,
        budget=budget_bytes(images_per_task, shape), records=[np.ascontiguousarray(x).tobytes() for x in images],
        labels=np.array(labels, copy=True), indices=np.array(indices, copy=True),
    )


# summary


def _ratio(a: float, b: float) -> float | None:
    return None if b == 0 else float(a) / float(b)


def describe(memory: TaskMemory) -> dict[str, Any]:
    """Size summary of ``M_t`` against the budget, dense and COO storage (§4.4, App. H / Table 4)."""
    c, h, w = memory.image_shape
    n = len(memory)
    # a codec that ignores saliency knows every pixel: no need to decode (nor, for a learned codec, a model)
    masks = memory.decode_all()[1] if memory.codec.uses_saliency else np.ones((n, h, w), dtype=bool)
    kept_counts = masks.reshape(n, -1).sum(axis=1) if n else np.zeros(0, dtype=np.int64)
    dense = n * c * h * w
    coo_total = int(sum(coo_nbytes(int(k), c) for k in kept_counts))
    nbytes = memory.nbytes
    budget_images = memory.budget / (c * h * w)
    return {
        "task": memory.task,
        "classes": list(memory.classes),
        "encoding": memory.encoding,
        "codec": memory.codec.spec,
        "mu": memory.mu,
        "image_shape": list(memory.image_shape),
        "n_images": n,
        "kept_fraction": float(kept_counts.mean() / (h * w)) if n else None,
        "nbytes": nbytes,
        "budget": memory.budget,
        "budget_images": budget_images,
        "dense_nbytes": dense,
        "coo_nbytes": coo_total,
        "bytes_per_image": _ratio(nbytes, n),
        "ratio_vs_budget": _ratio(nbytes, memory.budget),
        "ratio_vs_dense": _ratio(nbytes, dense),
        "ratio_vs_coo": _ratio(nbytes, coo_total),
        "images_vs_raw": _ratio(n, budget_images),
    }
