"""What a stored memory is worth to GEM's constraint (Eq. 3.2 / 4.7): how well the loss gradient of
one task's memory points along the gradient of that task's whole test loss, for GEM's dense memories
and SAMC's completed ones (saliency, random and inverted masks, several μ), at one byte budget.

GEM forbids steps that increase the memory's loss, as a stand-in for the past task's loss; the
stand-in is only as good as cos(g_memory, g_task). The script learns task 1 (1 epoch, batch 10,
lr 0.1), fine-tunes SAMC's autoencoder on task-1 pairs for each masking, stores memories exactly as
SAMC does (Grad-CAM on the true label with the task-1 model, our sparse encoding, as many images as
fit the budget of ``--budget`` raw images; two rows take the SAMC authors' code's choices instead:
Telea only, and all of them -- predicted class, train-mode Grad-CAM, Telea only, 3 values per kept pixel), then trains task 2 (1 epoch, no constraint: the drifted
model GEM would have to protect task 1 against) and measures, over ``--draws`` random memories
drawn from task 1's training images: the cosine between the memory's gradient and the gradient of
task 1's test loss (task-1 head, eval mode), the completion error, and the task-1 model's accuracy
on the completed images. All runs side by side, one process, 1 thread.

    python benchmarks/memory_fidelity.py --data data/benchmarks/split-cifar10
"""
from __future__ import annotations

import argparse
import copy
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from samc.data.store import read_tasks
from samc.inpaint import complete, finetune_ae, masked_mse
from samc.memory import encode
from samc.models import InpaintAE, ResNet18
from samc.saliency import grad_cam, matched_mask

log = logging.getLogger("memory_fidelity")


def train_task(model: ResNet18, task, t: int, lr: float, batch: int, gen: torch.Generator,
               limit: int | None = None) -> None:
    """One epoch of plain SGD on ``task`` (head ``t``; the first ``limit`` images of a random order),
    the paper's protocol without memory."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    order = torch.randperm(len(task.y_train), generator=gen).numpy()[:limit]
    for i in range(0, len(order), batch):
        idx = np.sort(order[i:i + batch])
        x = torch.from_numpy(task.x_train[idx]).float().div_(255.0)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x, t), torch.from_numpy(task.y_train[idx])).backward()
        opt.step()


def flat_grad(model: ResNet18, x: torch.Tensor, y: torch.Tensor, t: int, chunk: int = 500) -> torch.Tensor:
    """∇θ of the mean cross-entropy over (x, y) on head ``t``, eval mode (running statistics untouched)."""
    model.eval()
    model.zero_grad(set_to_none=True)
    for i in range(0, len(y), chunk):
        loss = F.cross_entropy(model(x[i:i + chunk], t), y[i:i + chunk], reduction="sum") / len(y)
        loss.backward()
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel())
                      for p in model.parameters()])


def masks_for(model: ResNet18, images: np.ndarray, labels: np.ndarray, t: int, mu: float, kind: str,
              gen: torch.Generator, authors: bool = False) -> np.ndarray:
    """Eq. 4.4's masks; ``authors``: Grad-CAM as the authors' code takes it (predicted class, BatchNorm
    in train mode on batches of 10, on a copy of the model so its statistics stay the task-1 model's)."""
    x = torch.from_numpy(images).float().div_(255.0)
    if authors:
        cam_model, step = copy.deepcopy(model), 10
        sal = torch.cat([grad_cam(cam_model, x[i:i + step], t, target="predicted", train_mode=True)
                         for i in range(0, len(x), step)])
    else:
        sal = torch.cat([grad_cam(model, x[i:i + 200], t, torch.from_numpy(labels[i:i + 200]))
                         for i in range(0, len(x), 200)])
    return matched_mask(sal, mu, kind, gen).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a prepared benchmark folder (samc prepare)")
    ap.add_argument("--budget", type=int, default=10, help="bytes of this many raw images per task")
    ap.add_argument("--draws", type=int, default=20, help="random memories per variant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ae-steps", type=int, default=200)
    ap.add_argument("--ae-pairs", type=int, default=256, help="(masked, true) pairs the AE is fine-tuned on")
    ap.add_argument("--train-images", type=int, default=None, help="images per training epoch (default: all)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tasks = read_tasks(args.data)
    t1, t2 = tasks[0], tasks[1]
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    model1 = ResNet18(len(tasks), len(t1.classes))
    train_task(model1, t1, 0, 0.1, 10, gen, args.train_images)
    model2 = copy.deepcopy(model1)
    train_task(model2, t2, 1, 0.1, 10, gen, args.train_images)
    x_test = torch.from_numpy(t1.x_test).float().div_(255.0)
    y_test = torch.from_numpy(t1.y_test)
    g_task = flat_grad(model2, x_test, y_test, 0)
    with torch.no_grad():
        model2.eval()
        acc2 = float((model2(x_test, 0).argmax(1) == y_test).float().mean()) * 100
    log.info("task 1 learned, then task 2: task-1 test accuracy %.1f, |g_task| %.4f (%.0f s)",
             acc2, float(g_task.norm()), time.perf_counter() - t0)

    budget = args.budget * t1.x_train[0].size
    # (row, mu, mask, SAMC variant); mu None = dense images: the budget's count, or (last) as many as SAMC
    # stores at mu 0.6 -- the upper bound of "more images". Variants (issue 16): "ours" (Grad-CAM on
    # the label in eval mode, Telea + autoencoder, real bytes), "telea" (Telea only), "authors"
    # (predicted class, train-mode Grad-CAM, Telea only, 3 values per kept pixel)
    variants = [("GEM, dense", None, "budget", None), ("SAMC mu 0.4", 0.4, "saliency", "ours"),
                ("SAMC mu 0.6", 0.6, "saliency", "ours"), ("SAMC mu 0.6, random mask", 0.6, "random", "ours"),
                ("SAMC mu 0.6, inverted mask", 0.6, "inverted", "ours"), ("SAMC mu 0.8", 0.8, "saliency", "ours"),
                ("SAMC mu 0.6, Telea only", 0.6, "saliency", "telea"),
                ("SAMC mu 0.6, authors' settings", 0.6, "saliency", "authors"),
                ("GEM, dense, SAMC's count", None, "SAMC mu 0.6", None)]
    pool = torch.randperm(len(t1.y_train), generator=gen).numpy()[:3000]   # memories are drawn from these
    k = min(args.ae_pairs, len(pool) // 2)  # the first k of the pool: the AE's pairs, never a memory
    rows = {}
    for name, mu, kind, variant in variants:
        if mu is not None:
            masks = masks_for(model1, t1.x_train[pool], t1.y_train[pool], 0, mu, kind, gen, variant == "authors")
            completion = "rule+ae" if variant == "ours" else "rule"
            ae = InpaintAE(t1.x_train.shape[1])
            if completion == "rule+ae":
                finetune_ae(ae, t1.x_train[pool[:k]], masks[:k], steps=args.ae_steps, generator=gen)
            if variant == "authors":              # C values per kept pixel, no index (their budget)
                sizes = t1.x_train.shape[1] * masks.reshape(len(masks), -1).sum(1)
            else:
                sizes = np.array([len(encode(img, m, "sparse")) for img, m in zip(t1.x_train[pool], masks)])
        cos, cos_n, counts, mse, acc = [], [], [], [], []
        for d in range(args.draws):
            order = k + torch.randperm(len(pool) - k, generator=gen).numpy()
            if mu is not None:
                n = int(np.searchsorted(np.cumsum(sizes[order]), budget, side="right"))
            else:
                n = args.budget if kind == "budget" else int(round(rows[kind][0]))
            pick = order[:n]
            images, labels = t1.x_train[pool[pick]], torch.from_numpy(t1.y_train[pool[pick]])
            dense = torch.from_numpy(images).float().div_(255.0)
            x = dense if mu is None else complete(images, masks[pick], completion, ae=ae)
            with torch.no_grad():
                model1.eval()
                acc.append(float((model1(x, 0).argmax(1) == labels).float().mean()) * 100)
            g = flat_grad(model2, x, labels, 0)
            cos.append(float(F.cosine_similarity(g, g_task, dim=0)))
            if mu is not None:             # the same images, uncompleted: what completion costs
                mse.append(masked_mse(x, images, masks[pick]))
                cos_n.append(float(F.cosine_similarity(g, flat_grad(model2, dense, labels, 0), dim=0)))
            counts.append(n)
        rows[name] = (np.mean(counts), np.mean(cos), np.std(cos), np.mean(cos_n) if cos_n else None,
                      np.mean(mse) if mse else None, np.mean(acc))
        log.info("%s done (%.0f s)", name, time.perf_counter() - t0)
    shown = [variants[0][0], variants[-1][0], *(v[0] for v in variants[1:-1])]   # the two GEM rows first

    print(f"\nmemory fidelity, task 1 of {args.data}, budget {args.budget} raw images, {args.draws} draws, "
          f"seed {args.seed} (task-1 test accuracy after task 2: {acc2:.1f}); {time.perf_counter() - t0:.0f} s")
    print(f"{'memory':30s} {'images':>7s} {'cos(g_mem, g_task)':>20s} {'cos(g_compl, g_dense)':>22s} "
          f"{'dropped-pixel MSE':>18s} {'acc on memory':>14s}")
    for name in shown:
        n, c, s, cn, m, a = rows[name]
        print(f"{name:30s} {n:7.1f} {c:13.3f} ± {s:.3f} {'' if cn is None else f'{cn:.3f}':>22s} "
              f"{'' if m is None else f'{m:.4f}':>18s} {'' if a is None else f'{a:.1f}':>14s}")


if __name__ == "__main__":
    main()
