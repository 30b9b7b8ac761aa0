"""Speed benchmark (issue 15), measured side by side in one run on this machine, 1 thread:
  1. ms of one forward/backward of the reduced ResNet-18 at batch 10 and 53: fp32 contiguous,
     fp32 channels_last, bf16 autocast + channels_last; whether this CPU has native bf16 (AMX /
     AVX-512-BF16);
  2. ms of one plain SGD step and of one GEM step with 1, 4 and 19 past tasks (10 memories each;
     exact constraint, memory.constraint_sample = 1, and G's rows from the batched torch.func pass),
     in both fp32 layouts, interleaved (one load for what is compared); each GEM step per memory
     image relative to a plain step per image;
  3. GEM's projection: chunked float32 products (samc.gem.project) vs a float64 copy of G;
  4. where a GEM step's CPU time goes: convolutions, BatchNorm, gradient copies, optimizer, other;
  5. with --runs: the per-phase split and wall time of whole runs, read from their metrics.json
     (what the engine timed while training; e.g. the Split CIFAR-10 runs of the README's cost table).

    python benchmarks/bench_speed.py                 # ~4 min on 2 cores
    python benchmarks/bench_speed.py --bf16-steps    # also GEM steps in bf16 (slow without native bf16)
    python benchmarks/bench_speed.py --skip-steps --runs runs/split-cifar10/gem-s0 runs/split-cifar10/samc-s0
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from samc.compare import load_result
from samc.gem import GradBuffer, memory_gradients_batched, memory_gradients_loop, project, project_float64, violated
from samc.models import ResNet18
from samc.precision import Precision, fast_bf16


def median_ms(fn: Callable[[], None], repeats: int, warmup: int = 2) -> float:
    return interleaved_ms({"fn": fn}, repeats, warmup)["fn"]


def interleaved_ms(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median ms of each function, the functions called in turn within each repeat: what is compared
    is measured under the same load (a shared machine's load drifts over minutes)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def forward_backward(batch: int, p: Precision) -> Callable[[], None]:
    torch.manual_seed(0)
    model = p.prepare(ResNet18(5, 2))
    x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 2, (batch,))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with p.autocast():
            loss = F.cross_entropy(model(x, 0), y)
        loss.backward()
    return step


def gem_step(past: int, p: Precision, sample: int | None = None, batched: bool = False) -> Callable[[], None]:
    """One GEM step as samc.methods.gem takes it: memory gradients (the per-task loop, or the
    batched torch.func pass), batch gradient, QP, SGD. ``past = 0`` is a plain SGD step."""
    torch.manual_seed(0)
    model = p.prepare(ResNet18(past + 1, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(10, 3, 32, 32), torch.randint(0, 2, (10,))
    mem_x = [torch.rand(10, 3, 32, 32) for _ in range(past)]
    mem_y = [torch.randint(0, 2, (10,)) for _ in range(past)]
    buf = GradBuffer(model.parameters(), past + 1)
    gen = torch.Generator().manual_seed(0)
    rows = memory_gradients_batched if batched else memory_gradients_loop

    def step() -> None:
        xs, ys = mem_x, mem_y
        if sample is not None:
            picks = [torch.randperm(10, generator=gen)[:sample] for _ in range(past)]
            xs, ys = [m[i] for m, i in zip(mem_x, picks)], [m[i] for m, i in zip(mem_y, picks)]
        with p.autocast():
            if past:
                rows(model, xs, ys, list(range(past)), buf)
            model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x, past), y)
        loss.backward()
        if past:
            g, G = buf.store(past), buf.data[:past]
            if violated(g, G):
                buf.load(project(g, G, 0.5))
        opt.step()
    return step


def profile_split(past: int, p: Precision, repeats: int) -> dict[str, float]:
    """Section 4: where one GEM step's CPU time goes, by operator family (torch.profiler, self time)."""
    families = {"convolution": ("convolution", "conv2d"), "batch norm": ("batch_norm",),
                "gradient copies": ("copy_", "zero_", "zeros", "fill_"), "optimizer": ("sgd", "_foreach")}
    step = gem_step(past, p)
    step()                                              # warm-up (oneDNN primitives)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    split = dict.fromkeys([*families, "other"], 0.0)
    for ev in prof.key_averages():
        name = ev.key.lower()
        family = next((f for f, keys in families.items() if any(k in name for k in keys)), "other")
        split[family] += ev.self_cpu_time_total
    total = sum(split.values())
    return {k: 100 * v / total for k, v in split.items()}


def run_phases(folders: list[str]) -> None:
    """Section 5: each run's wall time and its split by phase, summed over its tasks' metrics
    (completion includes its inpainting; "other" is the rest: data, memory writes, BatchNorm passes)."""
    phases = ("memory_grads", "train_step", "qp", "gradcam", "encode", "completion", "autoencoder", "evaluate")
    print("\n5. whole runs (from their metrics.json): wall s, and % of it per phase")
    print(f"{'run':>24} {'tasks':>5} {'wall s':>8} " + " ".join(f"{ph[:7]:>7}" for ph in phases) + f" {'other':>7}")
    for folder in folders:
        try:
            rows = load_result(Path(folder))["timings"]     # a run folder or a collected result
        except (FileNotFoundError, ValueError) as exc:
            raise SystemExit(f"--runs {exc}") from None
        total = sum(r["total"] for r in rows)
        split = {ph: sum(r.get(ph, 0.0) for r in rows) for ph in phases}
        other = total - sum(split.values())
        print(f"{Path(folder).name[-24:]:>24} {len(rows):5d} {total:8.0f} "
              + " ".join(f"{100 * v / total:7.1f}" for v in split.values()) + f" {100 * other / total:7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls of each function first")
    ap.add_argument("--past", type=int, nargs="+", default=[1, 4, 19])
    ap.add_argument("--bf16-steps", action="store_true", help="GEM steps in bf16 too")
    ap.add_argument("--skip-steps", action="store_true", help="only section 5 (needs --runs)")
    ap.add_argument("--runs", nargs="*", default=[], help="run folders (task_*/metrics.json) for section 5")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    fp32, fp32_cl, bf16 = Precision("fp32", "cpu"), Precision("fp32", "cpu", True), Precision("bf16", "cpu", True)
    print(f"torch {torch.__version__}, {args.threads} thread(s), native bf16 on this CPU: {fast_bf16(cpu)} "
          f"(capability {torch.backends.cpu.get_cpu_capability()})")
    if not args.skip_steps:
        steps(args, fp32, fp32_cl, bf16)
    if args.runs:
        run_phases(args.runs)


def steps(args: argparse.Namespace, fp32: Precision, fp32_cl: Precision, bf16: Precision) -> None:
    label = {id(fp32): "fp32", id(fp32_cl): "fp32+CL", id(bf16): "bf16+CL"}
    print(f"\n1. forward+backward, ms (median of {args.repeats}, the three interleaved)")
    print(f"{'batch':>5} {'fp32':>8} {'fp32+CL':>8} {'bf16+CL':>8} {'CL/fp32':>8} {'bf16/fp32':>10}")
    for batch in (10, 53):
        ms = interleaved_ms({label[id(p)]: forward_backward(batch, p) for p in (fp32, fp32_cl, bf16)}, args.repeats,
                            args.warmup)
        a, c, b = ms["fp32"], ms["fp32+CL"], ms["bf16+CL"]
        print(f"{batch:5d} {a:8.1f} {c:8.1f} {b:8.1f} {c / a:8.2f} {b / a:10.2f}")

    layouts = [fp32, fp32_cl, bf16] if args.bf16_steps else [fp32, fp32_cl]
    print(f"\n2. one training step, ms (median of {args.repeats}; for each K every row interleaved); per image ="
          " step / (10 + 10 K) images, relative to a plain step's 10; CL/fp32: the same step in both layouts")
    print(f"{'layout':>9} {'step':>26} {'ms':>9} {'x plain':>8} {'per image x plain':>18} {'CL/fp32':>8}")
    variants = {"exact": (None, False), "sample 1": (1, False), "batched": (None, True)}
    for k in args.past:
        fns = {}
        for p in layouts:
            fns[(label[id(p)], "plain SGD")] = gem_step(0, p)
            for name, (sample, batched) in variants.items():
                fns[(label[id(p)], f"GEM K={k} {name}")] = gem_step(k, p, sample, batched)
        ms = interleaved_ms(fns, args.repeats, args.warmup)
        for (lay, name), v in ms.items():
            plain = ms[(lay, "plain SGD")]
            n_img = 10 if name == "plain SGD" else 10 + k * (1 if "sample 1" in name else 10)
            ratio = f"{v / ms[('fp32', name)]:8.2f}" if lay == "fp32+CL" else f"{'':>8}"
            print(f"{lay:>9} {name:>26} {v:9.1f} {v / plain:8.2f} {(v / n_img) / (plain / 10):18.2f} {ratio}")
    print("\n3. GEM's projection (1.1 M parameters), ms")
    print(f"{'K':>3} {'float32 chunked':>16} {'float64 copy':>13} {'rel. diff':>10}")
    model = ResNet18(20, 2)
    n = sum(q.numel() for q in model.parameters())
    for k in (4, 19):
        torch.manual_seed(k)
        G = torch.randn(k, n)
        g = torch.randn(n) - 0.3 * G.sum(0)
        a = median_ms(lambda: project(g, G, 0.5), args.repeats, args.warmup)
        b = median_ms(lambda: project_float64(g, G, 0.5), args.repeats, args.warmup)
        z, ref = project(g, G, 0.5).double(), project_float64(g, G, 0.5).double()
        print(f"{k:3d} {a:16.1f} {b:13.1f} {float((z - ref).norm() / ref.norm()):10.1e}")

    print("\n4. one GEM step with 4 past tasks (exact), % of CPU self time by operator family (torch.profiler)")
    for p in (fp32, fp32_cl):
        split = profile_split(4, p, max(1, args.repeats // 2))
        print(f"{p.name + ('+CL' if p.channels_last else ''):>9} " + "  ".join(f"{k} {v:.1f}" for k, v in split.items()))


if __name__ == "__main__":
    main()
