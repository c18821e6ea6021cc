"""The eps-prediction loss of a model at fixed timesteps, and how much of it the text explains.

    python -m dir7.eval loss-by-timestep [--checkpoint DIR] [--data shapes | emoji:DIR | FOLDER]
        [--batch 32] [--seed 5] [--timesteps 10,100,300,500,700,900,990]

Shows where in the noise schedule the plain eq. 17 loss (and so its gradient) sits, and the
weight Min-SNR-gamma (``dir7.train --snr-gamma``) would give each timestep. The same noisy
images are also denoised with each image's caption swapped for the next image's: the text
gain, ``MSE(swapped) / MSE(own) - 1``, says how much the model uses its prompt at that noise
level (about 0 for a model that ignores the text; it grows first at high t, where the layout
is decided). A cheap check of a training run's text path, long before a benchmark can tell.
Runs on the CPU in about a minute at the default batch (two passes per timestep).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--checkpoint", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--data", default="shapes",
                    help="training images and captions, as dir7.train's --data: 'shapes', 'emoji:DIR' "
                         "(a built emoji set) or a folder of images")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--timesteps", default="10,100,300,500,700,900,990")
    ap.add_argument("--snr-gamma", type=float, default=5.0)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--out", default=None, help="also write the rows, with the settings, to this JSON file")


def _batch(data: str, n: int, seed: int, image_size: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` training pairs: the first scenes of a seed, or a seeded sample of a finite set."""
    from ..data import ShapesDataset, collate, training_dataset

    ds = training_dataset(data, image_size, seed=seed)
    if isinstance(ds, ShapesDataset):
        picks = range(n)
    else:
        picks = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    return collate([ds[i] for i in picks])


def run(args: argparse.Namespace) -> list[dict]:
    from ..diffusion import diffusion_loss, make_scheduler, min_snr_weights
    from ..pipeline import DIR7Pipeline

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but no CUDA GPU is available")
    if args.batch < 2:
        raise SystemExit("error: --batch must be at least 2 (the text gain swaps captions between images)")
    try:
        steps = [int(s) for s in args.timesteps.split(",")]
        pipe = DIR7Pipeline.from_pretrained(args.checkpoint).to(args.device)
        model, enc, cfg = pipe.model, pipe.text_encoder, pipe.model.config
        images, captions = _batch(args.data, args.batch, args.seed, cfg.image_size)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    images = images.to(args.device)
    text, mask = enc(captions)
    # image i gets the caption of the next image whose caption differs (a repeated caption would
    # be no swap at all and pull the gain toward 0)
    n = len(captions)
    others = [next((captions[(i + j) % n] for j in range(1, n) if captions[(i + j) % n] != c), None)
              for i, c in enumerate(captions)]
    if None in others:
        raise SystemExit("error: every image of the batch has the same caption: nothing to swap")
    swapped_text, swapped_mask = enc(others)
    sched = make_scheduler("ddpm", cfg.num_train_timesteps, cfg.beta_schedule)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(args.seed))

    if not all(0 <= s < cfg.num_train_timesteps for s in steps):
        raise SystemExit(f"error: timesteps must lie in 0..{cfg.num_train_timesteps - 1}, got {steps}")
    print(f"| t | abar | SNR | eps MSE | Min-SNR-{args.snr_gamma:g} weight | MSE, swapped captions | text gain |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    with torch.no_grad():
        for step in steps:
            t = torch.full((args.batch,), step)
            mse = float(diffusion_loss(model, images, text, mask, sched, t=t, noise=noise))
            swapped = float(diffusion_loss(model, images, swapped_text, swapped_mask, sched, t=t, noise=noise))
            gain = swapped / mse - 1
            abar = float(sched.alphas_cumprod[step])
            weight = float(min_snr_weights(t[:1], sched.alphas_cumprod, args.snr_gamma))
            print(f"| {step} | {abar:.4f} | {abar / (1 - abar):.3g} | {mse:.5f} | {weight:.3g} | {swapped:.5f} "
                  f"| {100 * gain:+.1f}% |")
            rows.append({"t": step, "abar": abar, "eps_mse": mse, "min_snr_weight": weight,
                         "eps_mse_swapped_text": swapped, "text_gain": gain})
    if args.out:
        settings = {k: getattr(args, k) for k in ("checkpoint", "data", "batch", "seed", "device")}
        Path(args.out).write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    return rows
