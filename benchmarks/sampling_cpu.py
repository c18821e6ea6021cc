"""CPU timing of DIR-7 sampling: one denoising step, and one whole image at default settings.

    python benchmarks/sampling_cpu.py [--preset dir7-demo] [--checkpoint DIR] [--threads 2]

A denoising step is one forward pass of the batch [unconditional; conditional] (classifier-
free guidance) plus the scheduler update and the state statistics, for one 64x64 image.
Without --checkpoint a randomly initialised model of the preset is timed (same cost).
Whole images are timed three ways, interleaved: the model's defaults (its guidance interval
included, with state statistics: what the demo runs), the same with guidance at every step,
and the defaults without previews and statistics (``stats=False``: what the evaluator runs).
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
    every_step = (0, cfg.num_train_timesteps - 1)

    # per step: time between consecutive streamed events (the first one includes text encoding)
    step_times = []
    for _ in range(2):
        t0 = time.perf_counter()
        for _ev in pipe.steps(prompt, num_inference_steps=20, seed=0, guidance_scale=cfg.default_guidance,
                              guidance_interval=every_step):
            t1 = time.perf_counter()
            step_times.append(t1 - t0)
            t0 = t1
    step = statistics.median(step_times[1:])

    ways = {"defaults": {}, "every step guided": {"guidance_interval": every_step}, "images only": {"stats": False}}
    image_times = {name: [] for name in ways}
    for i in range(args.images):
        for name, kwargs in ways.items():
            t0 = time.perf_counter()
            pipe(prompt, seed=i, **kwargs)  # the model's default sampler, steps and guidance
            image_times[name].append(time.perf_counter() - t0)

    print(f"model: {pipe.info['name']} ({args.preset if not args.checkpoint else cfg.cross_mode}), "
          f"{pipe.model.num_parameters() / 1e6:.1f}M parameters, {cfg.image_size}x{cfg.image_size}, "
          f"{cfg.num_tokens} tokens, {args.threads} threads")
    print(f"one denoising step (guided, batch 2): {1e3 * step:.0f} ms (median of {len(step_times) - 1})")
    interval = "every step" if cfg.default_guidance_interval is None else \
        f"timesteps {cfg.default_guidance_interval[0]}-{cfg.default_guidance_interval[1]}"
    print(f"one image at defaults ({cfg.default_sampler}, {cfg.default_steps} steps, guidance "
          f"{cfg.default_guidance:g} at {interval}): {statistics.median(image_times['defaults']):.2f} s "
          f"(median of {args.images})")
    print(f"  the same, guided at every step: {statistics.median(image_times['every step guided']):.2f} s; "
          f"images only (stats=False): {statistics.median(image_times['images only']):.2f} s")


if __name__ == "__main__":
    main()
