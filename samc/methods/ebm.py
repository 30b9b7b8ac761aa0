"""ebm: Energy-Based Models for continual learning (Li, Du, van de Ven & Mordatch, 2020), multi-head.

The classifier is an energy E_θ(x, y) of an image and a label: a label-conditioned network on the
reduced ResNet-18's pooled features f(x) (FiLM: each class y scales and shifts a hidden layer,
``EnergyHead``), low energy for the right label. Training minimises the contrastive loss whose
negatives are only the classes present in the current batch B (Li et al., Eq. 4):

    L(x, y) = E_θ(x, y) + log Σ_{y' ∈ classes(B)} exp(−E_θ(x, y'))

so the energies of classes absent from the batch (every earlier task's) are never pushed up, which
is what keeps EBM from overwriting old classes without a memory. Prediction: the label of lowest
energy, y* = argmin_y E_θ(x, y).

What the protocol changes (multi-head, task id given, 1 epoch, batch 10): Li et al. predict over
every class seen so far (class-incremental); here the arg-min runs over the classes of the given
task only, as every method here predicts within the task's head. A batch of 10 of a two-class task
holds both classes almost always; a batch with one class has no negative and contributes no
gradient, as in the paper. EBM keeps no memory (0 bytes of the 10-image budget is used). The
per-task linear heads of the shared ResNet-18 are left unused. Under the multi-head protocol the
batch's classes are the task's classes, so the loss is the task's softmax over energies, as
finetune's over its head's logits: what is left of EBM is the shared label-conditioned energy
network. On Split CIFAR-10 it forgets more than per-task heads (results/split-cifar10/table1.md):
after task 4 of seed 0 every test image of tasks 1 and 2 gets the same label (no tied energies, no
dead units): the shared layers, trained on the new classes only, shift the old classes' energies by
label-dependent offsets that a frozen per-task head would not see.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from samc.methods.base import Batch, Method


class EnergyHead(nn.Module):
    """E_θ(x, y) = v · ReLU((W f(x)) ⊙ γ_y + β_y) + c: features ``f`` (B, D), labels (B, K) -> (B, K)."""

    def __init__(self, dim: int, n_classes: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.fc = nn.Linear(dim, hidden)
        self.gamma = nn.Embedding(n_classes, hidden)
        self.beta = nn.Embedding(n_classes, hidden)
        self.out = nn.Linear(hidden, 1)   # γ, β ~ N(0, 1) (nn.Embedding's init): classes differ from the start

    def forward(self, f: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.fc(f)[:, None, :] * self.gamma(labels) + self.beta(labels)
        return self.out(F.relu(h)).squeeze(-1)


def contrastive_loss(energies: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Li et al.'s Eq. 4, batch mean: E(x, y) + log Σ_k exp(−E(x, y'_k)) over the K candidates of
    ``energies`` (B, K), ``target`` (B,) the index of the true label among them."""
    return F.cross_entropy(-energies, target)


def batch_candidates(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the classes present in the batch, sorted; each sample's index among them)."""
    classes = torch.unique(y)
    return classes, torch.searchsorted(classes, y)


class EBM(Method):
    name = "ebm"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        dim = self.model.heads[0].in_features
        self.classes_per_task = self.cfg.dataset.classes_per_task
        self.energy = EnergyHead(dim, self.cfg.dataset.n_tasks * self.classes_per_task).to(self.device)
        self.opt = torch.optim.SGD([*self.model.parameters(), *self.energy.parameters()], lr=self.cfg.train.lr)

    def energies(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """E_θ(x_i, labels_j) for every image and every label of ``labels`` (K,) global ids: (B, K)."""
        return self.energy(self.model.features(x), labels.expand(len(x), -1))

    def observe(self, batch: Batch, t: int) -> float:
        with self.timer("train_step"):
            self.opt.zero_grad(set_to_none=True)          # the trunk's and the energy head's
            classes, target = batch_candidates(batch.y + t * self.classes_per_task)
            loss = contrastive_loss(self.energies(batch.x, classes), target)
            loss.backward()
            self.opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """argmin_y E_θ(x, y) over task t's classes, as task-local labels."""
        labels = torch.arange(self.classes_per_task, device=x.device) + t * self.classes_per_task
        return self.energies(x, labels).argmin(1)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "energy": self.energy.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.energy.load_state_dict(state["energy"])
        super().load_state_dict(state)
