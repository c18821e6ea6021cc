"""CPU timing of DIR-7 sampling: one denoising step, and one whole image at default settings.

    python benchmarks/sampling_cpu.py [--preset dir7-demo] [--checkpoint DIR] [--threads 2]

A denoising step is one forward pass of the batch [unconditional; conditional] (classifier-
free guidance) plus the scheduler update and the state statistics, for one 64x64 image.
Without --checkpoint a randomly initialised model of the preset is timed (same cost).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import dir7


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="dir7-demo")
    ap.add_argument("--checkpoint", type=Path, help="time a saved model instead of a random one")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=3, help="whole images to time (median reported)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.checkpoint:
        pipe = dir7.DIR7Pipeline.from_pretrained(args.checkpoint)
    else:
        pipe = dir7.DIR7Pipeline.from_config(dir7.DIR7Config.from_preset(args.preset))
    cfg = pipe.model.config
    prompt = "a big red circle to the left of a small blue square"

    # per step: time between consecutive streamed events (the first one includes text encoding)
    step_times = []
    for _ in range(2):
        t0 = time.perf_counter()
        for _ev in pipe.steps(prompt, num_inference_steps=20, seed=0, guidance_scale=cfg.default_guidance):
            t1 = time.perf_counter()
            step_times.append(t1 - t0)
            t0 = t1
    step = statistics.median(step_times[1:])

    image_times = []
    for i in range(args.images):
        t0 = time.perf_counter()
        pipe(prompt, seed=i)  # the model's default sampler, steps and guidance
        image_times.append(time.perf_counter() - t0)

    print(f"model: {pipe.info['name']} ({args.preset if not args.checkpoint else cfg.cross_mode}), "
          f"{pipe.model.num_parameters() / 1e6:.1f}M parameters, {cfg.image_size}x{cfg.image_size}, "
          f"{cfg.num_tokens} tokens, {args.threads} threads")
    print(f"one denoising step (guided, batch 2): {1e3 * step:.0f} ms (median of {len(step_times) - 1})")
    print(f"one image at defaults ({cfg.default_sampler}, {cfg.default_steps} steps, guidance "
          f"{cfg.default_guidance:g}): {statistics.median(image_times):.2f} s (median of {args.images})")


if __name__ == "__main__":
    main()
