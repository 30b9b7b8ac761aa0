"""Speed benchmark (issue 15), measured side by side in one run on this machine, 1 thread:
  1. ms of one forward/backward of the reduced ResNet-18 at batch 10 and 53, fp32 vs bf16 autocast
     (+ channels_last), and whether this CPU has native bf16 (AMX / AVX-512-BF16);
  2. ms of one plain SGD step and of one GEM step with 1, 4 and 19 past tasks (10 memories each,
     exact constraint, and with memory.constraint_sample = 1), each GEM step per memory image
     relative to a plain step per image;
  3. GEM's projection: chunked float32 products (samc.gem.project) vs a float64 copy of G.

    python benchmarks/bench_speed.py                 # ~3 min on 2 cores
    python benchmarks/bench_speed.py --bf16-steps    # also GEM steps in bf16 (slow without native bf16)
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from samc.gem import GradBuffer, memory_gradients_loop, project, project_float64, violated
from samc.models import ResNet18
from samc.precision import Precision, fast_bf16


def median_ms(fn: Callable[[], None], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def forward_backward_ms(batch: int, p: Precision, repeats: int) -> float:
    torch.manual_seed(0)
    model = p.prepare(ResNet18(5, 2))
    x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 2, (batch,))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with p.autocast():
            loss = F.cross_entropy(model(x, 0), y)
        loss.backward()
    return median_ms(step, repeats)


def gem_step_ms(past: int, p: Precision, sample: int | None, repeats: int) -> float:
    """One GEM step as samc.methods.gem takes it: memory gradients (loop), batch gradient, QP, SGD."""
    torch.manual_seed(0)
    model = p.prepare(ResNet18(past + 1, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(10, 3, 32, 32), torch.randint(0, 2, (10,))
    mem_x = [torch.rand(10, 3, 32, 32) for _ in range(past)]
    mem_y = [torch.randint(0, 2, (10,)) for _ in range(past)]
    buf = GradBuffer(model.parameters(), past + 1)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        xs, ys = mem_x, mem_y
        if sample is not None:
            picks = [torch.randperm(10, generator=gen)[:sample] for _ in range(past)]
            xs, ys = [m[i] for m, i in zip(mem_x, picks)], [m[i] for m, i in zip(mem_y, picks)]
        with p.autocast():
            memory_gradients_loop(model, xs, ys, list(range(past)), buf)
            model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x, past), y)
        loss.backward()
        g, G = buf.store(past), buf.data[:past]
        if violated(g, G):
            buf.load(project(g, G, 0.5))
        opt.step()
    return median_ms(step, repeats)


def plain_step_ms(p: Precision, repeats: int) -> float:
    torch.manual_seed(0)
    model = p.prepare(ResNet18(2, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(10, 3, 32, 32), torch.randint(0, 2, (10,))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with p.autocast():
            loss = F.cross_entropy(model(x, 0), y)
        loss.backward()
        opt.step()
    return median_ms(step, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--past", type=int, nargs="+", default=[1, 4, 19])
    ap.add_argument("--bf16-steps", action="store_true", help="GEM steps in bf16 too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    fp32, bf16 = Precision("fp32", "cpu"), Precision("bf16", "cpu")
    print(f"torch {torch.__version__}, {args.threads} thread(s), native bf16 on this CPU: {fast_bf16(cpu)} "
          f"(capability {torch.backends.cpu.get_cpu_capability()})")

    print(f"\n1. forward+backward, ms (median of {args.repeats})")
    print(f"{'batch':>5} {'fp32':>8} {'bf16+CL':>8} {'bf16/fp32':>10}")
    for batch in (10, 53):
        a, b = forward_backward_ms(batch, fp32, args.repeats), forward_backward_ms(batch, bf16, args.repeats)
        print(f"{batch:5d} {a:8.1f} {b:8.1f} {b / a:10.2f}")

    precisions = [fp32, bf16] if args.bf16_steps else [fp32]
    print(f"\n2. one training step, ms (median of {args.repeats}); per image = step / (10 + 10 K) images,"
          " relative to a plain step's 10")
    print(f"{'precision':>9} {'step':>26} {'ms':>9} {'x plain':>8} {'per image x plain':>18}")
    for p in precisions:
        plain = plain_step_ms(p, args.repeats)
        print(f"{p.name:>9} {'plain SGD':>26} {plain:9.1f} {1.0:8.2f} {1.0:18.2f}")
        for k in args.past:
            for sample in (None, 1):
                ms = gem_step_ms(k, p, sample, args.repeats)
                n_img = 10 + k * (10 if sample is None else sample)
                label = f"GEM K={k} " + ("exact" if sample is None else f"sample {sample}")
                print(f"{p.name:>9} {label:>26} {ms:9.1f} {ms / plain:8.2f} {(ms / n_img) / (plain / 10):18.2f}")

    print("\n3. GEM's projection (1.1 M parameters), ms")
    print(f"{'K':>3} {'float32 chunked':>16} {'float64 copy':>13} {'rel. diff':>10}")
    model = ResNet18(20, 2)
    n = sum(q.numel() for q in model.parameters())
    for k in (4, 19):
        torch.manual_seed(k)
        G = torch.randn(k, n)
        g = torch.randn(n) - 0.3 * G.sum(0)
        a = median_ms(lambda: project(g, G, 0.5), args.repeats)
        b = median_ms(lambda: project_float64(g, G, 0.5), args.repeats)
        z, ref = project(g, G, 0.5).double(), project_float64(g, G, 0.5).double()
        print(f"{k:3d} {a:16.1f} {b:13.1f} {float((z - ref).norm() / ref.norm()):10.1e}")


if __name__ == "__main__":
    main()
