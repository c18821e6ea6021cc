"""The eps-prediction loss of a checkpoint at fixed timesteps, on a batch of shapes scenes.

    python benchmarks/loss_by_timestep.py [--checkpoint DIR] [--batch 32] [--seed 5]
        [--timesteps 10,100,300,500,700,900,990]

Shows where in the noise schedule the plain eq. 17 loss (and so its gradient) sits, and the
weight Min-SNR-gamma (``dir7.train --snr-gamma``) would give each timestep. Runs on the CPU in
well under a minute.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dir7 import DIR7Pipeline, diffusion_loss, make_scheduler
from dir7.data import ShapesDataset, collate
from dir7.diffusion import min_snr_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="pipeline checkpoint (default: the shipped model)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--timesteps", default="10,100,300,500,700,900,990")
    ap.add_argument("--snr-gamma", type=float, default=5.0)
    args = ap.parse_args()

    pipe = DIR7Pipeline.from_pretrained(args.checkpoint)
    model, enc, cfg = pipe.model, pipe.text_encoder, pipe.model.config
    images, captions = collate([ShapesDataset("train", seed=args.seed, image_size=cfg.image_size)[i]
                                for i in range(args.batch)])
    text, mask = enc(list(captions))
    sched = make_scheduler("ddpm", cfg.num_train_timesteps, cfg.beta_schedule)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(args.seed))

    print(f"| t | abar | SNR | eps MSE | Min-SNR-{args.snr_gamma:g} weight |")
    print("|---|---|---|---|---|")
    with torch.no_grad():
        for step in (int(s) for s in args.timesteps.split(",")):
            t = torch.full((args.batch,), step)
            mse = float(diffusion_loss(model, images, text, mask, sched, t=t, noise=noise))
            abar = float(sched.alphas_cumprod[step])
            weight = float(min_snr_weights(t[:1], sched.alphas_cumprod, args.snr_gamma))
            print(f"| {step} | {abar:.4f} | {abar / (1 - abar):.3g} | {mse:.5f} | {weight:.3g} |")


if __name__ == "__main__":
    main()
