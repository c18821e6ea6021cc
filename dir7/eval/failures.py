"""Why ShapesEval images fail: failure reasons counted by task and kind, over one or more reports.

    python -m dir7.eval failures REPORT.json [REPORT.json ...] [--json summary.json]

A report is what ``python -m dir7.eval shapes --out REPORT.json`` writes. The shipped model's
failure analysis (docs/experiments.md) is this command over its four GPU runs (seeds 0-3, the
command in ``results/dir7-shapes/stage_evals.json``). Kinds (``dir7.eval.failure_kind``): missing
(no object matches a clause), too_few, no_target (a position clause whose target is
missing), misplaced (present, wrong relation), too_many (an exclude clause: more than asked).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from .shapes import FAILURE_KINDS, TASKS, failure_kind, read_report_images

KINDS = tuple(kind for kind, _ in FAILURE_KINDS)


def draws_one_shape_twice(record: dict, kinds: list[str]) -> bool:
    """A failed image (its reasons' ``kinds``) with a clause's object missing while some shape
    appears twice or more ("a circle and a square" -> two squares)."""
    shapes = Counter(o["shape"] for o in record["objects"])
    return "missing" in kinds and any(n >= 2 for n in shapes.values())


def summarize(records: list[dict]) -> dict:
    """Per task: images, failed images, reason counts by kind; plus images with no object."""
    out = {task: {"images": 0, "failed": 0, **dict.fromkeys(KINDS, 0), "one_shape_twice": 0} for task in TASKS}
    empty = 0
    for rec in records:
        row = out[rec["tag"]]
        row["images"] += 1
        empty += not rec["objects"] and not rec["unknown"]
        if rec["passed"]:
            continue
        row["failed"] += 1
        kinds = [failure_kind(reason) for reason in rec["reasons"]]
        for kind in kinds:
            row[kind] += 1
        row["one_shape_twice"] += draws_one_shape_twice(rec, kinds)
    return {"tasks": out, "images": len(records), "no_object_at_all": empty}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("reports", nargs="+", help="ShapesEval report JSON files (python -m dir7.eval shapes --out ...)")
    ap.add_argument("--json", help="also write the summary here")


def run(args: argparse.Namespace) -> dict:
    records = read_report_images(args.reports)
    summary = summarize(records)

    cols = ("images", "failed", *KINDS, "one_shape_twice")
    print(f"{len(args.reports)} report(s), {summary['images']} images; "
          f"no object at all in {summary['no_object_at_all']}")
    print("| task | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for task, row in summary["tasks"].items():
        print(f"| {task} | " + " | ".join(str(row[c]) for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return summary
