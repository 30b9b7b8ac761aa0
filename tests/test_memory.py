"""Tests for samc.memory: COO, record encodings, FIFO budget, TaskMemory state, Zarr snapshots (§4.1)."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import samc.memory as memory_module
import samc.io as samc_io
from samc.memory import (
    FifoMemory,
    MemoryFormatError,
    TaskMemory,
    budget_bytes,
    coo,
    coo_inverse,
    coo_nbytes,
    decode,
    describe,
    encode,
    encode_batch,
    load_snapshot,
    min_record_nbytes,
    record_kept_count,
    save_snapshot,
)

#: the codecs that keep what they store exactly (every codec: tests/test_memory_codecs.py)
EXACT = ("raw", "coo", "sparse")
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------
# synthetic data (numpy only)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of the last two axes (reflect padding)."""
    r = max(1, int(3 * sigma))
    t = np.arange(-r, r + 1)
    k = np.exp(-(t**2) / (2 * sigma**2))
    k /= k.sum()
    for axis in (-2, -1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        xp = np.pad(x, pad, mode="reflect")
        x = sum(k[i] * np.take(xp, np.arange(i, i + x.shape[axis]), axis=axis) for i in range(2 * r + 1))
    return x


def smooth_image(rng: np.random.Generator, shape: tuple[int, int, int] = (3, 32, 32)) -> np.ndarray:
    """Gaussian-blurred coloured rectangles on a flat background."""
    c, h, w = shape
    img = np.full(shape, rng.uniform(0, 60), dtype=np.float64)
    for _ in range(3):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        hh, ww = rng.integers(3, max(4, h // 2)), rng.integers(3, max(4, w // 2))
        img[:, y0 : y0 + hh, x0 : x0 + ww] += rng.uniform(0, 180, size=(c, 1, 1))
    return np.clip(_blur(img, 1.5), 0, 255).astype(np.uint8)


def blob_mask(rng: np.random.Generator, h: int, w: int, kept: float) -> np.ndarray:
    """Grad-CAM-like mask: bilinearly upsampled 4x4 random map, top ``kept`` fraction kept."""
    coarse = rng.random((4, 4))
    ys, xs = np.linspace(0, 3, h), np.linspace(0, 3, w)
    y0, x0 = np.minimum(ys.astype(int), 2), np.minimum(xs.astype(int), 2)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    s = (
        coarse[y0][:, x0] * (1 - fy) * (1 - fx)
        + coarse[y0 + 1][:, x0] * fy * (1 - fx)
        + coarse[y0][:, x0 + 1] * (1 - fy) * fx
        + coarse[y0 + 1][:, x0 + 1] * fy * fx
    )
    s = s + 1e-9 * rng.random(s.shape)
    n_keep = int(round(kept * h * w))
    mask = np.zeros(h * w, dtype=bool)
    if n_keep:
        mask[np.argsort(s.ravel())[::-1][:n_keep]] = True
    return mask.reshape(h, w)


@st.composite
def image_and_mask(draw, max_side: int = 12, channels=(1, 3)):
    c = draw(st.sampled_from(channels))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["empty", "full", "random", "blob", "single"]))
    if kind == "empty":
        mask = np.zeros((h, w), dtype=bool)
    elif kind == "full":
        mask = np.ones((h, w), dtype=bool)
    elif kind == "single":
        mask = np.zeros((h, w), dtype=bool)
        mask[rng.integers(h), rng.integers(w)] = True
    elif kind == "random":
        mask = rng.random((h, w)) < draw(st.floats(0, 1))
    else:
        mask = blob_mask(rng, h, w, draw(st.floats(0, 1)))
    if draw(st.booleans()):
        image = rng.integers(0, 256, size=(c, h, w), dtype=np.uint8)
    else:
        image = smooth_image(rng, (c, h, w))
    return image, mask


# ------------------------------------------------------------------------------------------
# COO


@FAST
@given(image_and_mask())
def test_coo_round_trip_exact(im):
    image, mask = im
    rows, cols, values = coo(image, mask)
    k = int(mask.sum())
    assert rows.dtype == np.int16 and cols.dtype == np.int16 and values.dtype == np.uint8
    assert rows.shape == (k,) and cols.shape == (k,) and values.shape == (k, image.shape[0])
    flat = rows.astype(int) * image.shape[2] + cols
    assert np.all(np.diff(flat) > 0)  # row-major order
    out, out_mask = coo_inverse(rows, cols, values, image.shape)
    assert out.dtype == np.uint8 and out_mask.dtype == bool
    np.testing.assert_array_equal(out_mask, mask)
    np.testing.assert_array_equal(out, image * mask)


def test_coo_nbytes_and_dense_break_even():
    assert coo_nbytes(0, 3) == 2
    assert coo_nbytes(10, 3) == 72
    hw = 32 * 32
    dense = 3 * hw
    # per-pixel COO of RGB exceeds the dense image once more than 3/7 of the pixels are kept
    for k in range(0, hw + 1, 7):
        assert (coo_nbytes(k, 3) > dense) == (k > 3 / 7 * hw - 2 / 7)
    assert coo_nbytes(int(0.42 * hw), 3) < dense < coo_nbytes(int(0.44 * hw), 3)


def test_coo_inverse_rejects_bad_input():
    shape = (3, 4, 4)
    v = np.zeros((2, 3), np.uint8)
    with pytest.raises(MemoryFormatError):
        coo_inverse(np.array([0, 4], np.int16), np.array([0, 0], np.int16), v, shape)
    with pytest.raises(MemoryFormatError):
        coo_inverse(np.array([1, 1], np.int16), np.array([2, 2], np.int16), v, shape)
    with pytest.raises(MemoryFormatError):
        coo_inverse(np.array([1], np.int16), np.array([2, 2], np.int16), v, shape)
    with pytest.raises(MemoryFormatError):
        coo_inverse(np.array([0, 1], np.int16), np.array([0, 0], np.int16), v[:, :2], shape)


# ------------------------------------------------------------------------------------------
# record encodings


@FAST
@given(image_and_mask(), st.sampled_from(EXACT))
def test_encode_decode_round_trip(im, encoding):
    image, mask = im
    rec = encode(image, mask, encoding)
    assert isinstance(rec, bytes)
    out, out_mask = decode(rec, image.shape, encoding)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert out_mask.shape == mask.shape and out_mask.dtype == bool
    if encoding == "raw":
        assert len(rec) == image.size
        np.testing.assert_array_equal(out, image)
        assert out_mask.all()
    else:
        np.testing.assert_array_equal(out_mask, mask)
        np.testing.assert_array_equal(out, image * mask)
        assert record_kept_count(rec, image.shape, encoding) == mask.sum()
    if encoding == "coo":
        assert len(rec) == coo_nbytes(int(mask.sum()), image.shape[0])


@pytest.mark.parametrize("shape", [(3, 7, 5), (3, 84, 84), (1, 1, 1), (3, 32, 32), (4, 9, 13)])
@pytest.mark.parametrize("kind", ["empty", "full", "half", "blob"])
def test_round_trip_odd_sizes(shape, kind):
    rng = np.random.default_rng(sum(shape))
    c, h, w = shape
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    mask = {
        "empty": np.zeros((h, w), bool),
        "full": np.ones((h, w), bool),
        "half": rng.random((h, w)) < 0.5,
        "blob": blob_mask(rng, h, w, 0.3),
    }[kind]
    for encoding in EXACT:
        rec = encode(image, mask, encoding)
        out, out_mask = decode(rec, shape, encoding)
        expected_mask = np.ones_like(mask) if encoding == "raw" else mask
        np.testing.assert_array_equal(out_mask, expected_mask)
        np.testing.assert_array_equal(out, image * expected_mask)
    sparse = encode(image, mask, "sparse")
    assert len(sparse) <= coo_nbytes(int(mask.sum()), c) - 1


@settings(max_examples=150, deadline=None)
@given(image_and_mask(max_side=20, channels=(1, 2, 3, 4)))
@example((np.zeros((3, 5, 7), np.uint8), np.zeros((5, 7), bool)))
@example((np.full((3, 5, 7), 255, np.uint8), np.ones((5, 7), bool)))
def test_sparse_never_larger_than_coo_minus_one(im):
    image, mask = im
    k = int(mask.sum())
    rec = encode(image, mask, "sparse")
    assert len(rec) <= coo_nbytes(k, image.shape[0]) - 1


@FAST
@given(image_and_mask(max_side=16), st.sampled_from(EXACT))
@example((np.full((3, 8, 8), 255, np.uint8), np.ones((8, 8), bool)), "sparse")
@example((np.full((3, 32, 32), 255, np.uint8), np.ones((32, 32), bool)), "sparse")
@example((np.full((3, 2, 4), 128, np.uint8), np.eye(1, 8, dtype=bool).reshape(2, 4)), "sparse")
def test_min_record_nbytes_is_a_lower_bound(im, encoding):
    image, mask = im
    k = int(mask.sum()) if encoding != "raw" else image.shape[1] * image.shape[2]
    for k_min in {0, min(1, k), k}:
        assert len(encode(image, mask, encoding)) >= min_record_nbytes(image.shape, encoding, k_min)
    assert min_record_nbytes((3, 32, 32), "sparse", 0) == 1
    assert min_record_nbytes((3, 32, 32), "sparse", 1) == 7  # header + smallest zstd frame
    assert min_record_nbytes((3, 32, 32), "coo", 1) == 9
    assert min_record_nbytes((3, 32, 32), "raw") == 3072


def test_mask_none_keeps_everything():
    image = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    for encoding in EXACT:
        out, m = decode(encode(image, None, encoding), image.shape, encoding)
        assert m.all()
        np.testing.assert_array_equal(out, image)


def test_raw_record_is_the_image_and_budget_holds_exactly_n():
    rng = np.random.default_rng(1)
    shape = (3, 32, 32)
    budget = budget_bytes(10, shape)
    assert budget == 10 * 3 * 32 * 32
    fifo = FifoMemory(budget)
    for i in range(25):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        rec = encode(img, blob_mask(rng, 32, 32, 0.3), "raw")
        assert rec == img.tobytes() and len(rec) == 3 * 32 * 32
        fifo.add(rec, i % 2, i)
    assert len(fifo) == 10 and fifo.nbytes == budget
    np.testing.assert_array_equal(fifo.indices, np.arange(15, 25))


def test_sparse_beats_coo_on_smooth_blob():
    rng = np.random.default_rng(0)
    sparse_total = coo_total = 0
    for _ in range(20):
        image = smooth_image(rng)
        mask = blob_mask(rng, 32, 32, 0.25)
        sparse_total += len(encode(image, mask, "sparse"))
        coo_total += len(encode(image, mask, "coo"))
        assert len(encode(image, mask, "sparse")) * 2 <= len(encode(image, mask, "coo"))
    assert sparse_total * 2 <= coo_total


def test_bad_inputs_raise():
    img = np.zeros((3, 4, 4), np.uint8)
    with pytest.raises(MemoryFormatError, match="image"):
        encode(img.astype(np.float32), None)
    with pytest.raises(MemoryFormatError, match="image"):
        encode(img[0], None)
    with pytest.raises(MemoryFormatError, match="mask"):
        encode(img, np.ones((4, 4), np.uint8))
    with pytest.raises(MemoryFormatError, match="mask"):
        encode(img, np.ones((4, 5), bool))
    with pytest.raises(MemoryFormatError, match="codec: expected one of"):
        encode(img, None, "png")
    with pytest.raises(MemoryFormatError, match="shape"):
        decode(b"\x10", (3, 4), "sparse")
    with pytest.raises(MemoryFormatError, match="images"):
        encode_batch(img, None)
    recs = encode_batch(np.stack([img, img + 1]), np.ones((2, 4, 4), bool), "coo")
    assert len(recs) == 2


def test_malformed_records_raise():
    rng = np.random.default_rng(3)
    shape = (3, 8, 8)
    image = smooth_image(rng, shape)
    mask = blob_mask(rng, 8, 8, 0.4)
    with pytest.raises(MemoryFormatError, match="raw"):
        decode(b"\x00" * 191, shape, "raw")
    with pytest.raises(MemoryFormatError, match="coo"):
        decode(encode(image, mask, "coo")[:-1], shape, "coo")
    with pytest.raises(MemoryFormatError):
        decode(b"", shape, "sparse")
    with pytest.raises(MemoryFormatError, match="header"):
        decode(b"\x27" + b"\x00" * 20, shape, "sparse")
    with pytest.raises(MemoryFormatError, match="header"):
        decode(b"\x00" + b"\x00" * 8, shape, "sparse")  # version 0
    # bitmask layout whose popcount disagrees with the number of values
    packed = np.packbits(mask.ravel()).tobytes()
    good = b"\x10" + packed + image[:, mask].tobytes()
    decode(good, shape, "sparse")
    with pytest.raises(MemoryFormatError, match="values"):
        decode(good[:-1], shape, "sparse")
    with pytest.raises(MemoryFormatError, match="values"):
        decode(good + b"\x00", shape, "sparse")
    # compressed layout with a corrupt payload
    from numcodecs import Zstd

    frame = Zstd(level=3).encode(packed + image[:, mask].tobytes())[4:]
    decode(b"\x11" + frame, shape, "sparse")
    with pytest.raises(MemoryFormatError):
        decode(b"\x11" + frame[:-3], shape, "sparse")
    with pytest.raises(MemoryFormatError):
        decode(b"\x11" + frame[:5] + bytes(b ^ 0xFF for b in frame[5:]), shape, "sparse")
    # a zstd header claiming an enormous content size is refused before decompression
    huge = bytes([0xE0]) + (1 << 40).to_bytes(8, "little") + b"\x00" * 4
    with pytest.raises(MemoryFormatError, match="zstd"):
        decode(b"\x11" + huge, shape, "sparse")
    # COO layout: length not a multiple of 4 + C, out-of-range coordinate
    with pytest.raises(MemoryFormatError):
        decode(b"\x12" + b"\x00" * 8, shape, "sparse")
    bad = np.array([9], "<i2").tobytes() + np.array([0], "<i2").tobytes() + b"abc"
    with pytest.raises(MemoryFormatError, match="range"):
        decode(b"\x12" + bad, shape, "sparse")


def _mutations(rec: bytes, data) -> bytes:
    op = data.draw(st.sampled_from(["flip", "truncate", "extend", "header"]))
    if op == "flip" and rec:
        i = data.draw(st.integers(0, len(rec) - 1))
        return rec[:i] + bytes([rec[i] ^ data.draw(st.integers(1, 255))]) + rec[i + 1 :]
    if op == "truncate":
        return rec[: data.draw(st.integers(0, max(0, len(rec) - 1)))]
    if op == "extend":
        return rec + data.draw(st.binary(min_size=1, max_size=8))
    return bytes([data.draw(st.integers(0, 255))]) + rec[1:]


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.tuples(st.integers(0x10, 0x13), st.binary(max_size=200)).map(lambda t: bytes([t[0]]) + t[1]),
    ),
    st.sampled_from(EXACT),
    st.data(),
)
def test_random_bytes_never_crash(rec, encoding, data):
    shape = (3, 4, 5)
    if data.draw(st.booleans()):  # mutate a valid record to reach deeper code paths
        rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
        if data.draw(st.booleans()):
            img = smooth_image(rng, shape)
        else:
            img = rng.integers(0, 256, shape, dtype=np.uint8)
        rec = _mutations(encode(img, rng.random((4, 5)) < rng.random(), encoding), data)
    try:
        image, mask = decode(rec, shape, encoding)
    except MemoryFormatError:
        return
    assert image.shape == shape and image.dtype == np.uint8
    assert mask.shape == (4, 5) and mask.dtype == bool
    assert not image[:, ~mask].any()


# ------------------------------------------------------------------------------------------
# FIFO


def _brute_force_suffix(sizes: list[int], budget: int) -> list[int]:
    accepted = [i for i, s in enumerate(sizes) if s <= budget]
    for start in range(len(accepted) + 1):
        if sum(sizes[i] for i in accepted[start:]) <= budget:
            return accepted[start:]
    return []  # pragma: no cover


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 120), max_size=60), st.integers(0, 300))
def test_fifo_keeps_maximal_suffix(sizes, budget):
    fifo = FifoMemory(budget)
    for i, s in enumerate(sizes):
        fifo.add(bytes([i % 256]) * s, label=i % 3, index=i)
        assert fifo.nbytes <= budget
        assert fifo.nbytes == sum(map(len, fifo.records))
    expected = _brute_force_suffix(sizes, budget)
    assert fifo.indices.tolist() == expected
    assert fifo.labels.tolist() == [i % 3 for i in expected]
    assert fifo.n_refused == sum(s > budget for s in sizes)


def test_fifo_refuses_oversized_record(caplog):
    fifo = FifoMemory(10)
    fifo.add(b"a" * 6, 0, 0)
    with caplog.at_level(logging.WARNING, logger="samc.memory"):
        assert fifo.add(b"b" * 11, 1, 1) is False
    assert "exceeds" in caplog.text
    assert fifo.records == [b"a" * 6] and fifo.nbytes == 6
    assert fifo.add(b"c" * 5, 1, 2) is True
    assert fifo.indices.tolist() == [2]


def test_higher_kept_fraction_stores_fewer_images():
    rng = np.random.default_rng(7)
    shape = (3, 16, 16)
    images = [smooth_image(rng, shape) for _ in range(120)]
    counts = {}
    for kept in (0.1, 0.25, 0.5, 0.75, 1.0):
        mrng = np.random.default_rng(11)
        fifo = FifoMemory(budget_bytes(10, shape))
        for i, img in enumerate(images):
            fifo.add(encode(img, blob_mask(mrng, 16, 16, kept)), 0, i, kept=kept)
        assert fifo.nbytes <= fifo.budget
        counts[kept] = len(fifo)
    assert counts[0.1] < len(images)  # the stream filled the budget even at the sparsest mask
    seq = [counts[k] for k in sorted(counts)]
    assert all(a > b for a, b in zip(seq, seq[1:])), counts
    assert counts[1.0] >= 10  # never worse than raw images


def test_fifo_arrays_round_trip():
    fifo = FifoMemory(100)
    for i, s in enumerate([10, 0, 30, 25, 40, 5]):
        fifo.add(bytes(range(s)), i % 2, 100 + i, kept=None if i == 3 else i / 10)
    arrays = fifo.to_arrays()
    assert arrays["records"].dtype == np.uint8 and arrays["offsets"].dtype == np.int64
    back = FifoMemory.from_arrays(100, **arrays)
    assert back.records == fifo.records
    np.testing.assert_array_equal(back.labels, fifo.labels)
    np.testing.assert_array_equal(back.indices, fifo.indices)
    np.testing.assert_array_equal(back.kept, fifo.kept)  # NaN == NaN in assert_array_equal
    bad = dict(arrays, offsets=arrays["offsets"][::-1].copy())
    with pytest.raises(MemoryFormatError, match="offsets"):
        FifoMemory.from_arrays(100, **bad)
    with pytest.raises(MemoryFormatError, match="budget"):
        FifoMemory.from_arrays(10, **arrays)


# ------------------------------------------------------------------------------------------
# TaskMemory


def make_task_memory(
    n: int = 30, encoding: str = "sparse", seed: int = 0, mu: float | None = 0.6
) -> TaskMemory:
    rng = np.random.default_rng(seed)
    shape = (3, 16, 16)
    fifo = FifoMemory(budget_bytes(10, shape))
    for i in range(n):
        img = smooth_image(rng, shape) if i % 2 else rng.integers(0, 256, shape, dtype=np.uint8)
        fifo.add(encode(img, blob_mask(rng, 16, 16, rng.uniform(0.1, 0.6)), encoding), i % 2, i)
    return fifo.to_task_memory(task=1, classes=[2, 3], image_shape=shape, encoding=encoding, mu=mu)


def test_task_memory_basics_and_describe():
    mem = make_task_memory()
    assert len(mem) > 10 and mem.nbytes <= mem.budget
    images, masks = mem.decode_all()
    assert images.shape == (len(mem), 3, 16, 16) and images.dtype == np.uint8
    assert masks.shape == (len(mem), 16, 16) and masks.dtype == bool
    assert 0.1 <= mem.kept_fraction() <= 0.6
    info = describe(mem)
    json.dumps(info)
    assert info["n_images"] == len(mem) and info["nbytes"] == mem.nbytes
    assert info["dense_nbytes"] == len(mem) * 3 * 16 * 16
    assert info["coo_nbytes"] == sum(coo_nbytes(int(m.sum()), 3) for m in masks)
    assert info["ratio_vs_coo"] < 1 and info["ratio_vs_budget"] <= 1
    assert info["images_vs_raw"] == pytest.approx(len(mem) / 10)
    empty = TaskMemory(task=0, classes=[0, 1], image_shape=(3, 4, 4), encoding="raw", mu=None, budget=0)
    assert empty.decode_all()[0].shape == (0, 3, 4, 4)
    assert describe(empty)["kept_fraction"] is None
    with pytest.raises(MemoryFormatError, match="labels"):
        TaskMemory(task=0, classes=[0], image_shape=(3, 4, 4), encoding="raw", mu=None, budget=0,
                   records=[b"x"], labels=np.zeros(2, np.int64), indices=np.zeros(1, np.int64))


def test_task_memory_state_weights_only():
    mem = make_task_memory()
    buf = io.BytesIO()
    torch.save({"memory": mem.to_state(), "other": torch.zeros(2)}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["memory"]
    back = TaskMemory.from_state(state)
    assert back.records == mem.records
    np.testing.assert_array_equal(back.labels, mem.labels)
    np.testing.assert_array_equal(back.indices, mem.indices)
    assert (back.task, back.classes, back.image_shape, back.encoding, back.mu, back.budget) == (
        mem.task, mem.classes, mem.image_shape, mem.encoding, mem.mu, mem.budget)
    state["records"][0] ^= 1
    with pytest.raises(MemoryFormatError, match="sha256"):
        TaskMemory.from_state(state)


# ------------------------------------------------------------------------------------------
# Zarr snapshots


@pytest.mark.parametrize("encoding", EXACT)
def test_zarr_round_trip_exact(tmp_path, encoding):
    mem = make_task_memory(encoding=encoding, mu=None if encoding == "raw" else 0.6)
    path = save_snapshot(mem, tmp_path / "task_1" / "memory.zarr")
    back = load_snapshot(path, expect={"task": 1, "image_shape": (3, 16, 16), "encoding": encoding})
    assert back.records == mem.records
    np.testing.assert_array_equal(back.labels, mem.labels)
    np.testing.assert_array_equal(back.indices, mem.indices)
    assert back.labels.dtype == np.int64 and back.indices.dtype == np.int64
    assert (back.task, back.classes, back.image_shape, back.mu, back.budget) == (
        1, [2, 3], (3, 16, 16), mem.mu, mem.budget)
    assert sorted(p.name for p in path.parent.iterdir()) == ["memory.zarr"]


def test_zarr_empty_memory(tmp_path):
    empty = TaskMemory(task=3, classes=[6, 7], image_shape=(3, 8, 8), encoding="sparse", mu=0.7, budget=100)
    back = load_snapshot(save_snapshot(empty, tmp_path / "m.zarr"), expect={"mu": 0.7})
    assert len(back) == 0 and back.nbytes == 0


@pytest.mark.parametrize("exchange", [True, False])
def test_zarr_atomic_overwrite_and_stale_temp(tmp_path, monkeypatch, exchange):
    if not exchange:  # platforms without renameat2(RENAME_EXCHANGE): move-aside fallback
        monkeypatch.setattr(samc_io, "_rename_exchange", lambda a, b: False)
    path = tmp_path / "memory.zarr"
    old = make_task_memory(seed=1)
    new = make_task_memory(seed=2, n=12)
    save_snapshot(old, path)
    # leftovers of crashed writers: one from another process, one from this pid
    stale_other = tmp_path / ".memory.zarr.tmp-999999"
    stale_other.mkdir()
    (stale_other / "junk").write_bytes(b"half-written")
    stale_mine = tmp_path / f".memory.zarr.tmp-{os.getpid()}"
    stale_mine.mkdir()
    (stale_mine / "zarr.json").write_text("{not json")
    save_snapshot(new, path)
    back = load_snapshot(path)
    assert back.records == new.records
    assert not stale_mine.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".memory.zarr.tmp-999999", "memory.zarr"]
    # refuses to replace something that is not a Zarr store
    other = tmp_path / "not_a_store"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        save_snapshot(new, other)
    assert (other / "precious.txt").read_text() == "keep me"


def _chunk_files(path: Path, array: str) -> list[Path]:
    return sorted(p for p in (path / array).rglob("*") if p.is_file() and p.name != "zarr.json")


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete_offsets", "mu", "format", "attr_sha"])
def test_corrupted_store_refused(tmp_path, damage):
    mem = make_task_memory()
    path = save_snapshot(mem, tmp_path / "memory.zarr")
    expect = {"mu": 0.6, "task": 1}
    if damage in ("flip", "truncate"):
        chunk = _chunk_files(path, "records")[0]
        raw = bytearray(chunk.read_bytes())
        if damage == "flip":
            raw[len(raw) // 2] ^= 0x5A
        else:
            raw = raw[: len(raw) // 2]
        chunk.write_bytes(bytes(raw))
    elif damage == "delete_offsets":
        import shutil

        shutil.rmtree(path / "offsets")
    elif damage == "mu":
        expect = {"mu": 0.7}
    else:
        meta = json.loads((path / "zarr.json").read_text())
        if damage == "format":
            meta["attributes"]["format_version"] = 2
        else:
            meta["attributes"]["sha256"] = "0" * 64
        (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(MemoryFormatError) as info:
        load_snapshot(path, expect=expect)
    assert str(path) in str(info.value)
    if damage == "mu":
        assert "mu" in str(info.value)


def test_load_missing_or_unknown_expect(tmp_path):
    with pytest.raises(MemoryFormatError, match="no snapshot"):
        load_snapshot(tmp_path / "nope.zarr")
    path = save_snapshot(make_task_memory(n=5), tmp_path / "m.zarr")
    with pytest.raises(MemoryFormatError, match="image_shape"):
        load_snapshot(path, expect={"image_shape": (3, 32, 32)})
    with pytest.raises(MemoryFormatError, match="colour"):
        load_snapshot(path, expect={"colour": "red"})
    load_snapshot(path, expect={"classes": (2, 3), "budget": 7680, "mu": 0.6, "encoding": "sparse"})
