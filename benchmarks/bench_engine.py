"""Engine benchmark: prints, measured side by side in one run on the same data,
  1. bytes per stored image, our sparse encoding vs COO vs dense, at several μ (cf. Table 4);
  2. wall time per task of `samc` vs `gem` and the images each stores per task.
(Step costs, GEM's per-task loop vs its batched pass included: benchmarks/bench_speed.py.)

    python benchmarks/bench_engine.py                       # shapes, quick
    python benchmarks/bench_engine.py --dataset cifar10 --root data/cifar10 --tasks 5
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from samc import config
from samc.memory import coo_nbytes, encode
from samc.models import ResNet18
from samc.saliency import grad_cam, saliency_mask
from samc.train import load_tasks, run_stream

ROOT = Path(__file__).resolve().parents[1]


def bytes_per_image(cfg: config.Config, mus: list[float]) -> None:
    tasks = load_tasks(cfg)
    task = tasks[0]
    torch.manual_seed(0)
    model = ResNet18(len(tasks), cfg.dataset.classes_per_task)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr)
    xs = torch.from_numpy(task.x_train).float() / 255
    ys = torch.from_numpy(task.y_train)
    for idx in torch.randperm(len(ys))[:2000].split(10):  # a briefly trained classifier
        opt.zero_grad()
        F.cross_entropy(model(xs[idx], 0), ys[idx]).backward()
        opt.step()
    n = min(200, len(ys))
    sal = grad_cam(model, xs[:n], 0, ys[:n])
    dense = int(np.prod(task.x_train.shape[1:]))
    print(f"\n{'mu':>5} {'kept':>6} {'sparse B/img':>13} {'COO B/img':>10} {'dense B/img':>12} {'images/budget':>14}")
    for mu in mus:
        masks = saliency_mask(sal, mu).numpy()
        sparse = [len(encode(task.x_train[i], masks[i], "sparse")) for i in range(n)]
        coo = [coo_nbytes(int(masks[i].sum()), task.x_train.shape[1]) for i in range(n)]
        per = float(np.mean(sparse))
        print(f"{mu:5.2f} {masks.mean():6.3f} {per:13.1f} {np.mean(coo):10.1f} {dense:12d} "
              f"{cfg.memory.images_per_task * dense / per:14.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="shapes")
    ap.add_argument("--root")
    ap.add_argument("--tasks", type=int, default=3)
    ap.add_argument("--train-per-class", type=int, default=1000,
                    help="shapes only: training images per class (1000: 200 steps per task, as measured before)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="/tmp/samc-bench", help="run folders; emptied first, so every time is measured now")
    ap.add_argument("--skip-runs", action="store_true", help="only the bytes table")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    sets = [f"dataset.name={args.dataset}", f"dataset.n_tasks={args.tasks}", f"train.threads={args.threads}",
            "train.device=cpu"]
    if args.root:
        sets.append(f"dataset.root={args.root}")
    if args.dataset == "shapes":
        sets.append(f"dataset.shapes_train_per_class={args.train_per_class}")
    cfg = config.load(ROOT / "params.yaml", sets)

    bytes_per_image(cfg, [0.3, 0.5, 0.6, 0.7, 0.8])
    if args.skip_runs:
        return
    if Path(args.out).exists():        # run_stream resumes finished runs: old times would be reported
        shutil.rmtree(args.out)
    results = {}
    for method in ("gem", "samc"):
        c = config.load(ROOT / "params.yaml", [*sets, f"train.method={method}"])
        results[method] = run_stream(c, Path(args.out) / method, progress=False)
    # GEM with the budget that holds as many raw images as SAMC stored on average: equal images
    equal = max(1, round(float(np.mean(results["samc"]["memory_images"]))))
    c = config.load(ROOT / "params.yaml", [*sets, "train.method=gem", f"memory.images_per_task={equal}"])
    results["gem_equal"] = run_stream(c, Path(args.out) / f"gem-{equal}", progress=False)
    print(f"\n{'task':>4} {'gem s':>8} {'samc s':>8} {'samc/gem':>9} {f'gem@{equal} s':>10} {'samc/gem@':>10} "
          f"{'gem imgs':>9} {'samc imgs':>10}")
    for t in range(args.tasks):
        g, s = results["gem"]["timings"][t]["total"], results["samc"]["timings"][t]["total"]
        e = results["gem_equal"]["timings"][t]["total"]
        print(f"{t + 1:4d} {g:8.1f} {s:8.1f} {s / g:9.3f} {e:10.1f} {s / e:10.3f} "
              f"{results['gem']['memory_images'][t]:9d} {results['samc']['memory_images'][t]:10d}")
    tot = {k: sum(r["timings"][t]["total"] for t in range(args.tasks)) for k, r in results.items()}
    print(f"total: samc/gem {tot['samc'] / tot['gem']:.3f}, samc/gem@{equal} images {tot['samc'] / tot['gem_equal']:.3f}")
    for k, r in results.items():
        print(f"{k:>10}: ACC {r['acc']:.2f}  BWT {r['bwt']:.2f}  images {r['memory_images']}")


if __name__ == "__main__":
    main()
