"""agem: Averaged GEM (Chaudhry et al. 2019): one constraint, on the gradient of a random sample
of all past memories, with the closed-form projection of samc.gem.agem_project."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from samc.gem import agem_project
from samc.methods.base import Batch
from samc.methods.gem import GEM


class AGEM(GEM):
    name = "agem"

    def observe(self, batch: Batch, t: int) -> float:
        model = self.model
        g_ref = None
        if self.mem_x:
            with self.timer("memory_grads"):
                xs = torch.cat([self.mem_x[k] for k in sorted(self.mem_x)])
                ys = torch.cat([self.mem_y[k] for k in sorted(self.mem_x)])
                ts = torch.cat([torch.full_like(self.mem_y[k], k) for k in sorted(self.mem_x)])
                n = min(self.cfg.memory.agem_ref_size, len(ys))
                pick = torch.randperm(len(ys), generator=self.generator)[:n].to(self.device)
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(xs[pick], ts[pick]), ys[pick]).backward()
                g_ref = self.grads.store(0)
        with self.timer("train_step"):
            model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(batch.x, t), batch.y)
            loss.backward()
        if g_ref is not None:
            with self.timer("qp"):
                g = self.grads.store(1)
                projected = agem_project(g, g_ref)
                self.stats["constrained_steps"] += 1
                if projected is not g:
                    self.stats["projected_steps"] += 1
                    self.grads.load(projected)
        with self.timer("train_step"):
            self.opt.step()
        self.remember(batch, t)
        return float(loss.detach())
