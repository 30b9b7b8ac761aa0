"""Batched Grad-CAM saliency maps and the masks of Eq. 4.4 (Eq. 4.3, App. D: D.1–D.3).

Grad-CAM is taken on the last convolutional block A of the classifier for the score f_c of the
*true label* c = y, as the paper writes Φ(x, f_θ, y) in Eq. 4.4. (The authors' public code used
the predicted class, in train mode, after the optimiser step; ``target="predicted"`` reproduces
the first choice for ablations.) The map of one whole batch comes from one forward pass and one
backward pass that stops at A: the classifier runs in eval mode, so BatchNorm uses — and leaves
untouched — its running statistics, no hooks are registered, and ``torch.autograd.grad`` returns
∂f_c/∂A without writing into any parameter's ``.grad``, so nothing leaks into the classifier's update.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from samc.models import ResNet18


def grad_cam(model: ResNet18, x: torch.Tensor, task: int, y: torch.Tensor | None = None,
             target: str = "label", train_mode: bool = False) -> torch.Tensor:
    """Saliency maps M(x) ∈ [0,1]^{H×W} for a batch (Eq. 4.3; App. D, Eq. D.1–D.3).

    ``target="label"`` scores the true (task-local) label ``y``; ``"predicted"`` the arg-max logit.
    ``train_mode``: BatchNorm normalises with the batch's statistics and updates its running
    statistics (the authors' code, ``samc.gradcam_mode = train``); default eval mode, untouched.
    Each map is min–max normalised per image; a constant map (no evidence for any region)
    becomes all ones, so that nothing is dropped on its account, and never NaN.
    """
    was_training = model.training
    model.train(train_mode)
    try:
        with torch.no_grad():
            a = model.features_map(x)
        a = a.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.head(a, task)
            if target == "label":
                if y is None:
                    raise ValueError("grad_cam(target='label') needs the labels y")
                c = y
            elif target == "predicted":
                c = logits.argmax(1)
            else:
                raise ValueError(f"saliency target {target!r}: allowed values are 'label', 'predicted'")
            score = logits.gather(1, c.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, a)
    finally:
        model.train(was_training)
    a, grads = a.detach().float(), grads.float()                    # bf16 under autocast: maps in fp32
    alpha = grads.mean(dim=(2, 3), keepdim=True)                    # D.1: α_k^c = GAP(∂f_c/∂A^k)
    cam = F.relu((alpha * a).sum(1, keepdim=True))                  # D.2: ReLU(Σ_k α_k^c A^k)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)  # D.3: BI↑
    cam = cam.squeeze(1)
    lo = cam.amin(dim=(1, 2), keepdim=True)
    hi = cam.amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    flat = span <= 1e-12 * hi.abs().clamp_min(1.0)
    out = (cam - lo) / torch.where(flat, torch.ones_like(span), span)
    return torch.where(flat, torch.ones_like(out), out).clamp_(0.0, 1.0)


def saliency_mask(saliency: torch.Tensor, mu: float) -> torch.Tensor:
    """x' = 1{M_x > μ} (Eq. 4.4): True where the pixel is kept."""
    return saliency > mu


def matched_mask(saliency: torch.Tensor, mu: float, kind: str, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """A mask keeping, per image, as many pixels as Eq. 4.4 keeps (|{M_x > μ}|), chosen by ``kind``:
    ``saliency`` = Eq. 4.4 itself; ``random`` = uniformly at random (``generator``, on the CPU);
    ``inverted`` = the least salient pixels (ties broken by position). Attribution ablations (issue 7)."""
    mask = saliency_mask(saliency, mu)
    if kind == "saliency":
        return mask
    b, h, w = saliency.shape
    counts = mask.reshape(b, -1).sum(1, keepdim=True)
    if kind == "random":
        scores = torch.rand(b, h * w, generator=generator).to(saliency.device)
    elif kind == "inverted":
        scores = saliency.reshape(b, -1)
    else:
        raise ValueError(f"samc.mask: unknown mask {kind!r} (saliency | random | inverted)")
    # rank of each pixel in ascending score order (stable), kept when rank < the image's count
    order = torch.sort(scores, dim=1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1).contiguous())
    return (rank < counts).reshape(b, h, w)
