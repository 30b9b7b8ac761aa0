"""Memory completion with inpainting (§4.2, Eq. 4.5-4.7, 4.10; construction of Lemma 2's proof).

A stored memory image ``x'`` keeps only its salient pixels (``uint8 (N, C, H, W)``, zeros at the
dropped pixels, boolean masks ``(N, H, W)`` with ``True`` = kept). Before the classifier can use
it, the image is completed from coarse to fine::

    x̃ = m ⊙ x' + (1 - m) ⊙ A_ξ(R(x'))          (Eq. 4.6 + Lemma 2's copy-back)

* ``R`` is a rule-based inpainting (:func:`rule_fill`): zeros, per-channel mean, or OpenCV's
  Telea [32] / Navier-Stokes [6] methods. It has no parameters and so cannot forget.
* ``A_ξ`` is the residual inpainting autoencoder :class:`samc.models.InpaintAE` (Eq. 4.5). It is
  fine-tuned with a few early-stopped steps on the current task's (masked, ground-truth)
  pairs (:func:`finetune_ae`, Eq. 4.10 / Algorithm 1 line 15).
* Kept pixels are always copied back, so only dropped pixels are synthesised and
  ``||x - x̃||² = Σ_dropped (x_i - x̃_i)²`` (Eq. I.7).

:func:`complete` offers the completion variants of Table 2: ``"zero"``, ``"rule"``, ``"ae"``
(autoencoder on the zero-filled image) and ``"rule+ae"`` (SAMC). Completed images are
``torch.float32 (N, C, H, W)`` in ``[0, 1]`` (pixel / 255), what the classifier consumes.
"""
from __future__ import annotations

import copy
import logging
import math
import time

import cv2
import numpy as np
import torch

from samc.models import InpaintAE

log = logging.getLogger(__name__)

RULE_METHODS: tuple[str, ...] = ("zero", "mean", "telea", "ns")
COMPLETION_MODES: tuple[str, ...] = ("zero", "rule", "ae", "rule+ae")
FINETUNE_INPUT_MODES: tuple[str, ...] = ("ae", "rule+ae")

_CV2_FLAGS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}

# A_ξ returns clamp(r + Δ, 0, 1) with Δ = 0 at initialisation, and torch's clamp passes no gradient
# at its bounds: pixels with r exactly 0 or 1 (all dropped pixels of the zero-filled "ae" input,
# black/white pixels of R(x')) would never be trained. During fine-tuning only, the network input
# is therefore squeezed into [ε, 1 - ε] with ε half a grey level (below uint8 resolution).
_TRAIN_EPS = 0.5 / 255.0


def _check_inputs(images: np.ndarray, masks: np.ndarray) -> None:
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, C, H, W), got dtype {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
    if masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"masks must be (N, H, W) = {(images.shape[0], *images.shape[2:])}, got {masks.shape}")


def _masked_input(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """x' = m ⊙ x as uint8: zeros at dropped pixels (what COO⁻¹ of a memory entry returns)."""
    return np.where(masks[:, None], images, 0).astype(np.uint8, copy=False)


def _mean_fill(img: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """One (C, H, W) image with dropped pixels set to the per-channel mean of its kept pixels."""
    out = img.copy()
    if kept.any():
        means = np.rint(img[:, kept].astype(np.float64).mean(axis=1)).astype(np.uint8)
    else:
        means = np.zeros(img.shape[0], np.uint8)
    out[:, ~kept] = means[:, None]
    return out


def _cv2_fill(img: np.ndarray, kept: np.ndarray, flag: int, radius: int) -> np.ndarray:
    """One (C, H, W) image through ``cv2.inpaint`` (HWC uint8 with 1 or 3 channels, else per channel)."""
    hole = np.ascontiguousarray((~kept).astype(np.uint8))
    c = img.shape[0]
    if c in (1, 3):
        hwc = np.ascontiguousarray(img.transpose(1, 2, 0))
        filled = cv2.inpaint(hwc, hole, float(radius), flag)
        filled = filled.reshape(hwc.shape).transpose(2, 0, 1)
    else:
        filled = np.stack([cv2.inpaint(np.ascontiguousarray(ch), hole, float(radius), flag) for ch in img])
    return filled


def rule_fill(images: np.ndarray, masks: np.ndarray, method: str, radius: int = 3) -> np.ndarray:
    """Rule-based inpainting R(x') (§4.2, "Rule-based Inpainting"; the R of Eq. 4.6).

    ``images``: uint8 ``(N, C, H, W)``; values at dropped pixels are ignored. ``masks``: bool
    ``(N, H, W)``, True = kept. ``method``: ``"zero"`` (dropped = 0), ``"mean"`` (per image and
    channel mean of the kept pixels, 0 if none is kept), ``"telea"`` / ``"ns"`` (``cv2.inpaint``
    with ``INPAINT_TELEA`` / ``INPAINT_NS`` and the given ``radius``). An image with no kept
    pixel falls back to zeros (its mean fill), one with no dropped pixel is returned as is.
    Kept pixels are returned unchanged. Returns uint8 ``(N, C, H, W)``.
    """
    if method not in RULE_METHODS:
        raise ValueError(f"unknown rule-based inpainting method {method!r}; allowed: {', '.join(RULE_METHODS)}")
    images = np.asarray(images)
    masks = np.asarray(masks, dtype=bool)
    _check_inputs(images, masks)
    x = _masked_input(images, masks)
    if method == "zero":
        return x
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        kept = masks[i]
        if kept.all():
            out[i] = x[i]
        elif method == "mean" or not kept.any():
            out[i] = _mean_fill(x[i], kept)
        else:
            out[i] = _cv2_fill(x[i], kept, _CV2_FLAGS[method], radius)
    # cv2 leaves known pixels alone, but make the copy-back explicit (Lemma 2's construction).
    return np.where(masks[:, None], x, out)


def _to_float(a: np.ndarray, device: torch.device | str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=torch.float32).div_(255.0)


def _apply_ae(
    ae: InpaintAE, r: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """A_ξ(r) in eval mode without gradients, in chunks; restores A_ξ's train/eval mode."""
    was_training = ae.training
    ae.eval()
    try:
        with torch.no_grad():
            parts = [ae(r[i : i + batch_size]).float() for i in range(0, r.shape[0], batch_size)]
    finally:
        ae.train(was_training)
    return torch.cat(parts) if parts else r.clone()


def complete(
    images: np.ndarray,
    masks: np.ndarray,
    mode: str,
    *,
    rule: str = "telea",
    ae: InpaintAE | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    prefilled: bool = False,
) -> torch.Tensor:
    """Memory completion M̃ = A_ξ(R(COO⁻¹(M))) (Eq. 4.6), with kept pixels copied back (Lemma 2).

    ``mode`` is one of Table 2's completion variants: ``"zero"`` (zero padding), ``"rule"``
    (``R`` only, method ``rule``), ``"ae"`` (``A_ξ`` on the zero-filled image) and ``"rule+ae"``
    (``A_ξ(R(x'))``, SAMC). ``ae`` is required for the last two; it is moved to ``device``
    and run in eval mode under ``torch.no_grad()`` in chunks of ``batch_size``, and its previous
    train/eval mode is restored. Returns ``x̃ = m ⊙ x' + (1 - m) ⊙ fill`` as float32
    ``(N, C, H, W)`` in ``[0, 1]`` on ``device``. ``prefilled``: ``images`` already hold a memory
    codec's estimate of the pixels outside ``masks`` (``Codec.fills``); R is skipped and, in the
    ``ae`` modes, A_ξ refines that estimate.
    """
    if mode not in COMPLETION_MODES:
        raise ValueError(f"unknown completion mode {mode!r}; allowed: {', '.join(COMPLETION_MODES)}")
    if mode in ("ae", "rule+ae") and ae is None:
        raise ValueError(f"completion mode {mode!r} needs an inpainting autoencoder (ae=...)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = np.asarray(images)
    masks = np.asarray(masks, dtype=bool)
    _check_inputs(images, masks)

    if prefilled:
        r_np = images                       # the codec's own estimate replaces R (kept pixels exact)
    else:
        r_np = rule_fill(images, masks, rule if mode in ("rule", "rule+ae") else "zero")
    r = _to_float(r_np, device)
    if mode in ("zero", "rule"):
        return r  # rule_fill already copies the kept pixels back
    assert ae is not None
    ae.to(device)
    refined = _apply_ae(ae, r, batch_size)
    m = torch.from_numpy(masks[:, None]).to(device)
    # r equals x' at kept pixels, so this is m ⊙ x' + (1 - m) ⊙ A(R(x')).
    return torch.where(m, r, refined)


def masked_mse(completed: torch.Tensor | np.ndarray, ground_truth_uint8: np.ndarray, masks: np.ndarray) -> float:
    """MSE over dropped pixels only, Σ_dropped (x_i - x̃_i)² / #dropped values (Eq. I.7), on the [0, 1] scale.

    ``completed`` is float in ``[0, 1]`` (torch or numpy), ``ground_truth_uint8`` uint8
    ``(N, C, H, W)``, ``masks`` bool ``(N, H, W)`` (True = kept). Returns 0.0 if nothing is dropped.
    """
    if isinstance(completed, torch.Tensor):
        comp = completed.detach().to("cpu", torch.float64).numpy()
    else:
        comp = np.asarray(completed, dtype=np.float64)
    gt = np.asarray(ground_truth_uint8, dtype=np.float64) / 255.0
    masks = np.asarray(masks, dtype=bool)
    if comp.shape != gt.shape:
        raise ValueError(f"completed {comp.shape} and ground truth {gt.shape} differ in shape")
    dropped = np.broadcast_to(~masks[:, None], gt.shape)
    n = int(dropped.sum())
    if n == 0:
        return 0.0
    return float(((comp - gt) ** 2)[dropped].sum() / n)


def _dropped_mse_loss(out: torch.Tensor, target: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """Squared error over dropped values / number of dropped values (kept pixels are copied back)."""
    n = drop.sum() * out.shape[1]
    return (((out - target) ** 2) * drop).sum() / n.clamp_min(1)


def _eval_mse(ae: InpaintAE, r: torch.Tensor, x: torch.Tensor, drop: torch.Tensor, batch_size: int) -> float:
    """Dropped-pixel MSE of A_ξ(r) against x, A_ξ in eval mode (mode restored by the caller)."""
    ae.eval()
    sq, n = 0.0, 0.0
    with torch.no_grad():
        for i in range(0, r.shape[0], batch_size):
            d = drop[i : i + batch_size]
            out = ae(r[i : i + batch_size])
            sq += float((((out - x[i : i + batch_size]) ** 2) * d).sum())
            n += float(d.sum()) * r.shape[1]
    return sq / n if n > 0 else 0.0


def _dihedral(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Rotate (N, C, H, W) by k·90° and optionally mirror it horizontally."""
    t = torch.rot90(t, k, (2, 3)) if k else t
    return t.flip(3) if flip else t


def _augment(
    batch: tuple[torch.Tensor, ...], generator: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """The same random dihedral transform (rotation by k·90°, mirror) per sample on every tensor of ``batch``.

    Rotations by 90°/270° are used only for square images. The draws come from ``generator``.
    """
    n, h, w = batch[0].shape[0], batch[0].shape[2], batch[0].shape[3]
    n_rot = 4 if h == w else 2
    codes = torch.randint(2 * n_rot, (n,), generator=generator)
    out = [torch.empty_like(t) for t in batch]
    for code in torch.unique(codes).tolist():
        sel = (codes == code).nonzero(as_tuple=True)[0].to(batch[0].device)
        k = (code // 2) * (4 // n_rot)
        for o, t in zip(out, batch):
            o[sel] = _dihedral(t[sel], k, bool(code % 2))
    return tuple(out)


def finetune_ae(
    ae: InpaintAE,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    rule: str = "telea",
    input_mode: str = "rule+ae",
    steps: int = 100,
    lr: float = 1e-3,
    batch_size: int = 32,
    val_fraction: float = 0.2,
    patience: int = 20,
    eval_every: int = 5,
    augment: bool = True,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    prefilled: np.ndarray | None = None,
) -> dict[str, float | int]:
    """Early-stopped update of ξ, ξ ← ξ - β ∇_ξ ||x - A_ξ(R(x'))||² (Eq. 4.10, Algorithm 1 line 15).

    ``images`` are the ground-truth uint8 ``(N, C, H, W)`` images of the current task and
    ``masks`` their saliency masks (True = kept); the network input is ``R(m ⊙ x)`` with
    ``R = rule_fill(·, rule)`` for ``input_mode="rule+ae"`` and the zero fill for ``"ae"``,
    computed once up front (cv2 is the slow part). The loss is the MSE between ``x`` and
    ``m ⊙ x + (1 - m) ⊙ A_ξ(R(x'))``, i.e. the squared error over the dropped values divided
    by their number (kept pixels contribute nothing after the copy-back).

    The optimiser is Adam with step size β = ``lr`` rather than Eq. 4.10's plain gradient step:
    Adam's per-parameter normalisation makes the step size insensitive to the scale of the
    gradients of a freshly (zero-)initialised output layer and of the loss, so one β works across
    datasets and image sizes; it adds no tuning knob (default betas/eps).

    During training steps the input is squeezed into ``[ε, 1 - ε]`` (ε = half a grey level) so that
    the clamp inside A_ξ does not block the gradient of pixels at exactly 0 or 1 (``_TRAIN_EPS``);
    validation and :func:`complete` use the unsqueezed input.

    Early stopping (the paper's implicit regularisation against forgetting of A_ξ): a
    ``val_fraction`` of the pairs is held out (split drawn from ``generator``; with fewer than
    5 pairs all of them are used for both training and validation). The validation MSE is
    measured before training and every ``eval_every`` steps; the best weights (BN buffers
    included) are kept and restored at the end, and training stops once ``patience`` steps
    have passed without improvement. Batches are drawn from ``generator`` (epoch-wise
    permutations), so equal inputs and generator state give bit-identical weights on CPU.
    ``ae`` is moved to ``device`` and left in the train/eval mode it had before the call.
    ``prefilled`` (uint8, as ``images``): the network's inputs as a memory codec decodes them
    (its own estimate of the pixels it does not keep exactly), used instead of ``R(x')``.

    Returns ``{"steps": optimiser steps taken, "train_mse": dropped-pixel MSE on the training
    pairs with the final (restored) weights, "val_mse_before", "val_mse_after"}`` (the last two
    on the held-out pairs, ``val_mse_after <= val_mse_before``).
    """
    if input_mode not in FINETUNE_INPUT_MODES:
        raise ValueError(f"unknown input_mode {input_mode!r}; allowed: {', '.join(FINETUNE_INPUT_MODES)}")
    if rule not in RULE_METHODS:
        raise ValueError(f"unknown rule-based inpainting method {rule!r}; allowed: {', '.join(RULE_METHODS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if steps < 0 or batch_size < 1 or patience < 1 or eval_every < 1:
        raise ValueError("steps must be >= 0 and batch_size, patience, eval_every >= 1")
    images = np.asarray(images)
    masks = np.asarray(masks, dtype=bool)
    _check_inputs(images, masks)
    n_pairs = images.shape[0]
    if n_pairs == 0:
        raise ValueError("finetune_ae needs at least one (masked, ground truth) pair")

    t0 = time.perf_counter()
    if prefilled is not None:
        prefilled = np.asarray(prefilled)
        if prefilled.shape != images.shape or prefilled.dtype != np.uint8:
            raise ValueError(f"prefilled: expected uint8 {images.shape}, got {prefilled.dtype} {prefilled.shape}")
        r_all = _to_float(np.where(masks[:, None], images, prefilled), device)
    else:
        r_all = _to_float(rule_fill(images, masks, rule if input_mode == "rule+ae" else "zero"), device)
    x_all = _to_float(images, device)
    drop_all = torch.from_numpy(~masks[:, None]).to(device=device, dtype=torch.float32)

    # Deterministic train/validation split from the generator.
    n_val = int(round(val_fraction * n_pairs))
    if n_pairs < 5 or n_val == 0:
        train_idx = val_idx = torch.arange(n_pairs)
    else:
        perm = torch.randperm(n_pairs, generator=generator)
        n_val = min(n_val, n_pairs - 1)
        val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    r_tr, x_tr, d_tr = r_all[train_idx], x_all[train_idx], drop_all[train_idx]
    r_va, x_va, d_va = r_all[val_idx], x_all[val_idx], drop_all[val_idx]

    was_training = ae.training
    ae.to(device)
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    try:
        best_val = val_before = _eval_mse(ae, r_va, x_va, d_va, batch_size)
        best_state = copy.deepcopy(ae.state_dict())
        best_step = 0
        order = torch.empty(0, dtype=torch.long)
        pos = 0
        n_tr = len(train_idx)
        bs = min(batch_size, n_tr)
        taken = 0
        for step in range(1, steps + 1):
            if pos + bs > len(order):
                order = torch.randperm(n_tr, generator=generator)
                pos = 0
            idx = order[pos : pos + bs].to(r_tr.device)
            pos += bs
            r_b, x_b, d_b = r_tr[idx], x_tr[idx], d_tr[idx]
            if augment:
                r_b, x_b, d_b = _augment((r_b, x_b, d_b), generator)
            ae.train()
            # Squeeze the input off the clamp's bounds (see _TRAIN_EPS) so every pixel gets a gradient.
            loss = _dropped_mse_loss(ae(r_b.clamp(_TRAIN_EPS, 1.0 - _TRAIN_EPS)), x_b, d_b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            taken = step
            if step % eval_every == 0 or step == steps:
                val = _eval_mse(ae, r_va, x_va, d_va, batch_size)
                log.debug("finetune_ae: step %d, batch loss %.6f, val MSE %.6f", step, float(loss.detach()), val)
                if val < best_val:
                    best_val, best_step = val, step
                    best_state = copy.deepcopy(ae.state_dict())
                if step - best_step >= patience:
                    log.debug("finetune_ae: early stop at step %d (best step %d)", step, best_step)
                    break
        ae.load_state_dict(best_state)
        train_mse = _eval_mse(ae, r_tr, x_tr, d_tr, batch_size)
    finally:
        ae.train(was_training)
    result: dict[str, float | int] = {
        "steps": taken,
        "train_mse": train_mse,
        "val_mse_before": val_before,
        "val_mse_after": best_val,
    }
    log.info(
        "finetune_ae: %d steps (best at %d), val MSE %.5f -> %.5f, train MSE %.5f, %.2fs",
        taken, best_step, val_before, best_val, train_mse, time.perf_counter() - t0,
    )
    if not math.isfinite(train_mse):
        log.warning("finetune_ae: non-finite training MSE")
    return result
