"""GEM's projection (samc.gem) against a brute-force solution of the primal problem."""
import itertools

import numpy as np
import quadprog
import pytest
import torch

from samc.gem import GradBuffer, agem_project, memory_gradients_loop, project, project_float64, violated
from samc.models import ResNet18


def brute_force_projection(g: np.ndarray, G: np.ndarray) -> np.ndarray:
    """argmin_z ||z - g||² s.t. G z ≥ 0, by enumerating active sets and checking KKT."""
    best, best_d = None, np.inf
    t = G.shape[0]
    for r in range(t + 1):
        for S in itertools.combinations(range(t), r):
            S = list(S)
            if S:
                GS = G[S]
                lam = -np.linalg.solve(GS @ GS.T, GS @ g)  # KKT: z = g + G_Sᵀλ, λ ≥ 0
                if (lam < -1e-9).any():
                    continue
                z = g + GS.T @ lam
            else:
                z = g.copy()
            if (G @ z < -1e-7).any():
                continue
            d = np.sum((z - g) ** 2)
            if d < best_d:
                best, best_d = z, d
    return best


@pytest.mark.parametrize("seed", range(20))
def test_projection_is_the_closest_feasible_gradient(seed):
    rng = np.random.default_rng(seed)
    t, p = rng.integers(1, 5), 12
    G = rng.normal(size=(t, p))
    g = rng.normal(size=p) - G.sum(0)  # make violations likely
    z = project(torch.tensor(g), torch.tensor(G), margin=0.0, eps=1e-10).numpy()
    assert (G @ z >= -1e-6).all()
    np.testing.assert_allclose(z, brute_force_projection(g, G), atol=1e-6)


@pytest.mark.parametrize("seed", range(10))
def test_projection_with_margin_satisfies_every_constraint(seed):
    rng = np.random.default_rng(100 + seed)
    G = torch.tensor(rng.normal(size=(4, 50)), dtype=torch.float32)
    g = torch.tensor(rng.normal(size=50), dtype=torch.float32) - G.sum(0)
    assert violated(g, G)
    z = project(g, G, margin=0.5, eps=1e-9)
    assert z.dtype == torch.float32
    # active constraints hold to float32 rounding of ⟨g̃_k, z⟩ (relative to |g̃_k||z|)
    assert (G @ z >= -1e-6 * G.norm(dim=1) * z.norm()).all()
    # GEM's default regulariser eps relaxes each constraint by at most eps * v_k (v_k ~ 1 here)
    z = project(g, G, margin=0.5)
    assert (G @ z >= -5e-3).all()


def _project2cone2(g: np.ndarray, G: np.ndarray, margin: float, eps: float) -> np.ndarray:
    """GEM's reference ``project2cone2`` (model/gem.py), in NumPy float64."""
    t = G.shape[0]
    P = G @ G.T
    P = 0.5 * (P + P.T) + np.eye(t) * eps
    v = quadprog.solve_qp(P, -(G @ g), np.eye(t), np.zeros(t) + margin)[0]
    return v @ G + g


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("seed", range(5))
def test_float32_projection_matches_gems_float64_reference_on_random_gradients(seed):
    rng = np.random.default_rng(200 + seed)
    buf = GradBuffer([torch.nn.Parameter(torch.zeros(300)), torch.nn.Parameter(torch.zeros(7, 3))], 5)
    buf.data.copy_(torch.tensor(rng.normal(size=buf.data.shape), dtype=torch.float32))
    G, g = buf.data[:4], buf.data[4] - buf.data[:4].sum(0)
    assert violated(g, G)
    want = _project2cone2(g.double().numpy(), G.double().numpy(), 0.5, 1e-3)
    z = project(g, G, 0.5)
    assert z.dtype == torch.float32
    np.testing.assert_allclose(z.double().numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(project_float64(g, G, 0.5).double().numpy(), want, rtol=1e-6, atol=1e-6)


def test_float32_projection_matches_float64_on_real_resnet_gradients():
    """4 past tasks' memory gradients of the reduced ResNet-18 (1.1 M parameters) and a batch
    gradient made to violate every constraint."""
    torch.manual_seed(0)
    model = ResNet18(5, 2)
    buf = GradBuffer(model.parameters(), 5)
    xs = [torch.rand(10, 3, 32, 32) for _ in range(5)]
    ys = [torch.randint(0, 2, (10,)) for _ in range(5)]
    memory_gradients_loop(model, xs, ys, list(range(5)), buf)
    G = buf.data[:4]
    g = buf.data[4] - 2 * G.sum(0)
    assert (G @ g < 0).all()
    z, ref = project(g, G, 0.5), project_float64(g, G, 0.5)
    assert _rel(z.double().numpy(), ref.double().numpy()) < 2e-6


def test_no_violation_means_no_projection_needed():
    G = torch.eye(3, 5)
    g = torch.tensor([1.0, 2.0, 0.0, -1.0, 3.0])
    assert not violated(g, G)


def test_agem_projection():
    g = torch.tensor([1.0, -2.0])
    ref = torch.tensor([0.0, 1.0])
    z = agem_project(g, ref)
    assert torch.dot(z, ref) == pytest.approx(0.0, abs=1e-7)
    torch.testing.assert_close(z, torch.tensor([1.0, 0.0]))
    ok = torch.tensor([1.0, 1.0])
    assert agem_project(ok, ref) is ok


def test_grad_buffer_round_trip():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model(torch.randn(5, 3)).sum().backward()
    buf = GradBuffer(model.parameters(), 2)
    flat = buf.store(0).clone()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(flat, expected)
    buf.load(flat * 2)
    torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in model.parameters()]), expected * 2)


@pytest.mark.parametrize("n_past", [1, 4])
def test_batched_memory_gradients_equal_the_loop(n_past):
    """One vmapped pass gives GEM's per-task rows of G and the same BatchNorm running statistics."""
    from samc.gem import GradBuffer, batchable, memory_gradients_batched, memory_gradients_loop
    from samc.models import ResNet18

    torch.manual_seed(0)
    model = ResNet18(5, 2).train()
    xs = [torch.rand(10, 3, 32, 32) for _ in range(n_past)]
    ys = [torch.randint(0, 2, (10,)) for _ in range(n_past)]
    tasks = list(range(n_past))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    loop = GradBuffer(model.parameters(), 5)
    memory_gradients_loop(model, xs, ys, tasks, loop)
    after_loop = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(start)
    batched = GradBuffer(model.parameters(), 5)
    if n_past > 1:
        assert batchable(model, xs)
    memory_gradients_batched(model, xs, ys, tasks, batched)
    scale = loop.data.abs().max().item()
    torch.testing.assert_close(batched.data, loop.data, atol=1e-5 * scale, rtol=1e-4)
    assert batched.data[:n_past].abs().sum(1).min() > 0
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, after_loop[k], atol=1e-6, rtol=1e-5, msg=k)


def test_frozen_bn_memory_passes_give_the_same_rows_and_leave_running_stats():
    """memory.update_bn=false: same rows of G (train mode uses batch statistics), running stats untouched."""
    from samc.gem import GradBuffer, bn_stats_frozen, memory_gradients_batched, memory_gradients_loop
    from samc.models import ResNet18

    torch.manual_seed(0)
    model = ResNet18(5, 2).train()
    xs = [torch.rand(10, 3, 32, 32) for _ in range(3)]
    ys = [torch.randint(0, 2, (10,)) for _ in range(3)]
    start = {k: v.clone() for k, v in model.state_dict().items()}
    updated = GradBuffer(model.parameters(), 4)
    memory_gradients_loop(model, xs, ys, [0, 1, 2], updated)
    assert not torch.equal(model.bn1.running_mean, start["bn1.running_mean"])
    for fn in (memory_gradients_loop, memory_gradients_batched):
        model.load_state_dict(start)
        frozen = GradBuffer(model.parameters(), 4)
        with bn_stats_frozen(model):
            fn(model, xs, ys, [0, 1, 2], frozen)
        torch.testing.assert_close(frozen.data, updated.data, atol=1e-5 * updated.data.abs().max().item(), rtol=1e-4)
        for k, v in model.state_dict().items():
            assert torch.equal(v, start[k]), k
        assert model.bn1.momentum == 0.1
