"""GEM's gradient constraint and its projection (Eq. 3.2, 4.7–4.9; Lopez-Paz & Ranzato 2017), and A-GEM's.

g is the current batch's gradient, G stacks one row g̃_k per past task k (the gradient of the loss
on that task's completed memory M̃_k, Eq. 4.8). When some ⟨g, g̃_k⟩ < 0 (Lemma 4.1, Eq. 4.9), g is
replaced by the closest vector in L2 that satisfies every constraint, found through GEM's dual QP
    min_v ½ vᵀ G Gᵀ v + gᵀ Gᵀ v   s.t. v ≥ margin,   g̃ = Gᵀ v + g,
solved with ``quadprog`` (margin = ``memory_strength``; margin 0 gives the exact projection).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import numpy as np
import quadprog
import torch
import torch.nn.functional as F


class GradBuffer:
    """A float32 buffer holding flattened parameter gradients, allocated once (one row per slot)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], n_rows: int) -> None:
        self.params = list(params)
        self.sizes = [p.numel() for p in self.params]
        device = self.params[0].device
        self.data = torch.zeros(n_rows, sum(self.sizes), device=device, dtype=torch.float32)

    def store(self, row: int) -> torch.Tensor:
        """Copy the parameters' current ``.grad`` into row ``row`` (zeros where a grad is None)."""
        out = self.data[row]
        off = 0
        for p, n in zip(self.params, self.sizes):
            if p.grad is None:
                out[off:off + n].zero_()
            else:
                out[off:off + n].copy_(p.grad.reshape(-1))
            off += n
        return out

    def load(self, vec: torch.Tensor) -> None:
        """Write a flat gradient back into the parameters' ``.grad``."""
        off = 0
        for p, n in zip(self.params, self.sizes):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(vec[off:off + n].view_as(p))
            off += n


@contextlib.contextmanager
def bn_stats_frozen(model: torch.nn.Module, frozen: bool = True) -> Iterator[None]:
    """Within the block, train-mode BatchNorm normalises with batch statistics as usual but leaves its
    running statistics (and counter) untouched (``memory.update_bn: false``)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)] if frozen else []
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(bns, saved):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def violated(g: torch.Tensor, G: torch.Tensor) -> bool:
    """True when some constraint ⟨g, g̃_k⟩ ≥ 0 of Eq. 4.9 fails."""
    return bool((G @ g < 0).any())


def project(g: torch.Tensor, G: torch.Tensor, margin: float = 0.5, eps: float = 1e-3) -> torch.Tensor:
    """GEM's projection (Eq. 4.7–4.9 via GEM's dual QP): the g̃ closest to g with ⟨g̃, g̃_k⟩ ≥ 0 ∀k.

    G·Gᵀ and G·g are float32 products on G's device (no copy of G); only the K×K problem leaves it,
    in float64 for the solver, regularised by ``eps`` as GEM's reference code does (``project2cone2``).
    g̃ = Gᵀv + g is formed in float32 again (tests/test_gem.py: equal to the all-float64 projection
    to ~1e-6 relative on random and real gradients).
    """
    G, g = G.detach(), g.detach()
    GGt, Gg = products(G, g)
    v = _dual(GGt, Gg, margin, eps)
    return v.to(G) @ G + g


def products(G: torch.Tensor, g: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """G·Gᵀ and G·g as float32 products over chunks of ``chunk`` coordinates whose partial sums are
    added in float64: one float32 GEMM over 1.1 M coordinates loses ~5e-4 of GGᵀ's diagonal (the
    sequential accumulation), the chunked sum keeps it at float32's ~1e-7, still without a float64
    copy of G."""
    K, n = G.shape
    A = torch.cat([G, g.unsqueeze(0)])
    m = n // chunk * chunk
    head = A[:, :m].reshape(K + 1, m // chunk, chunk).transpose(0, 1)      # (chunks, K+1, chunk)
    total = torch.bmm(head, head.transpose(1, 2)).double().sum(0)
    if m < n:
        tail = A[:, m:]
        total += (tail @ tail.T).double()
    return total[:K, :K], total[:K, K]


def project_float64(g: torch.Tensor, G: torch.Tensor, margin: float = 0.5, eps: float = 1e-3) -> torch.Tensor:
    """:func:`project` with G and g copied to float64 first (GEM's reference code): the reference
    the float32 version is tested against."""
    mem, grad = G.detach().double(), g.detach().double()
    v = _dual(mem @ mem.T, mem @ grad, margin, eps)
    return (v.to(mem) @ mem + grad).to(g.dtype)


def _dual(GGt: torch.Tensor, Gg: torch.Tensor, margin: float, eps: float) -> torch.Tensor:
    """GEM's dual QP in float64 on the CPU: argmin_v ½ vᵀ(GGᵀ + εI)v + (Gg)ᵀv s.t. v ≥ margin."""
    P = GGt.double().cpu().numpy()
    t = P.shape[0]
    P = 0.5 * (P + P.T) + np.eye(t) * eps
    q = -Gg.double().cpu().numpy()
    return torch.from_numpy(quadprog.solve_qp(P, q, np.eye(t), np.zeros(t) + margin)[0])


def agem_project(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """A-GEM's single-constraint projection (Chaudhry et al. 2019): g − (gᵀg_ref / g_refᵀg_ref) g_ref
    when gᵀg_ref < 0, else g."""
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g
    return g - (dot / torch.dot(g_ref, g_ref).clamp_min(1e-12)) * g_ref


# --------------------------------------------------------------------------------------------------
# The rows of G (Eq. 4.8): one gradient per past task's memory
# --------------------------------------------------------------------------------------------------
def memory_gradients_loop(model: torch.nn.Module, xs: list[torch.Tensor], ys: list[torch.Tensor],
                          tasks: list[int], grads: GradBuffer) -> None:
    """G's rows as GEM's reference code computes them: one train-mode forward/backward per past task,
    in order (BatchNorm's running statistics see the memories one after another)."""
    for row, (x, y, k) in enumerate(zip(xs, ys, tasks)):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x, k), y).backward()
        grads.store(row)


class _TaskIndexedHeads(torch.nn.Module):
    """``model`` with its heads selected by a tensor task id (a form ``torch.func.vmap`` can batch)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        feat = self.model.features(x)
        weight = torch.stack([h.weight for h in self.model.heads]).index_select(0, task.reshape(1))[0]
        bias = torch.stack([h.bias for h in self.model.heads]).index_select(0, task.reshape(1))[0]
        return F.linear(feat, weight, bias)


def batchable(model: torch.nn.Module, xs: list[torch.Tensor]) -> bool:
    """Whether :func:`memory_gradients_batched` applies: equal-sized memories, BatchNorm with a momentum."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    return (len(xs) > 1 and len({tuple(x.shape) for x in xs}) == 1
            and all(m.momentum is not None and m.track_running_stats for m in bns))


def memory_gradients_batched(model: torch.nn.Module, xs: list[torch.Tensor], ys: list[torch.Tensor],
                             tasks: list[int], grads: GradBuffer) -> None:
    """The same rows as :func:`memory_gradients_loop` from one vmapped pass (``torch.func``).

    Each past task k gets its own copy of the BatchNorm buffers, so its batch statistics b_k are its
    own; the sequential running-statistics update r ← (1−m) r + m b_k over k = 1..K is then applied
    in closed form, r_K = (1−m)^K r + Σ_k (1−m)^(K−k) m b_k, with m b_k = r'_k − (1−m) r read off
    each copy r'_k. Equal to the loop up to float rounding (tests/test_gem.py).
    """
    wrapper = _TaskIndexedHeads(model)
    names = [n for n, _ in wrapper.named_parameters()]
    params = {n: p.detach() for n, p in wrapper.named_parameters()}
    K = len(xs)
    buffers = {n: b.unsqueeze(0).expand(K, *b.shape).clone() for n, b in wrapper.named_buffers()}

    def loss(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(torch.func.functional_call(wrapper, {**p, **b}, (x, k)), y)

    task_ids = torch.as_tensor(tasks, device=xs[0].device)
    g = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0, 0, 0))(
        params, buffers, torch.stack(xs), torch.stack(ys), task_ids)
    off = 0
    for n in names:
        size = params[n].numel()
        grads.data[:K, off:off + size].copy_(g[n].reshape(K, -1))
        off += size
    # BatchNorm running statistics, as if the K memories had been passed one after another
    modules = dict(wrapper.named_modules())
    with torch.no_grad():
        for name, b in wrapper.named_buffers():
            mod_name, _, attr = name.rpartition(".")
            if attr == "num_batches_tracked":
                b.add_(K)
                continue
            m = modules[mod_name].momentum
            r0 = b.clone()
            b.mul_((1 - m) ** K)
            for i in range(K):
                b.add_((buffers[name][i] - (1 - m) * r0) * (1 - m) ** (K - 1 - i))
