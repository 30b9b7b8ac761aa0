"""The SAMC authors' code as parameters of samc (issue 16): budget charged in values, completion at
storage, Grad-CAM in train mode, and why their whole-batch admission needs no parameter."""
import collections
import random

import numpy as np
import pytest
import torch

from samc.memory import FifoMemory, encode, record_kept_count
from samc.models import ResNet18
from samc.saliency import grad_cam
from samc.train import Learner, load_tasks, run_stream
from tests.helpers import tiny_config

SMALL = ("dataset.n_tasks=2", "dataset.shapes_train_per_class=30", "dataset.shapes_test_per_class=10",
         "samc.ae_steps=3", "samc.ae_pairs=16", "samc.ae_patience=3", "train.method=samc")


@pytest.fixture(scope="module")
def tasks():
    return load_tasks(tiny_config(*SMALL))


def test_fifo_evicts_by_charge_and_keeps_the_real_bytes():
    fifo = FifoMemory(10)
    for i, charge in enumerate([4, 4, 4]):
        assert fifo.add(b"x" * 7, 0, i, charge=charge)
    assert fifo.indices.tolist() == [1, 2] and fifo.charged == 8 and fifo.nbytes == 14
    assert not fifo.add(b"y", 0, 9, charge=11) and fifo.n_refused == 1
    with pytest.raises(ValueError, match="charge"):
        fifo.add(b"y", 0, 9, charge=-1)


def _authors_admission(batches, budget):
    """model/samc.py of github.com/BaiTheBest/SAMC, restated: the task's first batch always goes in;
    a batch that fits is appended; otherwise the oldest images are released until it fits."""
    mem = collections.deque()
    for i, batch in enumerate(batches):
        need = sum(batch)
        if i == 0:
            mem.extend(batch)
        elif sum(mem) + need <= budget:
            mem.extend(batch)
        else:
            while mem and sum(mem) + need > budget:
                mem.popleft()
            if sum(mem) + need <= budget:
                mem.extend(batch)
    return list(mem)


def test_whole_batch_admission_keeps_the_same_memory_as_the_per_image_fifo():
    rng = random.Random(0)
    for trial in range(200):
        budget = rng.randint(300, 3000)
        batches = [[rng.randint(20, 300) for _ in range(10)] for _ in range(rng.randint(1, 40))]
        if any(sum(b) > budget for b in batches):
            continue                      # the claim is for budgets that hold one batch
        fifo = FifoMemory(budget)
        sizes = [s for b in batches for s in b]
        for i, s in enumerate(sizes):
            fifo.add(b"r", 0, i, charge=s)
        assert [sizes[i] for i in fifo.indices] == _authors_admission(batches, budget), trial


def test_train_mode_grad_cam_updates_batchnorm_statistics_eval_mode_does_not():
    torch.manual_seed(0)
    model = ResNet18(2, 2)
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 2, (8,))
    before = model.bn1.running_mean.clone()
    model.train()
    grad_cam(model, x, 0, y)
    assert torch.equal(model.bn1.running_mean, before) and model.training
    sal = grad_cam(model, x, 0, y, train_mode=True)
    assert not torch.equal(model.bn1.running_mean, before) and model.training
    assert sal.shape == (8, 32, 32) and float(sal.max()) <= 1.0
    assert all(p.grad is None for p in model.parameters())


def test_values_charge_counts_c_per_kept_pixel(tasks, tmp_path):
    cfg = tiny_config(*SMALL, "samc.budget_charge=values")
    run_stream(cfg, tmp_path / "v", progress=False, tasks=tasks)
    learner = Learner.create(cfg)
    learner.load_state_dict(torch.load(tmp_path / "v" / "task_2" / "state.pt", weights_only=False))
    shape = tuple(tasks[0].x_train.shape[1:])
    budget = cfg.memory.images_per_task * int(np.prod(shape))
    for mem in learner.method.memories.values():
        charges = [shape[0] * record_kept_count(r, shape, "sparse") for r in mem.records]
        assert 0 < sum(charges) <= budget
        assert sum(charges) > budget - max(charges) - shape[0] * shape[1] * shape[2]    # full, not sparse


def test_completion_at_storage_is_made_once_and_survives_resume(tasks, tmp_path):
    cfg = tiny_config(*SMALL, "dataset.n_tasks=2", "samc.complete_at=storage")
    full = run_stream(cfg, tmp_path / "full", progress=False, tasks=tasks)
    assert run_stream(cfg, tmp_path / "split", progress=False, tasks=tasks, stop_after=1) == {}
    resumed = run_stream(cfg, tmp_path / "split", progress=False, tasks=tasks)
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    learner = Learner.create(cfg)
    learner.load_state_dict(torch.load(tmp_path / "full" / "task_2" / "state.pt", weights_only=False))
    method = learner.method
    stored = method.completed[0]
    assert stored.shape[0] == len(method.memories[0]) and stored.dtype == torch.float32
    # the autoencoder was tuned again after task 1's memory was stored: a fresh completion differs,
    # the memory the constraint uses does not
    assert torch.equal(method.memory_inputs(0), stored)
    assert not torch.allclose(method.restore(method.memories[0]), stored)


def test_train_mode_grad_cam_runs_on_every_batch(tasks, tmp_path):
    counts = {}
    for mode in ("eval", "train"):
        cfg = tiny_config(*SMALL, "dataset.n_tasks=1", f"samc.gradcam_mode={mode}", "samc.completion=rule")
        learner = Learner.create(cfg)
        run_stream(cfg, tmp_path / mode, progress=False, tasks=tasks[:1])
        learner.load_state_dict(torch.load(tmp_path / mode / "task_1" / "state.pt", weights_only=False))
        counts[mode] = int(learner.model.bn1.num_batches_tracked)
    steps = -(-len(tasks[0].y_train) // 10)
    assert counts["train"] - counts["eval"] == steps          # one more BatchNorm update per batch
