"""BatchNorm diagnosis: how much of a saved run's test accuracy is its BatchNorm running statistics?

Evaluates the classifier saved after task t as it is, then with every BatchNorm layer's running
statistics re-estimated (cumulative average, train-mode forwards without gradient) on the first
``--images`` training images of task t alone. GEM and SAMC update the running statistics with their
memory passes too (memory.update_bn), so a large change points at those passes; weights are the same
in both evaluations.

    python benchmarks/bn_stats.py --data data/benchmarks/split-cifar10 runs/split-cifar10/samc-s0:3 runs/split-cifar10/gem-s0:3
"""
from __future__ import annotations

import argparse
import copy
import logging

import torch

from samc import io
from samc.data.store import read_tasks
from samc.models import ResNet18
from samc.train import evaluate

log = logging.getLogger("bn_stats")


def reestimated(model: ResNet18, x, task: int, batch: int = 10) -> ResNet18:
    """A copy of ``model`` whose BatchNorm running statistics are the average over ``x`` (uint8 NCHW)."""
    out = copy.deepcopy(model)
    for m in out.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None                    # cumulative moving average
    out.train()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out(torch.from_numpy(x[i:i + batch]).float().div_(255.0), task)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="RUN_DIR:TASK (1-based), e.g. runs/split-cifar10/samc-s0:3")
    ap.add_argument("--data", required=True, help="prepared tasks (samc prepare), e.g. data/benchmarks/split-cifar10")
    ap.add_argument("--images", type=int, default=2000, help="training images of task t for the re-estimate")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    tasks = read_tasks(args.data)
    cpu = torch.device("cpu")
    for item in args.runs:
        run, _, t = item.rpartition(":")
        t = int(t)
        state = io.load_torch(f"{run}/task_{t}/state.pt")
        model = ResNet18(len(tasks), len(tasks[0].classes))
        model.load_state_dict(state["model"])
        saved = evaluate(model, tasks, cpu)
        fresh = evaluate(reestimated(model, tasks[t - 1].x_train[: args.images], t - 1), tasks, cpu)
        fmt = lambda accs: " ".join(f"{a:5.1f}" for a in accs)
        log.info("%s after task %d\n  saved statistics:        %s\n  re-estimated on task %d:  %s"
                 "\n  task %d accuracy: %.1f -> %.1f", run, t, fmt(saved), t, fmt(fresh), t,
                 saved[t - 1], fresh[t - 1])


if __name__ == "__main__":
    main()
