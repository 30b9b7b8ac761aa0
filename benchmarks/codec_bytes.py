"""Bytes per image and reconstruction error of every memory codec on real images (issue 17).

    python benchmarks/codec_bytes.py --root data/cifar10/train --n 200 [--mu 0.6]

Reads every ``len(files) // n``-th image of an ImageFolder (sorted paths), encodes each with every
codec of samc.memory.codecs at its default parameters, and prints bytes per image, images per
budget of 10 raw images, and the MSE (pixels in [0, 1]) over all pixels and over the pixels the
codec reports as known. Saliency codecs get a centred disc mask keeping ~(1 - mu) of the pixels
(no classifier here: their bytes depend on the kept fraction, their fidelity on the mask's place).
A learned codec (``latent``, EEC's) first trains its autoencoder on the same images (``--ae-steps``
Adam steps of 10 images, reconstruction loss only: its error here is in-sample), and its images per
budget are charged the autoencoder's bytes amortised over ``--tasks`` tasks."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from samc.memory import CODECS, Codec, get_codec

log = logging.getLogger("codec_bytes")


def fit_learned(codec: Codec, images: np.ndarray, steps: int) -> None:
    """Attach a LatentAE to ``codec`` and train it on ``images`` (uint8 N, C, H, W)."""
    import torch
    import torch.nn.functional as F

    from samc.models import LatentAE

    torch.manual_seed(0)
    ae = LatentAE(images.shape[1], int(codec.values["latent"]))
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
    x = torch.from_numpy(images).float().div_(255.0)
    for i in range(steps):
        batch = x[(torch.arange(10) + 10 * i) % len(x)]
        opt.zero_grad()
        F.mse_loss(ae(batch), batch).backward()
        opt.step()
    codec.attach(ae.eval())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="an ImageFolder (class folders of images)")
    ap.add_argument("--n", type=int, default=200, help="images to read (evenly spaced)")
    ap.add_argument("--mu", type=float, default=0.6, help="saliency codecs keep about 1 - mu of the pixels")
    ap.add_argument("--ae-steps", type=int, default=1000, help="training steps of a learned codec's autoencoder")
    ap.add_argument("--tasks", type=int, default=5, help="tasks a learned codec's autoencoder is amortised over")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    files = sorted(p for p in Path(args.root).rglob("*") if p.is_file())
    if not files:
        ap.error(f"--root {args.root}: no image files")
    files = files[:: max(1, len(files) // args.n)][: args.n]
    images = np.stack([np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1) for f in files])
    _, c, h, w = images.shape
    yy, xx = np.mgrid[:h, :w]
    r2 = ((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2)
    mask = r2 <= np.quantile(r2, 1 - args.mu)
    budget = 10 * c * h * w
    log.info("%d images of %s from %s; saliency mask keeps %.2f of the pixels", len(images), (c, h, w),
             args.root, mask.mean())
    log.info("| codec | B/image | images / budget of 10 | MSE all | MSE known |")
    log.info("| --- | --- | --- | --- | --- |")
    for name in CODECS:
        codec = get_codec(name)
        shared = 0
        if codec.learned:
            fit_learned(codec, images, args.ae_steps)
            shared = -(-codec.model_nbytes() // args.tasks)
            log.info("(%s: its autoencoder's %d B, amortised over %d tasks: %d B of each budget)", name,
                     codec.model_nbytes(), args.tasks, shared)
        sizes, err, err_known = [], [], []
        for x in images:
            record = codec.encode(x, mask)
            y, known = codec.decode(record, x.shape)
            d = ((y.astype(np.float64) - x) / 255.0) ** 2
            sizes.append(len(record))
            err.append(d.mean())
            err_known.append(d[:, known].mean() if known.any() else 0.0)
        mean = float(np.mean(sizes))
        log.info("| %s | %.0f | %.0f | %.5f | %.5f |", name, mean, (budget - shared) / mean, np.mean(err), np.mean(err_known))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
