"""DIR-7 against a parameter-matched DiT with cross-attention, in one process, on a GPU or a CPU.

    python -m benchmarks.model_vs_dit --device cuda --out results/benchmarks/model_vs_dit_gpu.json
    python -m benchmarks.model_vs_dit --device cpu --threads 2 --out results/benchmarks/model_vs_dit_cpu.json

The peer is diffusers' ``PixArtTransformer2DModel`` (through ``dir7.dit``, never reimplemented):
DiT blocks with self-attention, cross-attention to the text and adaLN-single, in and out 3
channels, its depth chosen so its parameter count is the nearest to ours (within 5%).

GPU (bf16 autocast; 32 text tokens): ``dir7-s`` (prefix mode) against the DiT at 64x64 pixels
(1024 tokens, batch 64) and 128x128 (4096 tokens, batch 16): the forward and a full training
step (forward, backward, AdamW), eager and ``torch.compile``d, as the median of CUDA-event
timings after warm-up (compiling excluded), with peak memory and images/s.

CPU (float32, ``--threads``): the shipped model against the DiT of its size at its resolution:
one guided forward (batch 2) and one whole image at the shipped sampling defaults (25 dpm++
steps, guidance at timesteps 400-999: 40 network passes) for each, in the same loop
(``DIR7Pipeline`` with ``stats=False``), interleaved, median of ``--images``; plus our image with
the state statistics the demo shows.

The JSON goes to ``--out``; ``python -m benchmarks.render`` turns it into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import dir7
from dir7.dit import DiTConfig, DiTModel
from dir7.pipeline import SHIPPED_CHECKPOINT

GPU_SHAPES = ({"image_size": 64, "batch": 64}, {"image_size": 128, "batch": 16})  # 1024 and 4096 tokens
TEXT_TOKENS = 32
COMMANDS = {
    "gpu": "python -m benchmarks.model_vs_dit --device cuda --out results/benchmarks/model_vs_dit_gpu.json",
    "cpu": "python -m benchmarks.model_vs_dit --device cpu --threads 2 --out results/benchmarks/model_vs_dit_cpu.json",
}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_dit(target: int, base: DiTConfig, max_depth: int = 64) -> DiTConfig:
    """The depth of ``base`` whose parameter count is nearest ``target``, counted on the meta device."""
    def params(depth: int) -> int:
        with torch.device("meta"):
            return count(DiTModel(dataclasses.replace(base, depth=depth)))

    best = min(range(1, max_depth + 1), key=lambda d: abs(params(d) - target))
    cfg = dataclasses.replace(base, depth=best)
    if abs(params(best) - target) > 0.05 * target:
        raise ValueError(f"no DiT depth comes within 5% of {target:,} parameters (best: {best})")
    return cfg


def inputs(cfg, batch: int, device, generator: torch.Generator):
    S = cfg.image_size
    x = torch.randn(batch, cfg.in_channels, S, S, generator=generator).to(device)
    t = torch.randint(0, cfg.num_train_timesteps, (batch,), generator=generator).to(device)
    text = torch.randn(batch, TEXT_TOKENS, cfg.text_dim, generator=generator).to(device)
    mask = torch.ones(batch, TEXT_TOKENS, dtype=torch.bool, device=device)
    return x, t, text, mask


# ---------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------


def cuda_ms(fn, warmup: int = 3, iters: int = 20) -> float:
    """Median milliseconds of ``fn`` by CUDA events, after ``warmup`` calls (compiling happens there)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def time_model(model, cfg, batch: int, device, compiled: bool, timer=cuda_ms) -> dict:
    """Forward (no grad) and training step (forward, backward, AdamW) of one model."""
    g = torch.Generator().manual_seed(0)
    x, t, text, mask = inputs(cfg, batch, device, g)
    noise = torch.randn_like(x)
    net = torch.compile(model) if compiled else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def forward():
        with torch.no_grad(), autocast:
            return net(x, t, text, mask)

    def train_step():
        with autocast:
            loss = F.mse_loss(net(x, t, text, mask).float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {}
    for name, fn in (("forward", forward), ("train_step", train_step)):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        ms = timer(fn)
        out[f"{name}_ms"] = ms
        out[f"{name}_images_per_s"] = batch / (ms / 1e3)
        if device.type == "cuda":
            out[f"{name}_peak_GiB"] = torch.cuda.max_memory_allocated() / 2**30
    return out


CELLS = ("ours_eager", "ours_compiled", "dit_eager", "dit_compiled")


@functools.lru_cache(maxsize=1)
def commit() -> str | None:
    """The code measured: $DIR7_COMMIT where it is set (a copy of the tree sent to a rented GPU
    machine may carry a stale .git, so the sender's word comes first), else ``git rev-parse`` of
    this checkout, else unknown."""
    if os.environ.get("DIR7_COMMIT"):
        return os.environ["DIR7_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return None


def gpu_main(args) -> dict:
    """Time the ``--cells`` at the ``--tokens``; cells already in ``--out`` (from an earlier run of
    other cells: compiling makes the whole table longer than one sitting) are kept beside them."""
    device = torch.device("cuda")
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    old_rows = {r["tokens"]: r for r in old.get("shapes", [])}
    result = {"env": env(device), "shapes": []}
    for shape in GPU_SHAPES:
        ours_cfg = dir7.DIR7Config.from_preset("dir7-s", image_size=shape["image_size"])
        if ours_cfg.num_tokens not in args.tokens:
            if ours_cfg.num_tokens in old_rows:
                result["shapes"].append(old_rows[ours_cfg.num_tokens])
            continue
        torch.manual_seed(0)
        ours = dir7.DIR7Model(ours_cfg).to(device)
        dit_cfg = matched_dit(count(ours), DiTConfig.from_preset("dit-s", image_size=shape["image_size"]))
        dit = DiTModel(dit_cfg).to(device)
        row = {**old_rows.get(ours_cfg.num_tokens, {}), "tokens": ours_cfg.num_tokens, "batch": shape["batch"],
               "ours_params": count(ours), "dit_params": count(dit), "dit_depth": dit_cfg.depth}
        result["shapes"].append(row)
        for name, model, cfg in (("ours", ours, ours_cfg), ("dit", dit, dit_cfg)):
            for compiled in (False, True):
                key = f"{name}_{'compiled' if compiled else 'eager'}"
                if key not in args.cells:
                    continue
                try:
                    row[key] = time_model(model, cfg, shape["batch"], device, compiled)
                except Exception as e:  # report and go on: the other cells still mean something
                    row[key] = {"error": repr(e)}
                row[key]["date"] = result["env"]["date"]
                if commit():
                    row[key]["commit"] = commit()
                print(f"tokens {row['tokens']:5d} {key:14s} {row[key]}", flush=True)
                write(args.out, result)  # after each cell: a run cut off by a time limit keeps what it measured
                torch._dynamo.reset()
        if args.profile:
            row["ours_profile"] = profile(ours, ours_cfg, shape["batch"], device)
        write(args.out, result)
        del ours, dit
        torch.cuda.empty_cache()
    result["shapes"].sort(key=lambda r: r["tokens"])
    return result


def profile(model, cfg, batch: int, device, top: int = 30) -> dict:
    """Where one eager forward and one eager training step of ``model`` spend GPU time: the
    ``top`` kernels by total CUDA time, and the number of kernel launches (the fusion targets)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    g = torch.Generator().manual_seed(0)
    x, t, text, mask = inputs(cfg, batch, device, g)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    out = {}
    for name, grad in (("forward", False), ("train_step", True)):
        def step(grad=grad):
            with torch.set_grad_enabled(grad), autocast:
                y = model(x, t, text, mask)
            if grad:
                y.float().square().mean().backward()
        step()
        torch.cuda.synchronize()
        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
        events.sort(key=lambda e: e.self_device_time_total, reverse=True)
        total = sum(e.self_device_time_total for e in events)
        out[name] = {
            "launches": sum(e.count for e in events), "gpu_ms": total / 1e3,
            "top": [{"kernel": e.key[:120], "calls": e.count, "ms": e.self_device_time_total / 1e3,
                     "share": e.self_device_time_total / max(total, 1)} for e in events[:top]]}
        print(f"profile {name}: {out[name]['launches']} launches, {out[name]['gpu_ms']:.1f} ms GPU", flush=True)
        for e in out[name]["top"]:
            print(f"  {e['ms']:8.2f} ms {e['share']:6.1%} {e['calls']:5d}x {e['kernel']}", flush=True)
        model.zero_grad(set_to_none=True)
    return out


# ---------------------------------------------------------------------------------------
# CPU
# ---------------------------------------------------------------------------------------


def cpu_pipeline(checkpoint: str | None, preset: str | None, overrides: list[str], enc) -> tuple:
    """The DIR-7 pipeline the CPU benchmark times and the name its table gives it: a model folder
    (default: the shipped model), or an architecture (a preset with ``--set`` edits, as
    ``dir7.train`` takes them) with random weights and the shipped model's sampling defaults;
    the time of a forward does not depend on the weights."""
    if preset is None:
        if overrides:
            raise ValueError("--set edits a --preset")
        path = Path(checkpoint) if checkpoint else SHIPPED_CHECKPOINT
        return dir7.DIR7Pipeline.from_pretrained(path, text_encoder=enc), path.name
    if checkpoint:
        raise ValueError("give --checkpoint or --preset, not both")
    from dir7.architectures import build_model
    from dir7.train import TrainConfig

    cfg = TrainConfig(preset=preset, model_overrides=list(overrides)).model_config()
    torch.manual_seed(0)
    _, defaults = dir7.pipeline.load_configs(SHIPPED_CHECKPOINT)
    name = " ".join([preset, *(f"--set {o}" for o in overrides)]) + " (random weights)"
    return dir7.DIR7Pipeline(build_model(cfg).eval(), enc, defaults), name


def cpu_main(args) -> dict:
    torch.set_num_threads(args.threads)
    # the demo's process keeps freed memory (dir7.keep_freed_memory, called by app.py); both models
    # run under the same setting
    allocator = "app" if args.allocator == "app" and dir7.keep_freed_memory() else "default"
    device = torch.device("cpu")
    enc = dir7.TextEncoder.from_pretrained()
    ours, model_name = cpu_pipeline(args.checkpoint, args.preset, args.set, enc)
    defaults = ours.config  # the model's sampling defaults (the shipped ones for a preset), for both models
    dit_cfg = matched_dit(ours.model.num_parameters(), DiTConfig.from_preset(
        "dit-shapes", image_size=ours.model.config.image_size))
    torch.manual_seed(0)
    dit = dir7.DIR7Pipeline(DiTModel(dit_cfg), enc, defaults, name="dit")
    prompt = "a big red circle to the left of a small blue square"
    result = {"env": env(device, args.threads), "model": model_name, "ours_params": ours.model.num_parameters(),
              "dit_params": dit.model.num_parameters(), "dit_depth": dit_cfg.depth,
              "tokens": ours.model.config.num_tokens, "sampling": defaults.to_dict(), "allocator": allocator,
              "commit": commit()}

    # one guided forward: the batch [unconditional; conditional] of one image
    text, mask = enc(["", prompt])
    forwards = {"ours": [], "dit": []}
    with torch.no_grad():
        x, t = torch.randn(2, 3, dit_cfg.image_size, dit_cfg.image_size), torch.full((2,), 500)
        for _ in range(2):  # warm-up (the CPU WKV kernel compiles on first use)
            ours.model(x, t, text, mask), dit.model(x, t, text, mask)
        for _ in range(args.forwards):
            for name, pipe in (("ours", ours), ("dit", dit)):
                t0 = time.perf_counter()
                pipe.model(x, t, text, mask)
                forwards[name].append(1e3 * (time.perf_counter() - t0))
    result["forward_ms"] = {k: statistics.median(v) for k, v in forwards.items()}

    images = {"ours": [], "dit": [], "ours_with_stats": []}
    for seed in range(args.images):
        for name, pipe, stats in (("ours", ours, False), ("dit", dit, False), ("ours_with_stats", ours, True)):
            t0 = time.perf_counter()
            pipe(prompt, seed=seed, stats=stats)
            images[name].append(time.perf_counter() - t0)
    result["image_s"] = {k: statistics.median(v) for k, v in images.items()}
    result["image_s_all"] = images
    print(json.dumps({k: result[k] for k in ("forward_ms", "image_s")}, indent=1))
    return result


def cpu_name() -> str:
    """The processor's model name (two machines of one kind here differed 2x in speed), else the
    architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env(device: torch.device, threads: int | None = None) -> dict:
    e = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        e["gpu"] = torch.cuda.get_device_name()
    else:
        e["cpu"] = cpu_name()
        e["threads"] = threads
    import diffusers

    e["diffusers"] = diffusers.__version__
    return e


# ---------------------------------------------------------------------------------------
# BENCHMARKS.md sections (python -m benchmarks.render)
# ---------------------------------------------------------------------------------------


def _cell(ours: dict | None, dit: dict | None, key: str) -> str:
    if ours is None or dit is None:
        return "not measured"
    if "error" in ours or "error" in dit:
        return "failed (see JSON)"
    return f"{ours[key]:.1f} / {dit[key]:.1f} ms ({dit[key] / ours[key]:.2f}x)"


def markdown_gpu(result: dict) -> str:
    env_ = result["env"]
    lines = ["## DIR-7 against a DiT with cross-attention (GPU)", "",
             f"{env_['gpu']}, {env_['date']}, torch {env_['torch']}, diffusers {env_['diffusers']}; bf16 autocast, "
             f"{TEXT_TOKENS} text tokens; median of CUDA-event timings after warm-up (compiling excluded). "
             "Each cell: ours / DiT, and the DiT's time over ours (above 1: DIR-7 is faster).", "",
             "| tokens (batch) | params ours / DiT (depth) | forward, eager | forward, compiled | train step, eager "
             "| train step, compiled | peak memory, train step, eager ours / DiT |",
             "|---|---|---|---|---|---|---|"]
    for r in result["shapes"]:
        oe, oc, de, dc = (r.get(c) for c in CELLS)
        mem = (f"{oe['train_step_peak_GiB']:.1f} / {de['train_step_peak_GiB']:.1f} GiB"
               if oe and de and "error" not in oe and "error" not in de else "—")
        lines.append(
            f"| {r['tokens']} ({r['batch']}) | {r['ours_params'] / 1e6:.2f}M / {r['dit_params'] / 1e6:.2f}M "
            f"({r['dit_depth']}) | {_cell(oe, de, 'forward_ms')} | {_cell(oc, dc, 'forward_ms')} "
            f"| {_cell(oe, de, 'train_step_ms')} | {_cell(oc, dc, 'train_step_ms')} | {mem} |")
    commits = {}  # commit -> the cells measured at it (cells of separate --cells runs can differ)
    for r in result["shapes"]:
        for c in CELLS:
            if r.get(c, {}).get("commit"):
                commits.setdefault(r[c]["commit"], []).append(f"{c.replace('_', ' ')} at {r['tokens']}")
    if len(commits) > 1:
        lines += ["", "Measured in separate runs: " + "; ".join(
            f"commit {commit}: {', '.join(cells)}" for commit, cells in commits.items()) + "."]
    lines += ["", "```", COMMANDS["gpu"], "```", ""]
    return "\n".join(lines)


def markdown_cpu(result: dict) -> str:
    env_, f, i, s = result["env"], result["forward_ms"], result["image_s"], result["sampling"]
    interval = "every step" if s["guidance_interval"] is None else \
        f"timesteps {s['guidance_interval'][0]}-{s['guidance_interval'][1]}"
    lines = ["## DIR-7 against a DiT with cross-attention (CPU, the demo's path)", "",
             f"{env_['cpu']}, {env_['threads']} threads, {env_['date']}, torch {env_['torch']}, float32"
             + (", freed memory kept by malloc as in the demo (dir7.keep_freed_memory). "
                if result.get("allocator") == "app" else ". ")
             + f"DIR-7 ({result['model']}, {result['ours_params'] / 1e6:.2f}M parameters, "
             f"{result['tokens']} image tokens) against a DiT of {result['dit_params'] / 1e6:.2f}M "
             f"(depth {result['dit_depth']}) at the same resolution, in one process, interleaved.", "",
             "| | DIR-7 | DiT | DiT time / DIR-7 time |", "|---|---|---|---|",
             f"| one guided forward (batch 2) | {f['ours']:.0f} ms | {f['dit']:.0f} ms | {f['dit'] / f['ours']:.2f}x |",
             f"| one image: {s['num_inference_steps']} {s['sampler']} steps, guidance {s['guidance_scale']:g} at "
             f"{interval} | {i['ours']:.2f} s | {i['dit']:.2f} s | {i['dit'] / i['ours']:.2f}x |",
             f"| the same with the state statistics the demo plots | {i['ours_with_stats']:.2f} s | — | — |",
             "", "```", result.get("command", COMMANDS["cpu"]), "```", ""]
    return "\n".join(lines)


def write(path: Path, result: dict) -> None:
    result["command"] = " ".join(["python -m benchmarks.model_vs_dit", *sys.argv[1:]])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "cpu"), required=True)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (CPU only)")
    ap.add_argument("--checkpoint", default=None, help="the DIR-7 model timed on the CPU (default: the shipped one)")
    ap.add_argument("--preset", default=None,
                    help="CPU: time an architecture instead (a model preset, random weights, the shipped sampling "
                         "defaults)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="CPU: edit a field of --preset's config (repeatable), as dir7.train --set does")
    ap.add_argument("--images", type=int, default=3, help="CPU: whole images per model (median)")
    ap.add_argument("--forwards", type=int, default=10, help="CPU: single forwards per model (median)")
    ap.add_argument("--allocator", choices=("app", "default"), default="app",
                    help="CPU: 'app' keeps freed memory as the demo does (dir7.keep_freed_memory), 'default' "
                         "leaves the C library's malloc settings alone")
    ap.add_argument("--profile", action="store_true", help="GPU: also profile our eager forward and step")
    ap.add_argument("--tokens", default="1024,4096", type=lambda v: [int(x) for x in v.split(",")],
                    help="GPU: image token counts to time (comma-separated)")
    ap.add_argument("--cells", default=",".join(CELLS), type=lambda v: v.split(","),
                    help=f"GPU: which of {','.join(CELLS)} to time (the others are kept from --out)")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    if args.device == "cuda" and (set(args.cells) - set(CELLS) or set(args.tokens) - {1024, 4096}):
        print(f"--cells takes {','.join(CELLS)}; --tokens 1024 and/or 4096", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda needs a CUDA GPU", file=sys.stderr)
        return 2
    result = gpu_main(args) if args.device == "cuda" else cpu_main(args)
    write(args.out, result)
    print((markdown_gpu if args.device == "cuda" else markdown_cpu)(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
