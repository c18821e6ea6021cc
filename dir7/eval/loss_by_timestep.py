"""The eps-prediction loss of a model at fixed timesteps, on a batch of shapes scenes.

    python -m dir7.eval loss-by-timestep [--checkpoint DIR] [--batch 32] [--seed 5]
        [--timesteps 10,100,300,500,700,900,990]

Shows where in the noise schedule the plain eq. 17 loss (and so its gradient) sits, and the
weight Min-SNR-gamma (``dir7.train --snr-gamma``) would give each timestep. Runs on the CPU in
well under a minute.
"""

from __future__ import annotations

import argparse

import torch


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--checkpoint", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--timesteps", default="10,100,300,500,700,900,990")
    ap.add_argument("--snr-gamma", type=float, default=5.0)


def run(args: argparse.Namespace) -> list[dict]:
    from ..data import ShapesDataset, collate
    from ..diffusion import diffusion_loss, make_scheduler, min_snr_weights
    from ..pipeline import DIR7Pipeline

    try:
        steps = [int(s) for s in args.timesteps.split(",")]
        pipe = DIR7Pipeline.from_pretrained(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    model, enc, cfg = pipe.model, pipe.text_encoder, pipe.model.config
    images, captions = collate([ShapesDataset("train", seed=args.seed, image_size=cfg.image_size)[i]
                                for i in range(args.batch)])
    text, mask = enc(list(captions))
    sched = make_scheduler("ddpm", cfg.num_train_timesteps, cfg.beta_schedule)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(args.seed))

    if not all(0 <= s < cfg.num_train_timesteps for s in steps):
        raise SystemExit(f"error: timesteps must lie in 0..{cfg.num_train_timesteps - 1}, got {steps}")
    print(f"| t | abar | SNR | eps MSE | Min-SNR-{args.snr_gamma:g} weight |")
    print("|---|---|---|---|---|")
    rows = []
    with torch.no_grad():
        for step in steps:
            t = torch.full((args.batch,), step)
            mse = float(diffusion_loss(model, images, text, mask, sched, t=t, noise=noise))
            abar = float(sched.alphas_cumprod[step])
            weight = float(min_snr_weights(t[:1], sched.alphas_cumprod, args.snr_gamma))
            print(f"| {step} | {abar:.4f} | {abar / (1 - abar):.3g} | {mse:.5f} | {weight:.3g} |")
            rows.append({"t": step, "abar": abar, "eps_mse": mse, "min_snr_weight": weight})
    return rows
