"""Networks: the reduced ResNet-18 classifier f_θ (App. B), the inpainting autoencoder A_ξ (App. B, Eq. 4.5)
and EEC's encoding autoencoder (Ayub & Wagner 2021; samc.methods.eec).

The classifier follows GEM's ``model/common.py`` ResNet18(nf=20): BasicBlocks, widths 20/40/80/160,
a 3x3 stem with stride 1, global average pooling and one linear head per task (multi-head,
task id given at train and test time).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """Reduced ResNet-18 (App. B): widths ``nf * (1, 2, 4, 8)``, one linear head per task."""

    def __init__(self, n_tasks: int, classes_per_task: int, nf: int = 20, in_channels: int = 3) -> None:
        super().__init__()
        self.in_planes = nf
        self.conv1 = nn.Conv2d(in_channels, nf, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(nf)
        self.layer1 = self._make_layer(nf, 2, 1)
        self.layer2 = self._make_layer(nf * 2, 2, 2)
        self.layer3 = self._make_layer(nf * 4, 2, 2)
        self.layer4 = self._make_layer(nf * 8, 2, 2)
        self.heads = nn.ModuleList(nn.Linear(nf * 8, classes_per_task) for _ in range(n_tasks))

    def _make_layer(self, planes: int, n_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n_blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def features_map(self, x: torch.Tensor) -> torch.Tensor:
        """Activations A of the last convolutional block (App. D), shape (B, 8nf, H/8, W/8)."""
        out = F.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(out))))

    @staticmethod
    def pool(a: torch.Tensor) -> torch.Tensor:
        """The heads' input from the last block's activations ``a``: average-pooled, (B, 8nf)."""
        return F.adaptive_avg_pool2d(a, 1).flatten(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features f(x) every head reads, (B, 8nf)."""
        return self.pool(self.features_map(x))

    def head(self, a: torch.Tensor, task: int | torch.Tensor) -> torch.Tensor:
        """Logits of task ``task``'s head from the last block's activations ``a``.

        ``task`` is one int for the whole batch or a tensor of per-sample task ids.
        """
        feat = self.pool(a)
        if isinstance(task, int):
            return self.heads[task](feat)
        out = feat.new_empty(feat.shape[0], self.heads[0].out_features)
        for t in torch.unique(task).tolist():
            idx = (task == t).nonzero(as_tuple=True)[0]
            out[idx] = self.heads[t](feat[idx])
        return out

    def forward(self, x: torch.Tensor, task: int | torch.Tensor) -> torch.Tensor:
        return self.head(self.features_map(x), task)


class InpaintAE(nn.Module):
    """Inpainting autoencoder A_ξ (App. B): encoder convs 8/16/32 (BN + LeakyReLU),
    decoder transposed convs 32/16/8 and a 1x1 conv back to the image's channels.

    It refines a coarse completion r = R(x') residually, ``A(r) = clip(r + D(E(r)), 0, 1)``, with
    the last layer initialised to zero so that an untrained A_ξ is the identity on R(x'): a
    few fine-tuning steps (Eq. 4.10) can then only move it away from the rule-based result
    where that lowers the reconstruction error. Inputs whose sides are not multiples of 8
    (84x84 mini-ImageNet) are edge-padded and cropped back.
    """

    def __init__(self, channels: int = 3) -> None:
        super().__init__()

        def down(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, 2, 1), nn.BatchNorm2d(o), nn.LeakyReLU(0.2)]

        def up(i: int, o: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(i, o, 4, 2, 1), nn.BatchNorm2d(o), nn.LeakyReLU(0.2)]

        self.encoder = nn.Sequential(*down(channels, 8), *down(8, 16), *down(16, 32))
        self.decoder = nn.Sequential(*up(32, 32), *up(32, 16), *up(16, 8))
        self.out = nn.Conv2d(8, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        h, w = r.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        x = F.pad(r, (0, pw, 0, ph), mode="replicate") if ph or pw else r
        delta = self.out(self.decoder(self.encoder(x)))[..., :h, :w]
        return (r + delta).clamp(0.0, 1.0)


class LatentAE(nn.Module):
    """EEC's convolutional autoencoder (Ayub & Wagner 2021), sized for a byte budget: two
    stride-2 convs (16, 32 channels, ReLU) and a 1x1 conv to ``latent`` channels give a code of
    ``latent x H/4 x W/4`` values; the decoder mirrors it (1x1 conv, two transposed convs, sigmoid).
    No BatchNorm: a code decodes the same whatever batch it is in. Sides that are not multiples of 4
    are edge-padded and cropped back."""

    def __init__(self, channels: int = 3, latent: int = 4) -> None:
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(nn.Conv2d(channels, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1),
                                     nn.ReLU(), nn.Conv2d(32, latent, 1))
        self.decoder = nn.Sequential(nn.Conv2d(latent, 32, 1), nn.ReLU(), nn.ConvTranspose2d(32, 16, 4, 2, 1),
                                     nn.ReLU(), nn.ConvTranspose2d(16, channels, 4, 2, 1), nn.Sigmoid())

    @staticmethod
    def code_shape(image_shape: tuple[int, int, int], latent: int) -> tuple[int, int, int]:
        """The code's (latent, ⌈H/4⌉, ⌈W/4⌉) for an image (C, H, W)."""
        _, h, w = image_shape
        return latent, -(-h // 4), -(-w // 4)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        return self.encoder(F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x)

    def decode(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.decoder(z)[..., : size[0], : size[1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), tuple(x.shape[-2:]))
