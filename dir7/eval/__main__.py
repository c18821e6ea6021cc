"""Command line: ``python -m dir7.eval COMMAND [options]``.

    shapes            ShapesEval: images for every prompt of a GenEval-style prompt file from a
                      DIR-7 model (default: the shipped one), scored from the pixels; writes the
                      JSON report and a grid of samples with pass/fail borders beside it
                      (``report.png`` for ``report.json``). ``--oracle`` scores ground-truth
                      renders instead of a model (the benchmark's ceiling).
    failures          why the images of one or more ShapesEval reports failed, by task and kind
    guidance-sweep    ShapesEval over guidance scales and intervals, chosen on validation seeds
    loss-by-timestep  a model's eps loss and Min-SNR weight at fixed timesteps, and its text gain
    text-paths        how strongly each block's text path passes the prompt on (fresh or trained)
    examples          example prompts a model handles well, chosen from its reports
    rescore           a stored report judged again by the current rules (unknown blobs fail)
    emoji             EmojiEval: a model's images for an emoji prompt file, judged by a classifier
                      trained on the real emoji (concept top-1/top-5, style, skin tone, FD)
    emoji-judge       train that classifier on a built emoji set (python -m dir7.data.emoji build)
    emoji-prompts     write the seen-pair and held-out-pair prompt files from a built emoji set
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from . import examples, failures, guidance_sweep, loss_by_timestep, rescore, text_paths
from .shapes import PROMPTS_PATH, evaluate, format_report, load_prompts, scene_for_metadata

Generate = Callable[[list[str], int], list[Image.Image]]


def _interval(text: str) -> tuple[int, int] | str:
    from ..pipeline import parse_guidance_interval

    try:
        return parse_guidance_interval(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# the analysis commands: each module's add_arguments(parser) and run(args)
TOOLS = {"failures": failures, "guidance-sweep": guidance_sweep, "loss-by-timestep": loss_by_timestep,
         "examples": examples, "rescore": rescore, "text-paths": text_paths}


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a benchmark that samples a model: which model, how many images, how sampled."""
    p.add_argument("--checkpoint", default=None, help="model directory (default: the shipped model)")
    p.add_argument("--images-per-prompt", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    p.add_argument("--guidance-interval", default=None, type=_interval, metavar="LO,HI",
                   help="guide only at timesteps LO..HI, 'all' for every step (default: the model's)")
    p.add_argument("--sampler", default=None, help="ddim | ddpm | dpm++ (default: the model's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--compile", default=False, action=argparse.BooleanOptionalAction,
                   help="sample with the network under torch.compile (DIR7Pipeline.compile); off by default")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m dir7.eval", description="DIR-7 benchmarks and analysis tools",
                                 epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="benchmark", required=True)
    for name, module in TOOLS.items():
        module.add_arguments(sub.add_parser(name, help=module.__doc__.splitlines()[0],
                                            description=module.__doc__,
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    p = sub.add_parser("shapes", help="ShapesEval: GenEval's six tasks, decided exactly from the pixels")
    add_sampling_arguments(p)
    p.add_argument("--prompts", default=None, help=f"GenEval-style JSONL (default: {PROMPTS_PATH.name})")
    p.add_argument("--split", choices=("all", "in_distribution", "heldout"), default="all",
                   help="evaluate only these prompts")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts (quick checks)")
    p.add_argument("--oracle", action="store_true", help="score ground-truth renders instead of a model")
    p.add_argument("--out", required=True, help="report JSON path; the grid goes beside it (.png)")

    e = sub.add_parser("emoji", help="EmojiEval: concept, style and skin tone by a trained judge, and FD")
    add_sampling_arguments(e)
    e.add_argument("--prompts", default=None, help="JSONL with prompt, concept, style[, skin_tone] "
                   "(default: the seen-pair prompts)")
    e.add_argument("--judge", default=None, help="judge directory (default: checkpoints/emoji-judge)")
    e.add_argument("--limit", type=int, default=None, help="only the first N prompts (quick checks)")
    e.add_argument("--real", default=None, metavar="DATA",
                   help="self-check: score the real images of a built set instead of a model")
    e.add_argument("--out", required=True, help="report JSON path")

    j = sub.add_parser("emoji-judge", help="train EmojiEval's judge on a built emoji set")
    j.add_argument("--data", required=True, help="a set built by python -m dir7.data.emoji build")
    j.add_argument("--out", default=None, help="judge directory (default: checkpoints/emoji-judge)")
    j.add_argument("--epochs", type=int, default=10)
    j.add_argument("--seed", type=int, default=0)

    q = sub.add_parser("emoji-prompts", help="EmojiEval's prompt files from a built emoji set")
    q.add_argument("--data", required=True)
    q.add_argument("--seen", type=int, default=400, help="seen-pair prompts to sample")
    q.add_argument("--out-dir", default=None, help="where the two files go (default: the package's)")
    return ap


def emoji_main(args: argparse.Namespace, generate: Generate | None) -> dict:
    from . import emoji

    if args.benchmark == "emoji-judge":
        return emoji.train_judge(args.data, args.out or emoji.JUDGE_DIR, epochs=args.epochs, seed=args.seed)
    if args.benchmark == "emoji-prompts":
        seen, held, showcase = emoji.make_prompts(args.data, seen=args.seen)
        out_dir = Path(args.out_dir) if args.out_dir else emoji.PROMPTS_SEEN.parent
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, rows in ((emoji.PROMPTS_SEEN, seen), (emoji.PROMPTS_HELDOUT, held),
                           (emoji.PROMPTS_SHOWCASE, showcase)):
            (out_dir / path.name).write_text("".join(json.dumps(r) + "\n" for r in rows))
            print(f"{len(rows)} prompts -> {out_dir / path.name}")
        return {"seen": len(seen), "heldout": len(held), "showcase": len(showcase)}
    if args.images_per_prompt < 1 or args.batch_size < 1:
        raise SystemExit("--images-per-prompt and --batch-size must be >= 1")
    try:
        prompts = emoji.load_prompts(args.prompts)[: args.limit]
        judge, info, real_stats = emoji.EmojiJudge.load(args.judge)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    extra: dict = {}
    if generate is None:
        if args.real:
            generate, extra["model"] = emoji.real_generate(args.real), f"real images of {args.real} (self-check)"
        else:
            try:
                generate, extra = pipeline_generate(args)
            except (FileNotFoundError, ValueError) as e:
                raise SystemExit(f"error: {e}") from e
    t0 = time.perf_counter()
    try:
        report = emoji.evaluate(prompts, generate, judge, real_stats, images_per_prompt=args.images_per_prompt,
                                seed=args.seed, batch_size=args.batch_size)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    report["settings"].update({
        "benchmark": "emoji", "prompts": str(args.prompts or emoji.PROMPTS_SEEN), "checkpoint": args.checkpoint,
        "judge": {k: info.get(k) for k in ("test_accuracy", "fd_real_vs_real", "command")},
        # the command line's sampling settings, as ShapesEval records them (None: the model's own)
        "steps": args.steps, "guidance": args.guidance, "guidance_interval": args.guidance_interval,
        "sampler": args.sampler,
        "seconds": round(time.perf_counter() - t0, 2), **extra})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps({k: report[k] for k in ("concept_top1", "concept_top5", "style_accuracy",
                                             "skin_tone_accuracy", "fd")}))
    return report


def oracle_generate(prompts_by_text: dict[str, dict]) -> Generate:
    """A "perfect model": renders a random scene that satisfies each prompt's metadata."""
    from ..data.scenes import render_scene

    def generate(texts: list[str], seed: int) -> list[Image.Image]:
        rng = np.random.default_rng(seed)
        return [Image.fromarray(render_scene(scene_for_metadata(prompts_by_text[t], rng))) for t in texts]

    return generate


def pipeline_generate(args: argparse.Namespace) -> tuple[Generate, dict]:
    """Load the DIR-7 pipeline (imported here so the evaluator works without the model)."""
    import torch

    import dir7

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = dir7.DIR7Pipeline.from_pretrained(args.checkpoint).to(device)
    if args.compile:
        pipe.compile()
    interval = args.guidance_interval
    if interval == "all":
        interval = (0, pipe.model.config.num_train_timesteps - 1)
    pipe.check_inputs("x", guidance_interval=interval)  # a bad interval fails before any sampling

    def generate(texts: list[str], seed: int) -> list[Image.Image]:
        out = pipe(texts, num_inference_steps=args.steps, guidance_scale=args.guidance, seed=seed,
                   sampler=args.sampler, guidance_interval=interval, stats=False)  # images only: faster
        return out.images

    info = dict(getattr(pipe, "info", {}) or {})
    return generate, {"device": device, "model": info}


def main(argv: list[str] | None = None, generate: Generate | None = None):
    """Run the CLI; ``generate`` replaces the model (tests). Returns the report (or the tool's result)."""
    args = build_parser().parse_args(argv)
    if args.benchmark in TOOLS:
        return TOOLS[args.benchmark].run(args)
    if args.benchmark.startswith("emoji"):
        return emoji_main(args, generate)
    if args.images_per_prompt < 1 or args.batch_size < 1:
        raise SystemExit("--images-per-prompt and --batch-size must be >= 1")
    try:
        prompts = load_prompts(args.prompts)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    if args.split != "all":
        from .shapes import metadata_split

        prompts = [md for md in prompts if metadata_split(md) == args.split]
    if args.limit is not None:
        prompts = prompts[: args.limit]
    if not prompts:
        raise SystemExit("error: no prompts left to evaluate")

    extra: dict = {}
    if generate is None:
        if args.oracle:
            generate = oracle_generate({md["prompt"]: md for md in prompts})
            extra["model"] = "oracle (ground-truth renders)"
        else:
            try:
                generate, extra = pipeline_generate(args)
            except (FileNotFoundError, ValueError) as e:
                raise SystemExit(f"error: {e}") from e
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = out.with_suffix(".png") if out.suffix != ".png" else out.with_name(out.stem + "_grid.png")
    t0 = time.perf_counter()
    report = evaluate(prompts, generate, images_per_prompt=args.images_per_prompt, seed=args.seed,
                      batch_size=args.batch_size, grid_path=grid)
    report["settings"].update({
        "benchmark": "shapes", "prompts": str(args.prompts or PROMPTS_PATH), "split": args.split,
        "checkpoint": args.checkpoint, "steps": args.steps, "guidance": args.guidance,
        "guidance_interval": args.guidance_interval, "sampler": args.sampler,
        "seconds": round(time.perf_counter() - t0, 2), **extra,
    })
    # the summary first, the per-image details last: easier to read by eye
    out.write_text(json.dumps(report, indent=1, default=str))
    print(format_report(report))
    print(f"report: {out}\ngrid:   {grid}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
