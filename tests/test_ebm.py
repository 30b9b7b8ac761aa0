"""EBM (samc.methods.ebm): the contrastive loss takes its negatives only from the current batch's
classes, prediction is the arg-min energy over the task's classes, and a run resumes bit for bit."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from samc.methods import METHODS, Batch
from samc.methods.ebm import batch_candidates, contrastive_loss
from samc.models import ResNet18
from samc.timing import PhaseTimer
from samc.train import run_stream
from tests.helpers import tiny_config


def _ebm(n_tasks=2, classes_per_task=5):
    cfg = tiny_config(f"dataset.n_tasks={n_tasks}", f"dataset.classes_per_task={classes_per_task}", "train.method=ebm")
    torch.manual_seed(0)
    return METHODS["ebm"](ResNet18(n_tasks, classes_per_task), cfg, torch.device("cpu"), PhaseTimer())


def _batch(y):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(len(y), 3, 32, 32, generator=gen)
    raw = (x * 255).round().to(torch.uint8).numpy()
    return Batch(x=x, y=torch.tensor(y), raw=raw, index=np.arange(len(y)), position=0)


def test_the_loss_is_eq_4_over_the_batch_classes_only():
    m = _ebm()
    batch = _batch([0, 0, 3, 0])                      # task 1 (classes 5..9): global labels 5, 5, 8, 5
    classes, target = batch_candidates(batch.y + 5)
    assert classes.tolist() == [5, 8] and target.tolist() == [0, 0, 1, 0]
    energies = m.energies(batch.x, classes)
    by_hand = (energies[torch.arange(4), target] + torch.logsumexp(-energies, dim=1)).mean()
    torch.testing.assert_close(contrastive_loss(energies, target), by_hand)

    before = {name: p.detach().clone() for name, p in m.energy.named_parameters()}
    m.observe(batch, t=1)                              # one SGD step on the hand-made batch
    for name in ("gamma.weight", "beta.weight"):       # label embeddings: only the batch's rows move
        moved = (m.energy.get_parameter(name) != before[name]).any(dim=1).nonzero().flatten().tolist()
        assert moved == [5, 8], name
    assert (m.energy.fc.weight != before["fc.weight"]).any()


def test_a_batch_of_one_class_has_no_negative_and_no_gradient():
    m = _ebm()
    batch = _batch([2, 2, 2])
    classes, target = batch_candidates(batch.y)
    loss = contrastive_loss(m.energies(batch.x, classes), target)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in [*m.model.parameters(), *m.energy.parameters()])


def test_prediction_is_the_arg_min_energy_over_the_tasks_classes():
    m = _ebm()
    x = _batch(list(range(5)) * 8).x
    m.model.eval()
    energies = m.energies(x, torch.arange(5, 10))     # task 1's classes
    pred = m.predict(x, 1)
    assert torch.equal(pred, energies.argmin(1))
    assert not torch.equal(pred, energies.argmax(1))  # the test tells arg-min from arg-max
    assert int(pred.max()) < 5                         # task-local labels


def test_ebm_resumes_after_task_1_bit_for_bit(tmp_path):
    cfg = tiny_config("dataset.n_tasks=2", "dataset.shapes_train_per_class=30", "train.method=ebm")
    whole = run_stream(cfg, tmp_path / "whole", progress=False)
    run_stream(cfg, tmp_path / "split", progress=False, stop_after=1)
    resumed = run_stream(cfg, tmp_path / "split", progress=False)
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    row = json.loads((tmp_path / "whole" / "task_2" / "metrics.json").read_text())
    assert row["memory_held"] == {"n_images": 0, "nbytes": 0}
