"""A learned memory codec's model, for the replay methods that store through one (``memory.codec =
latent``: ER and MER; EEC owns its own, samc.methods.eec).

The ``latent`` codec's records read back only with the autoencoder that wrote them, so the method
trains that autoencoder on the stream (one Adam step of the reconstruction loss per training
batch, on the batch and as many replayed images) and, at each task end, rounds it to the float16
it is charged at and re-encodes every record it holds with it: records are always those of the
autoencoder saved with the task, and a resumed run decodes them to the same images."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from samc.memory.codecs.latent import STATE_KEY, Latent
from samc.models import LatentAE

def round_to_stored(ae: LatentAE) -> None:
    """Round the parameters to float16 in place: the autoencoder as charged and saved."""
    with torch.no_grad():
        for p in ae.parameters():
            p.copy_(p.half().float())


class CodecModel:
    """The autoencoder of a method's ``latent`` codec, its optimiser and its training step."""

    def __init__(self, codec: Latent, channels: int, lr: float, device: torch.device) -> None:
        self.ae = LatentAE(channels, int(codec.values["latent"])).to(device)
        self.opt = torch.optim.Adam(self.ae.parameters(), lr=lr)
        codec.attach(self.ae)

    def step(self, x: torch.Tensor) -> float:
        """One Adam step of ‖D(E(x)) − x‖² on float images x (N, C, H, W) in [0, 1]."""
        self.opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(self.ae(x).float(), x.float())
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {STATE_KEY: self.ae.state_dict(), f"{STATE_KEY}_optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ae.load_state_dict(state[STATE_KEY])
        self.opt.load_state_dict(state[f"{STATE_KEY}_optimizer"])
