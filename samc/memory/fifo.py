"""The byte-budgeted FIFO episodic memory of one task (§4.1 "first-in-first-out"; App. H, Table 4)."""
from __future__ import annotations

import collections
import logging
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from samc.memory.errors import MemoryFormatError, as_int, check_shape
from samc.memory.records import concat_records, split_records

if TYPE_CHECKING:
    from samc.memory.task_memory import TaskMemory

logger = logging.getLogger(__name__)


def budget_bytes(images_per_task: int, shape: Sequence[int]) -> int:
    """Per-task byte budget of App. H: "N raw images" of uint8, i.e. ``N*C*H*W`` bytes."""
    n = as_int(images_per_task, "images_per_task")
    if n < 0:
        raise MemoryFormatError(f"images_per_task: must be >= 0, got {n}")
    c, h, w = check_shape(shape)
    return n * c * h * w


class FifoMemory:
    """Byte-budgeted FIFO episodic memory of one task (§4.1, "the last samples remain").

    ``add`` appends a record and evicts from the front until the records' charges sum to at most
    ``budget``; a record charged more than the whole budget is refused (logged) and leaves the
    memory untouched.  The content is therefore always the maximal suffix that fits of the stream
    of accepted records.  A record's charge is its length in bytes unless ``add`` is given another
    (``samc.budget_charge = values``: the SAMC authors' C values per kept pixel, no index cost).
    """

    def __init__(self, budget: int) -> None:
        budget = as_int(budget, "budget")
        if budget < 0:
            raise MemoryFormatError(f"budget: must be >= 0, got {budget}")
        self.budget: int = budget
        self._items: collections.deque[tuple[bytes, int, int, float]] = collections.deque()
        self._charges: collections.deque[int] = collections.deque()
        self._nbytes = 0
        self._charged = 0
        self.n_seen = 0
        self.n_evicted = 0
        self.n_refused = 0

    def add(self, record: bytes, label: int, index: int, kept: float | None = None,
            charge: int | None = None) -> bool:
        """Append ``(COO(x'), y)`` to the memory (Algorithm 1 line 11); False if refused.
        ``charge``: what the record costs against the budget (default: its bytes)."""
        if not isinstance(record, (bytes, bytearray, memoryview)):
            raise MemoryFormatError(f"record: expected bytes, got {type(record).__name__}")
        record = bytes(record)
        label = as_int(label, "label")
        index = as_int(index, "index")
        kept_value = math.nan if kept is None else float(kept)
        cost = len(record) if charge is None else as_int(charge, "charge")
        if cost < 0:
            raise MemoryFormatError(f"charge: must be >= 0, got {cost}")
        self.n_seen += 1
        if cost > self.budget:
            self.n_refused += 1
            logger.warning(
                "FifoMemory: record charged %d (index %d) exceeds the whole budget of %d; dropped",
                cost,
                index,
                self.budget,
            )
            return False
        self._items.append((record, label, index, kept_value))
        self._charges.append(cost)
        self._nbytes += len(record)
        self._charged += cost
        while self._charged > self.budget:
            old = self._items.popleft()
            self._nbytes -= len(old[0])
            self._charged -= self._charges.popleft()
            self.n_evicted += 1
        return True

    def extend(
        self,
        records: Iterable[bytes],
        labels: Iterable[int],
        indices: Iterable[int],
        kept: Iterable[float | None] | None = None,
    ) -> None:
        """``add`` each ``(record, label, index[, kept])`` in order."""
        records, labels, indices = list(records), list(labels), list(indices)
        kept_list = [None] * len(records) if kept is None else list(kept)
        if not len(records) == len(labels) == len(indices) == len(kept_list):
            raise MemoryFormatError("extend: records, labels, indices, kept differ in length")
        for r, y, i, f in zip(records, labels, indices, kept_list):
            self.add(r, y, i, f)

    @property
    def nbytes(self) -> int:
        """The records' real bytes."""
        return self._nbytes

    @property
    def charged(self) -> int:
        """What the records cost against the budget (= ``nbytes`` unless charges were given)."""
        return self._charged

    def __len__(self) -> int:
        return len(self._items)

    @property
    def records(self) -> list[bytes]:
        return [it[0] for it in self._items]

    @property
    def labels(self) -> np.ndarray:
        return np.fromiter((it[1] for it in self._items), dtype=np.int64, count=len(self._items))

    @property
    def indices(self) -> np.ndarray:
        return np.fromiter((it[2] for it in self._items), dtype=np.int64, count=len(self._items))

    @property
    def kept(self) -> np.ndarray:
        """Per-record kept fraction (NaN where not given)."""
        return np.fromiter((it[3] for it in self._items), dtype=np.float64, count=len(self._items))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays: ``records`` uint8, ``offsets`` int64 (N+1), ``labels``, ``indices``, ``kept``."""
        data, offsets = concat_records(self.records)
        return {
            "records": data,
            "offsets": offsets,
            "labels": self.labels,
            "indices": self.indices,
            "kept": self.kept,
        }

    @classmethod
    def from_arrays(
        cls,
        budget: int,
        records: np.ndarray,
        offsets: np.ndarray,
        labels: np.ndarray,
        indices: np.ndarray,
        kept: np.ndarray | None = None,
    ) -> FifoMemory:
        """Inverse of :meth:`to_arrays`; the content must fit ``budget``."""
        recs = split_records(records, offsets, "from_arrays")
        labels = np.asarray(labels)
        indices = np.asarray(indices)
        kept_arr = np.full(len(recs), np.nan) if kept is None else np.asarray(kept, dtype=np.float64)
        for name, arr in (("labels", labels), ("indices", indices), ("kept", kept_arr)):
            if arr.shape != (len(recs),):
                raise MemoryFormatError(f"from_arrays {name}: expected shape ({len(recs)},), got {arr.shape}")
        if sum(map(len, recs)) > budget:
            raise MemoryFormatError(
                f"from_arrays records: {sum(map(len, recs))} bytes exceed the budget of {budget}"
            )
        mem = cls(budget)
        for r, y, i, f in zip(recs, labels.tolist(), indices.tolist(), kept_arr.tolist()):
            mem.add(r, int(y), int(i), None if math.isnan(f) else f)
        return mem

    def to_task_memory(
        self,
        task: int,
        classes: Sequence[int],
        image_shape: Sequence[int],
        encoding: str,
        mu: float | None,
        codec_params: dict | None = None,
    ) -> TaskMemory:
        """Freeze this FIFO into the finished memory ``M_t`` of task ``t`` (Algorithm 1)."""
        from samc.memory.task_memory import TaskMemory

        return TaskMemory(
            task=task,
            classes=list(classes),
            image_shape=tuple(image_shape),  # type: ignore[arg-type]
            encoding=encoding,
            mu=mu,
            budget=self.budget,
            records=self.records,
            labels=self.labels,
            indices=self.indices,
            codec_params=dict(codec_params or {}),
        )
