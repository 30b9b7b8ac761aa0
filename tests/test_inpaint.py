"""Tests for samc.inpaint (§4.2: rule-based fills, A_ξ completion, Eq. 4.10 fine-tuning).

Data are made here, independent of the rest of the package: 32x32 RGB "shapes"-like images (a
filled polygon or circle on a smooth textured background) with masks that keep a dilated blob
around the object (~25-35 % kept), a stand-in for Grad-CAM masks at μ = 0.6.
"""
from __future__ import annotations

import copy
import logging

import cv2
import numpy as np
import pytest
import torch

from samc.inpaint import (
    COMPLETION_MODES,
    RULE_METHODS,
    complete,
    finetune_ae,
    masked_mse,
    rule_fill,
)
from samc.models import InpaintAE

log = logging.getLogger(__name__)

N_TRAIN, N_TEST = 150, 50


def make_shapes(n: int, seed: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 (3, size, size) images of one shape on a gradient + sinusoid background, and keep-masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    images = np.empty((n, 3, size, size), np.uint8)
    masks = np.empty((n, size, size), bool)
    kernel = np.ones((3, 3), np.uint8)
    for i in range(n):
        c0, c1 = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
        angle = rng.uniform(0, 2 * np.pi)
        t = ((np.cos(angle) * xx + np.sin(angle) * yy + 1.5) / 3.0)[..., None]
        background = c0 * (1 - t) + c1 * t
        freq, phase = rng.uniform(1.0, 3.0, 2), rng.uniform(0, 2 * np.pi, 2)
        texture = 12 * np.sin(2 * np.pi * (freq[0] * xx + phase[0])) * np.cos(2 * np.pi * (freq[1] * yy + phase[1]))
        background = background + texture[..., None] + rng.normal(0, 2, background.shape)
        img = np.ascontiguousarray(np.clip(background, 0, 255).astype(np.uint8))
        obj = np.zeros((size, size), np.uint8)
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        cx, cy = (int(v) for v in rng.integers(11, size - 11, 2))
        radius = int(rng.integers(6, 10))
        if rng.random() < 0.4:
            cv2.circle(img, (cx, cy), radius, color, -1)
            cv2.circle(obj, (cx, cy), radius, 1, -1)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
            pts = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1).round().astype(np.int32)
            cv2.fillPoly(img, [pts], color)
            cv2.fillPoly(obj, [pts], 1)
        while obj.mean() < 0.25:  # grow the salient blob to >= 25 % kept
            obj = cv2.dilate(obj, kernel)
        images[i] = img.transpose(2, 0, 1)
        masks[i] = obj.astype(bool)
    return images, masks


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    images, masks = make_shapes(N_TRAIN + N_TEST, seed=0)
    assert 0.25 <= masks.mean() <= 0.40
    return images, masks


@pytest.fixture(scope="module")
def test_split(data: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out ground truth, stored memory images x' (zeros at dropped pixels) and masks."""
    images, masks = data
    gt, m = images[N_TRAIN:], masks[N_TRAIN:]
    return gt, np.where(m[:, None], gt, 0).astype(np.uint8), m


@pytest.fixture(scope="module")
def finetuned(data: tuple[np.ndarray, np.ndarray]) -> tuple[InpaintAE, dict]:
    images, masks = data
    torch.manual_seed(0)
    ae = InpaintAE(3)
    info = finetune_ae(ae, images[:N_TRAIN], masks[:N_TRAIN], generator=torch.Generator().manual_seed(0))
    return ae, info


def _dropped(masks: np.ndarray, channels: int = 3) -> np.ndarray:
    return np.broadcast_to(~masks[:, None], (masks.shape[0], channels, *masks.shape[1:]))


# ----------------------------------------------------------------------------- rule_fill


@pytest.mark.parametrize("method", RULE_METHODS)
def test_rule_fill_keeps_kept_and_fills_dropped(method: str, test_split) -> None:
    gt, stored, masks = test_split
    out = rule_fill(stored, masks, method)
    assert out.dtype == np.uint8 and out.shape == stored.shape
    kept = ~_dropped(masks)
    np.testing.assert_array_equal(out[kept], gt[kept])
    if method == "zero":
        assert (out[~kept] == 0).all()
    else:
        assert out[~kept].mean() > 20  # backgrounds are 30..225: something was filled in
    if method == "mean":
        for i in range(3):
            for c in range(3):
                expected = np.rint(gt[i, c][masks[i]].astype(np.float64).mean())
                assert (out[i, c][~masks[i]] == expected).all()


def test_rule_fill_ignores_values_at_dropped_pixels(test_split) -> None:
    gt, stored, masks = test_split
    np.testing.assert_array_equal(rule_fill(gt, masks, "telea"), rule_fill(stored, masks, "telea"))


def test_cv2_rules_beat_zero_and_mean(test_split) -> None:
    gt, stored, masks = test_split
    mse = {m: masked_mse(rule_fill(stored, masks, m) / 255.0, gt, masks) for m in RULE_METHODS}
    log.info("dropped-pixel MSE of rule fills: %s", mse)
    assert mse["telea"] < mse["mean"] < mse["zero"]
    assert mse["ns"] < mse["mean"] < mse["zero"]


@pytest.mark.parametrize("method", RULE_METHODS)
def test_rule_fill_all_dropped_and_all_kept(method: str, test_split) -> None:
    gt, _, _ = test_split
    gt = gt[:3]
    none_kept = np.zeros((3, 32, 32), bool)
    out = rule_fill(gt, none_kept, method)
    assert out.shape == gt.shape and (out == 0).all()  # mean of nothing kept = 0
    all_kept = np.ones((3, 32, 32), bool)
    np.testing.assert_array_equal(rule_fill(gt, all_kept, method), gt)


def test_rule_fill_one_channel_and_other_channel_counts() -> None:
    rng = np.random.default_rng(1)
    masks = rng.random((2, 16, 16)) < 0.5
    for c in (1, 2, 4):
        imgs = rng.integers(0, 256, (2, c, 16, 16), dtype=np.uint8)
        out = rule_fill(imgs, masks, "ns")
        assert out.shape == imgs.shape
        np.testing.assert_array_equal(out[_dropped(masks, c) == 0], imgs[_dropped(masks, c) == 0])


def test_rule_fill_rejects_bad_input() -> None:
    imgs = np.zeros((1, 3, 8, 8), np.uint8)
    masks = np.ones((1, 8, 8), bool)
    with pytest.raises(ValueError, match="telea"):
        rule_fill(imgs, masks, "bilinear")
    with pytest.raises(ValueError):
        rule_fill(imgs.astype(np.float32), masks, "zero")
    with pytest.raises(ValueError):
        rule_fill(imgs, masks[:, :4], "zero")


# ----------------------------------------------------------------------------- complete


@pytest.mark.parametrize("mode", COMPLETION_MODES)
def test_complete_modes(mode: str, test_split) -> None:
    gt, stored, masks = test_split
    torch.manual_seed(1)
    ae = InpaintAE(3)
    with torch.no_grad():  # a non-identity A_ξ, so copy-back is actually exercised
        ae.out.weight.normal_(0, 0.5)
        ae.out.bias.fill_(0.3)
    ae.train()
    out = complete(stored, masks, mode, ae=ae, batch_size=16)
    assert ae.training  # mode restored
    assert out.dtype == torch.float32 and out.shape == stored.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    kept = torch.from_numpy(~_dropped(masks).copy())
    ref = torch.from_numpy(gt).float() / 255.0
    assert torch.equal(out[kept], ref[kept])
    if mode == "zero":
        assert float(out[~kept].abs().max()) == 0.0


def test_untrained_ae_is_identity_on_rule(test_split) -> None:
    _, stored, masks = test_split
    ae = InpaintAE(3).eval()
    assert torch.equal(complete(stored, masks, "rule+ae", ae=ae), complete(stored, masks, "rule"))
    assert torch.equal(complete(stored, masks, "ae", ae=ae), complete(stored, masks, "zero"))
    assert not ae.training


def test_complete_matches_rule_fill(test_split) -> None:
    _, stored, masks = test_split
    for rule in ("mean", "ns"):
        expected = torch.from_numpy(rule_fill(stored, masks, rule)).float() / 255.0
        assert torch.equal(complete(stored, masks, "rule", rule=rule), expected)


def test_complete_rejects_bad_modes(test_split) -> None:
    _, stored, masks = test_split
    with pytest.raises(ValueError, match="rule\\+ae"):
        complete(stored, masks, "gan")
    with pytest.raises(ValueError):
        complete(stored, masks, "rule+ae")  # no autoencoder given
    with pytest.raises(ValueError):
        complete(stored, masks, "rule", rule="bilinear")


def test_complete_all_dropped_and_all_kept(test_split) -> None:
    gt, _, _ = test_split
    gt = gt[:4]
    ae = InpaintAE(3)
    for mode in COMPLETION_MODES:
        out = complete(np.zeros_like(gt), np.zeros((4, 32, 32), bool), mode, ae=ae)
        assert out.shape == gt.shape and torch.isfinite(out).all()
        out = complete(gt, np.ones((4, 32, 32), bool), mode, ae=ae)
        assert torch.equal(out, torch.from_numpy(gt).float() / 255.0)


# ----------------------------------------------------------------------------- masked_mse


def test_masked_mse_counts_dropped_pixels_only() -> None:
    gt = np.full((1, 3, 4, 4), 255, np.uint8)
    masks = np.zeros((1, 4, 4), bool)
    masks[0, :2] = True  # half kept
    comp = torch.ones(1, 3, 4, 4)
    comp[0, :, :2] = 0.0  # wrong on kept pixels: ignored
    comp[0, :, 2:] = 0.5
    assert masked_mse(comp, gt, masks) == pytest.approx(0.25)
    assert masked_mse(comp.numpy(), gt, np.ones((1, 4, 4), bool)) == 0.0


# ----------------------------------------------------------------------------- finetune_ae


def test_finetuned_rule_ae_beats_rule_on_held_out(finetuned, test_split) -> None:
    """The paper's claim (Table 2): A_ξ(R(x')) after fine-tuning completes better than R alone."""
    ae, info = finetuned
    gt, stored, masks = test_split
    assert ae.training  # a fresh module is in train mode and is left in it
    mse_rule = masked_mse(complete(stored, masks, "rule"), gt, masks)
    mse_samc = masked_mse(complete(stored, masks, "rule+ae", ae=ae), gt, masks)
    log.info("held-out dropped-pixel MSE: rule %.6f, rule+ae %.6f (%s)", mse_rule, mse_samc, info)
    assert mse_samc < mse_rule
    assert 1 <= info["steps"] <= 100
    assert info["val_mse_after"] <= info["val_mse_before"]
    assert np.isfinite(info["train_mse"])


def test_finetune_is_deterministic(data) -> None:
    images, masks = data
    torch.manual_seed(3)
    init = InpaintAE(3)
    states, infos = [], []
    for _ in range(2):
        ae = copy.deepcopy(init)
        infos.append(
            finetune_ae(
                ae, images[:60], masks[:60], steps=15, patience=15,
                generator=torch.Generator().manual_seed(7),
            )
        )
        states.append(ae.state_dict())
    assert infos[0] == infos[1]
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_finetune_early_stopping_restores_best(data) -> None:
    """With a destructive step size every step worsens the fit; the best (= initial) weights come back.

    With fewer than 5 pairs all of them are used for training and validation, so the returned
    validation MSE can be recomputed with ``complete``.
    """
    images, masks = data
    imgs, m = images[:4], masks[:4]
    ae = InpaintAE(3)
    ae.eval()
    info = finetune_ae(ae, imgs, m, steps=40, lr=1.0, patience=10, generator=torch.Generator().manual_seed(0))
    assert not ae.training  # left in the mode it was in
    assert info["val_mse_after"] <= info["val_mse_before"]
    assert info["steps"] <= 40
    stored = np.where(m[:, None], imgs, 0).astype(np.uint8)
    recomputed = masked_mse(complete(stored, m, "rule+ae", ae=ae), imgs, m)
    assert recomputed == pytest.approx(info["val_mse_after"], rel=1e-4)


def test_finetune_keeps_train_mode_and_ae_input_mode(data) -> None:
    images, masks = data
    ae = InpaintAE(3)
    ae.train()
    info = finetune_ae(
        ae, images[:20], masks[:20], input_mode="ae", steps=10, lr=1e-2, generator=torch.Generator().manual_seed(0)
    )
    assert ae.training
    # Zero-filled dropped pixels sit on the clamp's lower bound of A_ξ; they must still be learnt.
    assert info["val_mse_after"] < 0.9 * info["val_mse_before"]


def test_finetune_rejects_bad_modes(data) -> None:
    images, masks = data
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="rule\\+ae"):
        finetune_ae(InpaintAE(3), images[:4], masks[:4], input_mode="zero", generator=g)
    with pytest.raises(ValueError, match="telea"):
        finetune_ae(InpaintAE(3), images[:4], masks[:4], rule="bilinear", generator=g)


def test_finetune_tiny_and_degenerate_masks(data) -> None:
    images, _ = data
    g = torch.Generator().manual_seed(0)
    for masks in (np.zeros((3, 32, 32), bool), np.ones((3, 32, 32), bool)):
        info = finetune_ae(InpaintAE(3), images[:3], masks, steps=5, generator=g)
        assert all(np.isfinite(float(v)) for v in info.values())
