"""The byte-budgeted reservoir (samc.memory.reservoir): ER's buffer with any codec."""
from __future__ import annotations

import numpy as np
import pytest

from samc.memory import MemoryFormatError
from samc.memory.reservoir import ByteReservoir


def test_never_over_budget_and_keeps_the_smallest_keys_that_fit():
    rng = np.random.default_rng(0)
    res = ByteReservoir(1000)
    offered = []
    for i in range(500):
        key = float(rng.random())
        record = bytes(int(rng.integers(1, 120)))
        if res.admits(key):
            res.add(record, i % 2, i // 100, i, key)
        else:
            res.skip()
        offered.append((key, len(record)))
        assert res.nbytes <= res.budget == 1000
    assert res.n_seen == 500
    kept = sorted(it[4] for it in res.items.values())
    # every key below the largest one held either is held or was too big to fit beside the others
    assert max(kept) < 0.5 and len(kept) >= 1000 // 120


def test_equal_sizes_give_a_uniform_sample_of_the_stream():
    counts = np.zeros(40)
    for seed in range(400):
        rng = np.random.default_rng(seed)
        res = ByteReservoir(50)                     # 5 records of 10 bytes
        for i in range(40):
            key = float(rng.random())
            if res.admits(key):
                res.add(bytes(10), 0, 0, i, key)
            else:
                res.skip()
        assert len(res) == 5
        for it in res.items.values():
            counts[it[3]] += 1
    expected = 400 * 5 / 40
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))   # early and late samples alike
    assert abs(counts[:20].sum() - counts[20:].sum()) < 0.15 * counts.sum()


def test_state_round_trip_continues_identically():
    rng = np.random.default_rng(3)
    a = ByteReservoir(300)
    stream = [(bytes(int(rng.integers(1, 60))), float(rng.random())) for _ in range(200)]
    for i, (r, k) in enumerate(stream[:100]):
        a.add(r, 0, 0, i, k)
    b = ByteReservoir.from_arrays(a.to_arrays())
    for i, (r, k) in enumerate(stream[100:], 100):
        assert a.admits(k) == b.admits(k)
        assert a.add(r, 0, 0, i, k) == b.add(r, 0, 0, i, k)
    assert a.items == b.items and a.nbytes == b.nbytes


def test_bad_input_is_refused():
    with pytest.raises(MemoryFormatError, match="budget"):
        ByteReservoir(-1)
    res = ByteReservoir(10)
    with pytest.raises(MemoryFormatError, match="key"):
        res.add(b"x", 0, 0, 0, 1.5)
    slot, gone = res.add(bytes(11), 0, 0, 0, 0.1)           # larger than the whole budget
    assert gone == [slot] and len(res) == 0
    arrays = ByteReservoir(100).to_arrays()
    arrays["meta"][0] = -5
    with pytest.raises(MemoryFormatError):
        ByteReservoir.from_arrays(arrays)
