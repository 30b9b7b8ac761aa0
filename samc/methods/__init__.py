"""Continual-learning methods, one module each, registered by name (``train.method``)."""
from __future__ import annotations

from samc.methods.agem import AGEM
from samc.methods.base import Batch, Method, TaskContext
from samc.methods.ebm import EBM
from samc.methods.eec import EEC
from samc.methods.er import ER
from samc.methods.ewc import EWC
from samc.methods.finetune import Finetune
from samc.methods.gem import GEM
from samc.methods.icarl import ICaRL
from samc.methods.lwf import LwF
from samc.methods.mer import MER
from samc.methods.samc import SAMC

METHODS: dict[str, type[Method]] = {m.name: m for m in (Finetune, ER, GEM, AGEM, SAMC, EWC, LwF, ICaRL, MER, EBM, EEC)}

__all__ = ["METHODS", "Batch", "Method", "TaskContext"]
