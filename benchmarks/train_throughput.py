"""Training throughput of one GPU: images/s of dir7.train's step at several batch sizes.

    python -m benchmarks.train_throughput [--preset dir7-demo] [--cross-mode prefix] [--set depth=11]
        [--batch-sizes 128,256,512] [--compile] [--profile] [--json out.json]

Times exactly the step ``python -m dir7.train`` runs (``dir7.train.training_step``: text
encoding, eq. 17 loss under bf16 autocast, backward, clipping, AdamW, EMA) on pre-rendered
shapes batches, so the data loader is timed on its own (``--workers``). ``--profile``
adds, for the first batch size, the number of GPU kernels per step, the GPU-busy time per
step (if it is far below the wall time, the step is bound by Python/launch overhead) and
the kernels that take the most GPU time.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import time
from pathlib import Path

import torch

from dir7 import DIR7Config, DIR7Model, TextEncoder
from dir7.data import ShapesDataset, shapes_dataloader
from dir7.diffusion import make_scheduler
from dir7.train import TrainConfig, training_step


def batches(cfg: DIR7Config, batch_size: int, n: int, seed: int = 0):
    ds = ShapesDataset("train", seed=seed, image_size=cfg.image_size)
    out = []
    for j in range(n):
        items = [ds[j * batch_size + i] for i in range(batch_size)]
        out.append((torch.stack([x for x, _ in items]).pin_memory(), [c for _, c in items]))
    return out


def time_steps(cfg, enc, batch_size: int, steps: int, warmup: int, compile_model: bool, profile: bool):
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = DIR7Model(cfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as dir7.train does on CUDA
    net = torch.compile(model, dynamic=False) if compile_model else model
    scheduler = make_scheduler("ddpm", cfg.num_train_timesteps, cfg.beta_schedule)
    data = batches(cfg, batch_size, 4)
    gen = torch.Generator().manual_seed(1)

    def one(j):
        images, captions = data[j % len(data)]
        t = torch.randint(0, cfg.num_train_timesteps, (batch_size,), generator=gen)
        noise = torch.randn(images.shape, generator=gen)
        return training_step(net, model, ema, opt, enc, scheduler, images, captions, t, noise,
                             lr=1e-4, ema_decay=0.999, grad_clip=1.0, use_bf16=True, text_pad_multiple=48)

    t0 = time.perf_counter()
    for j in range(warmup):
        one(j)
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for j in range(steps):
        loss, _ = one(j)
    loss.item()
    step_s = (time.perf_counter() - t0) / steps
    result = {"batch": batch_size, "compile": compile_model, "ms_per_step": 1e3 * step_s,
              "images_per_s": batch_size / step_s, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
              "warmup_s": warmup_s}
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        n = 3
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for j in range(n):
                one(j)
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.device_time for e in kernels) / n / 1e3  # ms per step
        result["kernels_per_step"] = len(kernels) / n
        result["gpu_busy_ms_per_step"] = busy
        totals: dict[str, float] = {}
        for e in kernels:
            totals[e.name] = totals.get(e.name, 0.0) + e.device_time / n / 1e3
        result["top_kernels_ms"] = dict(sorted(totals.items(), key=lambda kv: -kv[1])[:12])
    return result


def loader_rate(workers: int, batch_size: int = 256, n: int = 40) -> float:
    loader = shapes_dataloader(batch_size, num_workers=workers)
    it = iter(loader)
    next(it)  # workers started
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    return n * batch_size / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="dir7-demo")
    ap.add_argument("--cross-mode", default="prefix")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="edit a field of the preset's config (repeatable), as dir7.train --set does, e.g. "
                         "--set depth=11 for the shipped shapes model's architecture")
    ap.add_argument("--batch-sizes", default="128,256,512")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile", choices=("no", "yes", "both"), default="no",
                    help="time the eager model, the torch.compile'd one, or both")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--workers", type=int, default=5, help="data-loader workers to time (0: skip)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("train_throughput.py times the GPU training step: no CUDA device found")

    cfg = TrainConfig(preset=args.preset, model_overrides=[f"cross_mode={args.cross_mode}", *args.set]).model_config()
    enc = TextEncoder.from_pretrained(cfg.text_encoder, cfg.max_text_len).cuda()
    rows = []
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    for compile_model in {"no": [False], "yes": [True], "both": [False, True]}[args.compile]:
        for i, bs in enumerate(sizes):
            try:
                row = time_steps(cfg, enc, bs, args.steps, args.warmup, compile_model,
                                 profile=args.profile and i == 0)
            except torch.cuda.OutOfMemoryError:
                row = {"batch": bs, "compile": compile_model, "error": "out of memory"}
            except Exception as e:  # a compile failure is a result too: report it, time the rest
                if not compile_model:
                    raise
                row = {"batch": bs, "compile": True, "error": f"{type(e).__name__}: {str(e)[:300]}"}
            gc.collect()
            torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"device": torch.cuda.get_device_name(), "preset": args.preset, "cross_mode": args.cross_mode,
              "overrides": args.set,
              "rows": rows}
    if args.workers:
        result["loader_images_per_s"] = loader_rate(args.workers)
        print(f"data loader, {args.workers} workers: {result['loader_images_per_s']:.0f} images/s")

    print(f"\n{args.preset} ({args.cross_mode}) training step on {result['device']}")
    print("| batch | compiled | ms/step | images/s | peak GiB |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['batch']} | {r['compile']} | {r['error']} | | |")
        else:
            print(f"| {r['batch']} | {r['compile']} | {r['ms_per_step']:.1f} | {r['images_per_s']:.0f} "
                  f"| {r['peak_mem_gib']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
