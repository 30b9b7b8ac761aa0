"""Grad-CAM saliency (Eq. 4.3–4.4, App. D) on a classifier trained briefly on shapes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samc.data import load_source, split_tasks
from samc.models import ResNet18
from samc.saliency import grad_cam, saliency_mask


@pytest.fixture(scope="module")
def trained():
    """A ResNet-18 after two epochs (400 SGD steps, batch 10, lr 0.05) on the first shapes task (one
    epoch left it at 70-80% test accuracy depending on the CPU's float kernels: AMX or not)."""
    torch.manual_seed(0)
    train, test = load_source("shapes", seed=7, shapes_train_per_class=1000, shapes_test_per_class=100)
    task = split_tasks(train, test, 5, 2)[0]
    model = ResNet18(5, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x_all = torch.from_numpy(task.x_train).float() / 255
    y_all = torch.from_numpy(task.y_train)
    model.train()
    order = torch.Generator().manual_seed(0)
    for idx in (i for _ in range(2) for i in torch.randperm(len(y_all), generator=order).split(10)):
        opt.zero_grad()
        F.cross_entropy(model(x_all[idx], 0), y_all[idx]).backward()
        opt.step()
    # precise BatchNorm statistics (a cumulative average over the training set): with batch 10 the
    # running averages lag behind the weights, which only blurs the eval-mode accuracy check below
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for idx in torch.randperm(len(y_all), generator=torch.Generator().manual_seed(1)).split(100):
            model(x_all[idx], 0)
    return model, task


def test_pointing_game_on_shapes(trained):
    """The saliency peak falls inside the object (the class lives there, not in the clutter)."""
    model, task = trained
    x = torch.from_numpy(task.x_test).float() / 255
    y = torch.from_numpy(task.y_test)
    model.eval()
    with torch.no_grad():
        accuracy = (model(x, 0).argmax(1) == y).float().mean().item()
    assert accuracy > 0.75, f"the fixture classifier did not learn the task ({accuracy:.2f})"
    sal = grad_cam(model, x, 0, y)
    peak = sal.flatten(1).argmax(1)
    masks = torch.from_numpy(task.masks_test).flatten(1)
    # the pointing game's tolerance (Zhang et al. 2016: 15 px at 224 px) scaled to 32 px: 2 px
    near = F.max_pool2d(torch.from_numpy(task.masks_test).float()[:, None], 5, 1, 2).flatten(1) > 0
    hits = near[torch.arange(len(peak)), peak].float().mean().item()
    assert hits >= 0.8, f"pointing game {hits:.2f} < 0.8"
    # and the object is where the saliency is: mean saliency inside the object > outside
    inside = (sal.flatten(1) * masks).sum(1) / masks.sum(1)
    outside = (sal.flatten(1) * ~masks).sum(1) / (~masks).sum(1)
    assert (inside > outside).float().mean().item() >= 0.8


def test_maps_are_normalised_and_masks_shrink_with_mu(trained):
    model, task = trained
    x = torch.from_numpy(task.x_test[:40]).float() / 255
    y = torch.from_numpy(task.y_test[:40])
    sal = grad_cam(model, x, 0, y)
    assert sal.shape == (40, 32, 32)
    assert torch.isfinite(sal).all() and sal.min() >= 0 and sal.max() <= 1
    assert torch.allclose(sal.amax(dim=(1, 2)), torch.ones(40))
    kept = [saliency_mask(sal, mu).float().mean().item() for mu in (0.1, 0.3, 0.5, 0.6, 0.7, 0.9)]
    assert all(a > b for a, b in zip(kept, kept[1:])), kept


def test_gradcam_leaves_the_classifier_untouched(trained):
    model, task = trained
    model.train()
    for p in model.parameters():
        p.grad = None
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.from_numpy(task.x_test[:10]).float() / 255
    grad_cam(model, x, 0, torch.from_numpy(task.y_test[:10]))
    assert model.training, "train/eval mode must be restored"
    assert all(p.grad is None for p in model.parameters()), "no gradient may leak into θ"
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), f"{k} changed (BatchNorm statistics must be untouched)"
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_batched_equals_per_image(trained):
    model, task = trained
    x = torch.from_numpy(task.x_test[:6]).float() / 255
    y = torch.from_numpy(task.y_test[:6])
    batched = grad_cam(model, x, 0, y)
    single = torch.cat([grad_cam(model, x[i:i + 1], 0, y[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_targets_and_constant_maps():
    model = ResNet18(2, 2)
    for p in model.heads.parameters():
        torch.nn.init.zeros_(p)  # every logit 0 → ∂f/∂A = 0 → a constant (zero) map
    x = torch.rand(3, 3, 32, 32)
    sal = grad_cam(model, x, 0, torch.zeros(3, dtype=torch.long))
    assert torch.equal(sal, torch.ones_like(sal)), "a constant map keeps every pixel, never NaN"
    pred = grad_cam(model, x, 0, target="predicted")
    assert pred.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="target"):
        grad_cam(model, x, 0, target="nope")


@pytest.mark.parametrize("kind", ["random", "inverted"])
def test_ablation_masks_keep_the_same_count_per_image(trained, kind):
    """samc.mask random | inverted: per image exactly as many pixels as Eq. 4.4 keeps, chosen otherwise."""
    from samc.saliency import matched_mask

    model, task = trained
    x = torch.from_numpy(task.x_test[:20]).float() / 255
    sal = grad_cam(model, x, 0, torch.from_numpy(task.y_test[:20]))
    ref = saliency_mask(sal, 0.6)
    assert torch.equal(matched_mask(sal, 0.6, "saliency"), ref)
    m = matched_mask(sal, 0.6, kind, torch.Generator().manual_seed(0))
    assert torch.equal(m.flatten(1).sum(1), ref.flatten(1).sum(1))
    mean_sal = lambda mask: ((sal * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)).mean()
    if kind == "inverted":
        # the kept pixels are the least salient: none kept is more salient than any dropped one
        for s, k in zip(sal, m):
            if 0 < k.sum() < k.numel():
                assert s[k].max() <= s[~k].min()
        assert mean_sal(m) < mean_sal(ref)
    else:
        again = matched_mask(sal, 0.6, kind, torch.Generator().manual_seed(0))
        assert torch.equal(m, again) and not torch.equal(m, ref)
        assert mean_sal(ref) > mean_sal(m) > mean_sal(matched_mask(sal, 0.6, "inverted"))
    with pytest.raises(ValueError, match="samc.mask"):
        matched_mask(sal, 0.6, "checkerboard")
