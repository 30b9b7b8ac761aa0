"""Every memory codec (samc.memory.codecs): round trip, size bounds, fuzzed records, specs, and
the saliency-weighted codecs doing what they claim (issue 17)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samc.memory import (CODECS, FifoMemory, MemoryFormatError, TaskMemory, budget_bytes, get_codec,
                         load_snapshot, parse_spec, save_snapshot)
from samc.memory.codecs.salient_blur import blur_background
from tests.test_memory import blob_mask, image_and_mask, smooth_image

def codec_for(name: str, channels: int = 3):
    """``get_codec(name)``; a learned codec attached to a seeded, untrained autoencoder of its own."""
    codec = get_codec(name)
    if codec.learned:
        import torch

        from samc.models import LatentAE

        torch.manual_seed(0)
        codec.attach(LatentAE(channels, int(codec.values["latent"])))
    return codec


FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALL = tuple(CODECS)
#: codecs whose decode is exact on the pixels they report as known
EXACT_ON_KNOWN = ("raw", "lossless", "coo", "sparse", "salient_lowres")


def textured(rng: np.random.Generator, shape=(3, 32, 32)) -> np.ndarray:
    """A smooth image with mild texture (compresses like a natural image, unlike pure noise)."""
    base = smooth_image(rng, shape).astype(np.int16)
    return np.clip(base + rng.integers(-12, 13, size=shape), 0, 255).astype(np.uint8)


def mse(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    d = ((a.astype(np.float64) - b.astype(np.float64)) / 255.0) ** 2
    return float(d.mean() if where is None else d[:, where].mean())


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 9, 13), (3, 1, 1), (3, 84, 84)])
def test_round_trip(name, shape):
    rng = np.random.default_rng(sum(shape))
    codec = codec_for(name, shape[0])
    image = textured(rng, shape)
    mask = blob_mask(rng, shape[1], shape[2], 0.4)
    out, known = codec.decode(codec.encode(image, mask), shape)
    assert out.shape == shape and out.dtype == np.uint8 and known.shape == shape[1:] and known.dtype == bool
    if codec.uses_saliency and name != "salient_blur":
        np.testing.assert_array_equal(known, mask)       # the salient pixels are the ones kept exactly
    else:
        assert known.all()
    if name in EXACT_ON_KNOWN:
        np.testing.assert_array_equal(out[:, known], image[:, known])
    if codec.lossless:
        np.testing.assert_array_equal(out, image)
    if not codec.uses_saliency and not codec.lossless and not codec.learned and shape[1] > 8:
        assert mse(out, image) < 0.003                   # lossy, at its default quality: close
    # (a learned codec's quality is its training's: tests/test_eec.py)


@pytest.mark.parametrize("name", ALL)
def test_min_nbytes_is_a_lower_bound_and_records_fit_a_budget(name):
    rng = np.random.default_rng(5)
    codec = codec_for(name)
    shape = (3, 32, 32)
    fifo = FifoMemory(budget_bytes(10, shape))
    for i in range(60):
        image = textured(rng, shape) if i % 3 else rng.integers(0, 256, shape, dtype=np.uint8)
        mask = blob_mask(rng, 32, 32, rng.uniform(0.05, 0.9))
        record = codec.encode(image, mask)
        assert len(record) >= codec.min_nbytes(shape, 1 if codec.uses_saliency else 0)
        fifo.add(record, i % 2, i)
        assert fifo.nbytes <= fifo.budget
    assert len(fifo) >= (10 if name != "coo" else 1)


@FAST
@given(image_and_mask(max_side=12), st.sampled_from(ALL))
def test_min_nbytes_bounds_every_image(im, name):
    image, mask = im
    codec = codec_for(name, image.shape[0])
    k = int(mask.sum()) if codec.uses_saliency else 0
    assert len(codec.encode(image, mask)) >= codec.min_nbytes(image.shape, k)


def _decodes_or_refuses(codec, record: bytes, shape) -> None:
    try:
        out, known = codec.decode(record, shape)
    except MemoryFormatError:
        return
    assert out.shape == shape and out.dtype == np.uint8 and known.shape == shape[1:]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.sampled_from(ALL))
def test_random_bytes_are_refused_or_decode_to_an_image(record, name):
    _decodes_or_refuses(codec_for(name), record, (3, 8, 8))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ALL), st.integers(0, 2**32 - 1), st.sampled_from(["flip", "truncate", "append", "zero"]))
def test_damaged_records_are_refused_or_decode_to_an_image(name, seed, damage):
    rng = np.random.default_rng(seed)
    codec = codec_for(name)
    shape = (3, 16, 16)
    record = bytearray(codec.encode(textured(rng, shape), blob_mask(rng, 16, 16, 0.4)))
    pos = int(rng.integers(0, len(record)))
    if damage == "flip":
        record[pos] ^= 1 << int(rng.integers(0, 8))
    elif damage == "truncate":
        record = record[:pos]
    elif damage == "append":
        record += bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
    else:
        record[pos:] = bytes(len(record) - pos)
    _decodes_or_refuses(codec, bytes(record), shape)


def test_specs_parse_check_and_round_trip():
    assert parse_spec("jxl:distance=2,effort=5") == ("jxl", {"distance": 2, "effort": 5})
    assert parse_spec("dense") == ("raw", {})
    codec = get_codec("salient_blur:sigma=3")
    assert codec.values == {"sigma": 3.0, "distance": 1.0} and codec.spec == "salient_blur:sigma=3"
    assert get_codec(codec.spec) == codec and get_codec("webp").spec == "webp"
    for bad, match in [("png", "expected one of"), ("jxl:distance=0", "outside"), ("webp:q=3", "unknown parameter"),
                       ("webp:quality=2.5", "not a int"), ("jxl:distance", "key=value"), ("", "expected a name")]:
        with pytest.raises(MemoryFormatError, match=match):
            get_codec(bad)


def test_snapshots_record_the_codec_and_refuse_a_changed_one(tmp_path):
    rng = np.random.default_rng(2)
    codec = get_codec("salient_lowres:factor=2,distance=2")
    images = [textured(rng) for _ in range(4)]
    masks = [blob_mask(rng, 32, 32, 0.3) for _ in range(4)]
    mem = TaskMemory(task=1, classes=[2, 3], image_shape=(3, 32, 32), encoding=codec.name, mu=0.6,
                     budget=budget_bytes(10, (3, 32, 32)), records=[codec.encode(x, m) for x, m in zip(images, masks)],
                     labels=np.array([0, 1, 0, 1]), indices=np.arange(4), codec_params=codec.values)
    assert mem.codec_params == {"factor": 2, "distance": 2.0}     # only what differs from the defaults
    path = save_snapshot(mem, tmp_path / "m.zarr")
    back = load_snapshot(path, expect={"encoding": "salient_lowres"})
    assert back.codec == codec and back.records == mem.records
    np.testing.assert_array_equal(back.decode_all()[0], mem.decode_all()[0])
    state = mem.to_state()
    assert TaskMemory.from_state(state).codec == codec
    state["codec_params"] = {"factor": 4}                          # decoding with other parameters: refused
    with pytest.raises(MemoryFormatError, match="digest"):
        TaskMemory.from_state(state)


def test_salient_lowres_background_beats_completion_from_nothing():
    rng = np.random.default_rng(7)
    codec = get_codec("salient_lowres")
    for _ in range(5):
        image, mask = textured(rng), blob_mask(rng, 32, 32, 0.3)
        out, known = codec.decode(codec.encode(image, mask), image.shape)
        background = ~known
        # the thumbnail's estimate of the dropped pixels is far closer than the zeros sparse leaves
        assert mse(out, image, background) < 0.25 * mse(np.zeros_like(image), image, background)
        assert len(codec.encode(image, mask)) < len(get_codec("sparse").encode(image, mask)) + 200


def test_salient_blur_spends_fewer_bytes_on_the_background():
    rng = np.random.default_rng(11)
    blur, plain = get_codec("salient_blur:sigma=3"), get_codec("jxl")
    blurred_bytes = plain_bytes = 0
    for _ in range(8):
        image, mask = textured(rng), blob_mask(rng, 32, 32, 0.3)
        b, p = blur.encode(image, mask), plain.encode(image, mask)
        blurred_bytes, plain_bytes = blurred_bytes + len(b), plain_bytes + len(p)
        out = blur.decode(b, image.shape)[0]
        assert mse(out, image, mask) < 0.003                      # the salient region stays close
        # what was coded is the image with its background blurred, and only the background differs
        pre = blur_background(image, mask, 3.0)
        np.testing.assert_array_equal(pre[:, mask], image[:, mask])
    assert blurred_bytes < 0.9 * plain_bytes, (blurred_bytes, plain_bytes)
