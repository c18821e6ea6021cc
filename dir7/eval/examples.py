"""Example prompts a model handles well, chosen by the evaluator from its reports, not by hand.

    python -m dir7.eval examples REPORT.json [REPORT.json ...] [--per-task 1] [--card MODEL/README.md]

Every prompt of one or more reports of the same model is ranked by the fraction of its images
that passed (over every report given); the best in-distribution prompts of each group are
chosen, so the examples cover what the model can be asked and each was drawn correctly every
time it was scored. ShapesEval reports group by task (one object, two, a count, a colour, a
placement, two colours); EmojiEval reports (an image passes when the judge names its concept
first) by style. The prompts come from the benchmark's prompt file, whose metadata they are true
of: none contradicts itself. ``--card`` writes them into the model card's front matter
(``widget``), where the demo and the Hub read them.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from .emoji import PROMPTS_HELDOUT
from .shapes import TASKS


def report_records(paths: list[str]) -> list[dict]:
    """Per image: ``tag`` (the group), ``prompt``, ``passed`` and ``split``, from ShapesEval or
    EmojiEval reports (an EmojiEval image passes when its concept is the judge's first guess)."""
    records: list[dict] = []
    for path in paths:
        try:
            report = json.loads(Path(path).read_text())
            emoji = report.get("settings", {}).get("benchmark") == "emoji"
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            raise SystemExit(f"error: {path}: not a report ({e})") from None
        if emoji:
            # a report of the held-out pairs' prompt file holds no candidate: those pairs were never trained on
            heldout = Path(report["settings"].get("prompts", "")).name == PROMPTS_HELDOUT.name
            records += [{"tag": r["style"], "prompt": r["prompt"], "passed": r["concept_top1"],
                         "split": "heldout" if heldout else "in_distribution"} for r in report["details"]]
        else:
            try:  # the report is read already: its images, not a second read of the file
                records += report["images"]
            except (KeyError, TypeError) as e:
                raise SystemExit(f"error: {path}: not a ShapesEval report ({e})") from None
    return records


def rank_prompts(records: list[dict]) -> dict[str, list[tuple[float, int, str]]]:
    """Per group (a ShapesEval task, an emoji style): ``(pass rate, images, prompt)`` of its
    in-distribution prompts, best first."""
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # (task, prompt) -> [passed, images]
    for rec in records:
        if rec.get("split", "in_distribution") != "in_distribution":
            continue
        row = tally[rec["tag"], rec["prompt"]]
        row[0] += bool(rec["passed"])
        row[1] += 1
    groups = [t for t in TASKS if any(tag == t for tag, _ in tally)] or sorted({tag for tag, _ in tally})
    ranked: dict[str, list[tuple[float, int, str]]] = {group: [] for group in groups}
    for (task, prompt), (passed, images) in tally.items():
        ranked.setdefault(task, []).append((passed / images, images, prompt))
    for rows in ranked.values():
        rows.sort(key=lambda r: (-r[0], -r[1], r[2]))
    return ranked


def choose(ranked: dict[str, list[tuple[float, int, str]]], per_task: int, min_pass: float) -> list[str]:
    return [prompt for task in ranked for rate, _, prompt in ranked[task][:per_task] if rate >= min_pass]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("reports", nargs="+", help="ShapesEval or EmojiEval report JSON files of one model")
    ap.add_argument("--per-task", type=int, default=1, help="prompts chosen per group (task, or emoji style)")
    ap.add_argument("--min-pass", type=float, default=1.0, help="the least fraction of passing images")
    ap.add_argument("--card", type=Path, help="a model card (README.md) whose front matter gets them as 'widget'")


def run(args: argparse.Namespace) -> list[str]:
    ranked = rank_prompts(report_records(args.reports))
    chosen = choose(ranked, args.per_task, args.min_pass)
    for task in ranked:
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
