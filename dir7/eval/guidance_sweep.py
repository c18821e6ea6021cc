"""ShapesEval over guidance scales and intervals: chosen on validation seeds, scored on the test seeds.

    python -m dir7.eval guidance-sweep --out sweep.json \\
        --guidance 2.5 4 6 9 --intervals all 400,999 600,999 800,999 200,799 \\
        --val-seeds 100 101 --test-seeds 0 1 2 3 --top 2 --devices cuda:0 cuda:1 --workers 4

Phase 1 scores every (guidance, interval) at the validation seeds; phase 2 scores the ``--top``
settings by mean validation overall, and the model's own defaults, at the test seeds (the seeds
the README reports). The choice is made on other images than the ones reported: the prompts are
the same (the benchmark's in-distribution tasks enumerate every shape, pair and count), the noise
is not. Each (settings, seed) run is one ``dir7.eval.evaluate`` call; its summary is written to
``--out`` as soon as it finishes, and a rerun with the same ``--out`` skips what is already there.
``model_evals_per_image`` counts the network passes per image (2 on a guided step, 1 elsewhere),
which is what sampling costs on a CPU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import sys
import time
from pathlib import Path

from ..pipeline import format_guidance_interval, parse_guidance_interval

ALL = "all"


def interval_arg(text: str) -> str:
    """'all' or 'LO,HI', kept as text (the runs' keys); a typo fails here, before any GPU work."""
    try:
        parse_guidance_interval(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def span(interval: str, num_train_timesteps: int) -> tuple[int, int]:
    """The timesteps an interval's text form guides."""
    parsed = parse_guidance_interval(interval)
    return (0, num_train_timesteps - 1) if parsed == ALL else parsed


def key(guidance: float, interval: str, seed: int) -> str:
    return f"g={guidance:g} interval={interval} seed={seed}"


def _worker(device: str, checkpoint: str | None, images: int, batch: int, limit: int | None, jobs, results) -> None:
    import torch

    import dir7
    from dir7.eval.shapes import TASKS, evaluate, load_prompts

    torch.set_num_threads(2)
    pipe = dir7.DIR7Pipeline.from_pretrained(checkpoint).to(device)
    T = pipe.model.config.num_train_timesteps
    prompts = load_prompts()[:limit]
    while (job := jobs.get()) is not None:
        guidance, interval, seed = job
        guided = span(interval, T)

        def generate(texts, s, guidance=guidance, guided=guided):
            return pipe(texts, guidance_scale=guidance, guidance_interval=guided, seed=s, stats=False).images

        t0 = time.perf_counter()
        r = evaluate(prompts, generate, images_per_prompt=images, seed=seed, batch_size=batch, progress=False)
        summary = {k: r[k] for k in ("overall", "overall_in_distribution", "overall_heldout")}
        summary["tasks"] = {t: r[t] for t in TASKS if t in r}  # (--limit may leave tasks out)
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        results.put((key(guidance, interval, seed), summary))


def run_jobs(todo: list[tuple[float, str, int]], args, done: dict, save) -> None:
    if not todo:
        return
    ctx = mp.get_context("spawn")
    jobs, results = ctx.Queue(), ctx.Queue()
    for job in todo:
        jobs.put(job)
    procs = []
    for device in args.devices:
        for _ in range(args.workers):
            jobs.put(None)
            p = ctx.Process(target=_worker, args=(device, args.checkpoint, args.images_per_prompt,
                                                  args.batch_size, args.limit, jobs, results))
            p.start()
            procs.append(p)
    for n in range(len(todo)):
        while True:  # a worker that died (bad checkpoint, out of memory) must not leave us waiting
            try:
                k, summary = results.get(timeout=10)
                break
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    raise SystemExit("every worker has exited before the sweep finished; see their errors above") \
                        from None
        done[k] = summary
        save()
        print(f"[{n + 1}/{len(todo)}] {k}: overall {fmt(summary['overall'])} "
              f"(in-dist {fmt(summary['overall_in_distribution'])}, held-out {fmt(summary['overall_heldout'])}) "
              f"{summary['seconds']:.0f} s", flush=True)
    for p in procs:
        p.join()


def mean(done: dict, guidance: float, interval: str, seeds: list[int], field: str = "overall") -> float | None:
    values = [done[key(guidance, interval, s)][field] for s in seeds]
    return None if None in values else round(sum(values) / len(values), 4)  # None: a split with no prompts


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--checkpoint", default=None, help="default: the shipped model")
    ap.add_argument("--guidance", type=float, nargs="+", default=[2.5, 4.0, 6.0, 9.0])
    ap.add_argument("--intervals", type=interval_arg, nargs="+",
                    default=[ALL, "400,999", "600,999", "800,999", "200,799"])
    ap.add_argument("--val-seeds", type=int, nargs="+", default=[100, 101])
    ap.add_argument("--test-seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--top", type=int, default=2, help="settings carried to the test seeds")
    ap.add_argument("--images-per-prompt", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--devices", nargs="+", default=["cuda:0"])
    ap.add_argument("--workers", type=int, default=2, help="processes per device")
    ap.add_argument("--limit", type=int, default=None, help="only the first N prompts (quick checks)")
    ap.add_argument("--out", required=True, type=Path)


def run(args: argparse.Namespace) -> None:
    if set(args.val_seeds) & set(args.test_seeds):
        raise SystemExit("validation and test seeds must differ")

    from ..diffusion import make_scheduler
    from ..pipeline import default_checkpoint, load_configs

    # the model's sampling defaults and timesteps (the workers load the weights themselves)
    try:
        cfg, defaults = load_configs(args.checkpoint or default_checkpoint())
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    saved = json.loads(args.out.read_text()) if args.out.is_file() else {}
    done: dict = saved.get("runs", {})

    sched = make_scheduler(defaults.sampler, cfg.num_train_timesteps, cfg.beta_schedule)
    sched.set_timesteps(defaults.num_inference_steps)
    steps = [int(t) for t in sched.timesteps]

    def evals_per_image(interval: str) -> int:
        lo, hi = span(interval, cfg.num_train_timesteps)
        return sum(2 if lo <= t <= hi else 1 for t in steps)

    tables = {k: saved[k] for k in ("validation", "test") if k in saved}

    def save(**new_tables) -> None:
        tables.update(new_tables)
        out = {"command": " ".join(sys.argv), "checkpoint": args.checkpoint or "shipped",
               "sampler": defaults.sampler, "steps": defaults.num_inference_steps, "timesteps": steps,
               "images_per_prompt": args.images_per_prompt, "batch_size": args.batch_size,
               "val_seeds": args.val_seeds, "test_seeds": args.test_seeds,
               "evals_per_image": {i: evals_per_image(i) for i in args.intervals}, **tables, "runs": done}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1))
        tmp.replace(args.out)

    grid = [(g, i) for g in args.guidance for i in args.intervals]
    run_jobs([(g, i, s) for g, i in grid for s in args.val_seeds if key(g, i, s) not in done], args, done, save)
    ranked = sorted(grid, key=lambda gi: -mean(done, *gi, args.val_seeds))
    validation = [{"guidance": g, "interval": i, "overall": mean(done, g, i, args.val_seeds),
                   "in_distribution": mean(done, g, i, args.val_seeds, "overall_in_distribution"),
                   "heldout": mean(done, g, i, args.val_seeds, "overall_heldout"),
                   "evals_per_image": evals_per_image(i)} for g, i in ranked]
    save(validation=validation)

    default = (defaults.guidance_scale, format_guidance_interval(defaults.guidance_interval))
    finalists = list(dict.fromkeys([*ranked[: args.top], default]))
    run_jobs([(g, i, s) for g, i in finalists for s in args.test_seeds if key(g, i, s) not in done],
             args, done, save)
    test = [{"guidance": g, "interval": i, "overall": mean(done, g, i, args.test_seeds),
             "in_distribution": mean(done, g, i, args.test_seeds, "overall_in_distribution"),
             "heldout": mean(done, g, i, args.test_seeds, "overall_heldout"),
             "evals_per_image": evals_per_image(i), "is_default": (g, i) == default} for g, i in finalists]
    save(validation=validation, test=test)

    print(f"\nvalidation (seeds {args.val_seeds}), best first:")
    print(f"{'guidance':>8} {'interval':>9} {'overall':>8} {'in-dist':>8} {'held-out':>8} {'evals/img':>9}")
    for row in validation:
        print(f"{row['guidance']:>8g} {row['interval']:>9} {fmt(row['overall']):>8} {fmt(row['in_distribution']):>8} "
              f"{fmt(row['heldout']):>8} {row['evals_per_image']:>9}")
    print(f"\ntest (seeds {args.test_seeds}):")
    for row in test:
        print(f"{row['guidance']:>8g} {row['interval']:>9} {fmt(row['overall']):>8} {fmt(row['in_distribution']):>8} "
              f"{fmt(row['heldout']):>8} {row['evals_per_image']:>9}{'  (model default)' if row['is_default'] else ''}")
