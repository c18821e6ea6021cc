"""Example prompts a model handles well, chosen by the evaluator from its reports, not by hand.

    python -m dir7.eval examples REPORT.json [REPORT.json ...] [--per-task 1] [--card MODEL/README.md]

Every prompt of one or more ShapesEval reports of the same model is ranked by the fraction of
its images that passed (over every report given); the best in-distribution prompts of each task
are chosen, so the examples cover what the model can be asked (one object, two, a count, a
colour, a placement, two colours) and each was drawn correctly every time it was scored. The
prompts come from the benchmark's prompt file, whose metadata they are true of: none contradicts
itself. ``--card`` writes them into the model card's front matter (``widget``), where the demo
and the Hub read them.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from .shapes import TASKS, read_report_images


def rank_prompts(records: list[dict]) -> dict[str, list[tuple[float, int, str]]]:
    """Per task: ``(pass rate, images, prompt)`` of its in-distribution prompts, best first."""
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # (task, prompt) -> [passed, images]
    for rec in records:
        if rec.get("split", "in_distribution") != "in_distribution":
            continue
        row = tally[rec["tag"], rec["prompt"]]
        row[0] += bool(rec["passed"])
        row[1] += 1
    ranked: dict[str, list[tuple[float, int, str]]] = {task: [] for task in TASKS}
    for (task, prompt), (passed, images) in tally.items():
        ranked[task].append((passed / images, images, prompt))
    for rows in ranked.values():
        rows.sort(key=lambda r: (-r[0], -r[1], r[2]))
    return ranked


def choose(ranked: dict[str, list[tuple[float, int, str]]], per_task: int, min_pass: float) -> list[str]:
    return [prompt for task in TASKS for rate, _, prompt in ranked[task][:per_task] if rate >= min_pass]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("reports", nargs="+", help="ShapesEval report JSON files of one model")
    ap.add_argument("--per-task", type=int, default=1, help="prompts chosen per task")
    ap.add_argument("--min-pass", type=float, default=1.0, help="the least fraction of passing images")
    ap.add_argument("--card", type=Path, help="a model card (README.md) whose front matter gets them as 'widget'")


def run(args: argparse.Namespace) -> list[str]:
    records = read_report_images(args.reports)
    ranked = rank_prompts(records)
    chosen = choose(ranked, args.per_task, args.min_pass)
    for task in TASKS:
        for rate, images, prompt in ranked[task][: args.per_task]:
            mark = "*" if prompt in chosen else " "
            print(f"{mark} {task:14s} {rate:5.2f} of {images:3d} images  {prompt}")
    if not chosen:
        raise SystemExit(f"error: no prompt passed in at least {args.min_pass:.0%} of its images")
    if args.card:
        from huggingface_hub import ModelCard

        card = ModelCard.load(args.card)
        card.data.widget = [{"text": prompt} for prompt in chosen]
        card.save(args.card)
        print(f"wrote {len(chosen)} examples into {args.card}")
    return chosen
