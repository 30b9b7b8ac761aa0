"""A byte-budgeted reservoir: a uniform random sample of a stream of variable-size records
(ER's buffer with any memory codec, issue 17).

Algorithm R (Vitter; ER's buffer, samc.methods.er) keeps a uniform sample of a fixed *count* of
equal-size images. With a codec, records differ in size and the budget is in bytes, so the
reservoir uses priority sampling instead: every sample of the stream draws a key u ~ U(0, 1)
and the reservoir holds the records of smallest keys whose bytes fit the budget — the records
are evicted largest key first until the rest fits. Once an eviction has happened, a sample
whose key is above every key held is refused without being encoded (it would be the first one
evicted), so only ~budget/record-size · log(stream length) samples are ever encoded. With equal
record sizes this is the bottom-k sample, uniform over the stream like Algorithm R's.
"""
from __future__ import annotations

import heapq
import math

import numpy as np

from samc.memory.errors import MemoryFormatError, as_bytes, as_int
from samc.memory.records import concat_records, split_records


class ByteReservoir:
    """Records with their label, task, index and key; total bytes ≤ ``budget``."""

    def __init__(self, budget: int) -> None:
        budget = as_int(budget, "budget")
        if budget < 0:
            raise MemoryFormatError(f"budget: must be >= 0, got {budget}")
        self.budget = budget
        self.items: dict[int, tuple[bytes, int, int, int, float]] = {}   # slot -> record, y, t, index, key
        self._heap: list[tuple[float, int]] = []                         # (-key, slot): largest key first
        self._next_slot = 0
        self.nbytes = 0
        self.evicted = False
        self.n_seen = 0

    def __len__(self) -> int:
        return len(self.items)

    def max_key(self) -> float:
        return -self._heap[0][0] if self._heap else -math.inf

    def admits(self, key: float) -> bool:
        """Whether a sample with this key could stay (else it need not be encoded)."""
        return not self.evicted or key < self.max_key()

    def skip(self, n: int = 1) -> None:
        """Count ``n`` samples refused by :meth:`admits` (never encoded)."""
        self.n_seen += n

    def add(self, record: bytes, label: int, task: int, index: int, key: float) -> tuple[int, list[int]]:
        """Offer a sample: its slot and the slots evicted (its own if it did not fit)."""
        record = as_bytes(record)
        self.n_seen += 1
        if not 0.0 <= key < 1.0:
            raise MemoryFormatError(f"key: must be in [0, 1), got {key!r}")
        slot = self._next_slot
        self._next_slot += 1
        if len(record) > self.budget:
            self.evicted = True
            return slot, [slot]
        self.items[slot] = (record, int(label), int(task), int(index), float(key))
        heapq.heappush(self._heap, (-float(key), slot))
        self.nbytes += len(record)
        gone = []
        while self.nbytes > self.budget:
            _, old = heapq.heappop(self._heap)
            self.nbytes -= len(self.items.pop(old)[0])
            gone.append(old)
            self.evicted = True
        return slot, gone

    # -- views and state ----------------------------------------------------------------------
    def slots(self) -> list[int]:
        """Slots in insertion order (the order replay draws from)."""
        return sorted(self.items)

    def to_arrays(self) -> dict[str, np.ndarray]:
        slots = self.slots()
        data, offsets = concat_records([self.items[s][0] for s in slots])
        col = lambda i, dt: np.array([self.items[s][i] for s in slots], dtype=dt)  # noqa: E731
        return {"records": data, "offsets": offsets, "labels": col(1, np.int64), "tasks": col(2, np.int64),
                "indices": col(3, np.int64), "keys": col(4, np.float64), "slots": np.array(slots, dtype=np.int64),
                "meta": np.array([self.budget, self._next_slot, int(self.evicted), self.n_seen], dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "ByteReservoir":
        budget, next_slot, evicted, n_seen = (int(v) for v in np.asarray(arrays["meta"]))
        res = cls(budget)
        records = split_records(np.asarray(arrays["records"]), np.asarray(arrays["offsets"]), "reservoir")
        for r, y, t, i, k, s in zip(records, *(np.asarray(arrays[n]).tolist() for n in
                                                ("labels", "tasks", "indices", "keys", "slots"))):
            res.items[int(s)] = (r, int(y), int(t), int(i), float(k))
            heapq.heappush(res._heap, (-float(k), int(s)))
            res.nbytes += len(r)
        if res.nbytes > budget:
            raise MemoryFormatError(f"reservoir: {res.nbytes} bytes of records exceed the budget of {budget}")
        res._next_slot, res.evicted, res.n_seen = next_slot, bool(evicted), n_seen
        return res
