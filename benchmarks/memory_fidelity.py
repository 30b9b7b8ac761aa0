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

Codec rows (issue 17): the same budget filled with the records of each ``--codecs`` memory codec
(``samc.memory.codecs``; the saliency-based ones get Grad-CAM masks at μ 0.6), decoded, with what a
codec leaves missing filled by Telea (GEM's rule fill). Every row gives the memory's gradient in
eval mode and in train mode (BatchNorm on the memory's own batch statistics, as GEM computes its
constraints during training), against the task's test-loss gradient in eval mode (what its test
accuracy answers to) and in train mode (the test set as one batch).

    python benchmarks/memory_fidelity.py --data data/benchmarks/split-cifar10
    python benchmarks/memory_fidelity.py --data data/benchmarks/split-cifar10 --rows codecs
"""
from __future__ import annotations

import argparse
import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from samc.data.store import read_tasks
from samc.inpaint import complete, finetune_ae, masked_mse
from samc.memory import MemoryFormatError, encode, get_codec
from samc.models import InpaintAE, ResNet18
from samc.saliency import grad_cam, matched_mask

log = logging.getLogger("memory_fidelity")

#: the codec rows by default: every plain codec and every saliency-based one (issue 17)
CODEC_ROWS = ("raw", "lossless", "jxl", "jxl:distance=2", "webp", "sparse", "salient_lowres", "salient_blur")


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


def flat_grad(model: ResNet18, x: torch.Tensor, y: torch.Tensor, t: int, chunk: int = 500,
              train: bool = False) -> torch.Tensor:
    """∇θ of the mean cross-entropy over (x, y) on head ``t``: eval mode (running statistics), or
    ``train`` mode (one batch, BatchNorm on its own statistics, on a copy: ``model``'s running
    statistics stay untouched), as GEM's constraint gradients are computed during training."""
    if train:
        model = copy.deepcopy(model).train()
        chunk = len(y)
    else:
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


@dataclass
class Stored:
    """One variant's memory candidates: the bytes each pool image costs, the images as the
    constraint sees them (decoded and completed, float in [0, 1]) and the pixels known exactly."""

    sizes: np.ndarray
    images: torch.Tensor
    known: np.ndarray


def samc_stored(args, model1, t1, pool, k, gen, mu, kind, variant) -> Stored:
    """SAMC's memory of the pool (Eq. 4.4-4.6) in one of issue 16's variants."""
    masks = masks_for(model1, t1.x_train[pool], t1.y_train[pool], 0, mu, kind, gen, variant == "authors")
    completion = "rule+ae" if variant == "ours" else "rule"
    ae = InpaintAE(t1.x_train.shape[1])
    if completion == "rule+ae":
        finetune_ae(ae, t1.x_train[pool[:k]], masks[:k], steps=args.ae_steps, generator=gen)
    if variant == "authors":              # C values per kept pixel, no index (their budget)
        sizes = t1.x_train.shape[1] * masks.reshape(len(masks), -1).sum(1)
    else:
        sizes = np.array([len(encode(img, m, "sparse")) for img, m in zip(t1.x_train[pool], masks)])
    return Stored(sizes, complete(t1.x_train[pool], masks, completion, ae=ae), masks)


def codec_stored(model1, t1, pool, gen, spec: str, mu: float) -> Stored:
    """The pool stored by a memory codec (issue 17), decoded; what it leaves missing filled by Telea."""
    codec = get_codec(spec)
    images = t1.x_train[pool]
    masks = (masks_for(model1, images, t1.y_train[pool], 0, mu, "saliency", gen) if codec.uses_saliency
             else np.ones((len(pool), *images.shape[2:]), dtype=bool))
    records = [codec.encode(img, m) for img, m in zip(images, masks)]
    decoded = [codec.decode(r, images.shape[1:]) for r in records]
    dec = np.stack([d[0] for d in decoded])
    known = np.stack([d[1] for d in decoded])
    x = complete(dec, known, "rule", prefilled=codec.fills)
    return Stored(np.array([len(r) for r in records]), x, known)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a prepared benchmark folder (samc prepare)")
    ap.add_argument("--budget", type=int, default=10, help="bytes of this many raw images per task")
    ap.add_argument("--draws", type=int, default=20, help="random memories per variant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ae-steps", type=int, default=200)
    ap.add_argument("--ae-pairs", type=int, default=256, help="(masked, true) pairs the AE is fine-tuned on")
    ap.add_argument("--train-images", type=int, default=None, help="images per training epoch (default: all)")
    ap.add_argument("--rows", choices=("all", "samc", "codecs"), default="all",
                    help="SAMC's variants (issue 16), the memory codecs (issue 17), or both")
    ap.add_argument("--codecs", nargs="+", default=list(CODEC_ROWS), metavar="SPEC",
                    help="memory codec specs for the codec rows (memory.codec syntax)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for spec in args.codecs:
        try:
            get_codec(spec)
        except MemoryFormatError as e:
            ap.error(f"--codecs: {e}")
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
    g_task_train = flat_grad(model2, x_test, y_test, 0, train=True)    # the test set as one train-mode batch
    with torch.no_grad():
        model2.eval()
        acc2 = float((model2(x_test, 0).argmax(1) == y_test).float().mean()) * 100
    log.info("task 1 learned, then task 2: task-1 test accuracy %.1f, |g_task| %.4f (%.0f s)",
             acc2, float(g_task.norm()), time.perf_counter() - t0)

    budget = args.budget * t1.x_train[0].size
    # (row, how the pool is stored); None = dense images: the budget's count, or as many as the row
    # named stores -- the upper bound of "more images". SAMC variants (issue 16): "ours" (Grad-CAM on
    # the label in eval mode, Telea + autoencoder, real bytes), "telea" (Telea only), "authors"
    # (predicted class, train-mode Grad-CAM, Telea only, 3 values per kept pixel)
    samc_rows = [("SAMC mu 0.4", (0.4, "saliency", "ours")), ("SAMC mu 0.6", (0.6, "saliency", "ours")),
                 ("SAMC mu 0.6, random mask", (0.6, "random", "ours")),
                 ("SAMC mu 0.6, inverted mask", (0.6, "inverted", "ours")),
                 ("SAMC mu 0.8", (0.8, "saliency", "ours")), ("SAMC mu 0.6, Telea only", (0.6, "saliency", "telea")),
                 ("SAMC mu 0.6, authors' settings", (0.6, "saliency", "authors"))]
    codec_rows = [(f"codec {spec}", spec) for spec in args.codecs]
    variants: list[tuple[str, object]] = [("GEM, dense", "budget")]
    if args.rows in ("all", "samc"):
        variants += [*samc_rows, ("GEM, dense, SAMC's count", "SAMC mu 0.6")]
    if args.rows in ("all", "codecs"):
        variants += codec_rows
    pool = torch.randperm(len(t1.y_train), generator=gen).numpy()[:3000]   # memories are drawn from these
    k = min(args.ae_pairs, len(pool) // 2)  # the first k of the pool: the AE's pairs, never a memory
    truth = torch.from_numpy(t1.x_train[pool]).float().div_(255.0)
    rows = {}
    for name, how in variants:
        stored = None
        if isinstance(how, tuple):
            stored = samc_stored(args, model1, t1, pool, k, gen, *how)
        elif name.startswith("codec "):
            stored = codec_stored(model1, t1, pool, gen, how, 0.6)
        cos, cos_tr, cos_tt, cos_n, counts, mse, mse_all, acc = [], [], [], [], [], [], [], []
        for d in range(args.draws):
            order = k + torch.randperm(len(pool) - k, generator=gen).numpy()
            if stored is not None:
                n = int(np.searchsorted(np.cumsum(stored.sizes[order]), budget, side="right"))
            else:
                n = args.budget if how == "budget" else int(round(rows[how]["images"]))
            pick = order[:n]
            labels = torch.from_numpy(t1.y_train[pool[pick]])
            dense = truth[pick]
            x = dense if stored is None else stored.images[pick]
            with torch.no_grad():
                model1.eval()
                acc.append(float((model1(x, 0).argmax(1) == labels).float().mean()) * 100)
            g = flat_grad(model2, x, labels, 0)
            cos.append(float(F.cosine_similarity(g, g_task, dim=0)))
            g_train = flat_grad(model2, x, labels, 0, train=True)
            cos_tr.append(float(F.cosine_similarity(g_train, g_task, dim=0)))
            cos_tt.append(float(F.cosine_similarity(g_train, g_task_train, dim=0)))
            if stored is not None:             # the same images, uncompressed: what storing them costs
                mse.append(masked_mse(x, t1.x_train[pool[pick]], stored.known[pick]))
                mse_all.append(float(((x - dense) ** 2).mean()))
                cos_n.append(float(F.cosine_similarity(g, flat_grad(model2, dense, labels, 0), dim=0)))
            counts.append(n)
        rows[name] = {"images": np.mean(counts), "cos": np.mean(cos), "cos_std": np.std(cos),
                      "cos_train": np.mean(cos_tr), "cos_train_std": np.std(cos_tr), "cos_tt": np.mean(cos_tt),
                      "cos_dense": np.mean(cos_n) if cos_n else None, "mse_dropped": np.mean(mse) if mse else None,
                      "mse": np.mean(mse_all) if mse_all else None, "acc": np.mean(acc)}
        log.info("%s done (%.0f s)", name, time.perf_counter() - t0)
    shown = [v[0] for v in variants if v[0].startswith("GEM")] + [v[0] for v in variants if not v[0].startswith("GEM")]

    print(f"\nmemory fidelity, task 1 of {args.data}, budget {args.budget} raw images, {args.draws} draws, "
          f"seed {args.seed} (task-1 test accuracy after task 2: {acc2:.1f}); {time.perf_counter() - t0:.0f} s")
    print("cos eval: of the memory's loss gradient with task 1's test-loss gradient, both in eval mode; cos "
          "train: the memory's in train mode (as GEM's constraints), against the eval-mode test gradient, and "
          "(train/train) against the test set's own in train mode; vs dense: with the same images "
          "uncompressed (eval); MSE on the pixels not stored exactly, and on all pixels")
    print(f"{'memory':34s} {'images':>7s} {'cos eval':>15s} {'cos train':>15s} {'train/train':>11s} {'vs dense':>9s} "
          f"{'MSE dropped':>12s} {'MSE all':>8s} {'acc on memory':>14s}")
    fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
    for name in shown:
        r = rows[name]
        print(f"{name:34s} {r['images']:7.1f} {r['cos']:7.3f} ± {r['cos_std']:.3f} {r['cos_train']:7.3f} ± "
              f"{r['cos_train_std']:.3f} {r['cos_tt']:11.3f} {fmt(r['cos_dense'], '.3f'):>9s} {fmt(r['mse_dropped'], '.4f'):>12s} "
              f"{fmt(r['mse'], '.5f'):>8s} {r['acc']:14.1f}")


if __name__ == "__main__":
    main()
