"""A stored ShapesEval report judged again by the current rules, from its stored detections.

    python -m dir7.eval rescore REPORT.json --out RESCORED.json

Reports written before an unknown blob (a coloured region matching none of the shapes) failed
an image passed such images; rescoring counts them against it without sampling again, and keeps
the old scores under ``scores_before_rescoring``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .shapes import TASKS, format_report, rescore


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("report", type=Path, help="a ShapesEval report (python -m dir7.eval shapes --out ...)")
    ap.add_argument("--out", type=Path, required=True, help="where to write the rescored report")


def run(args: argparse.Namespace) -> dict:
    try:
        report = json.loads(args.report.read_text())
        new = rescore(report)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise SystemExit(f"error: {args.report}: not a ShapesEval report ({e})") from None
    args.out.write_text(json.dumps(new, indent=1, default=str))
    before = new["scores_before_rescoring"]
    flipped = sum(1 for a, b in zip(report["images"], new["images"]) if a["passed"] != b["passed"])
    print(format_report(new))
    print(f"overall {before['overall']:.4f} -> {new['overall']:.4f}; {flipped} of {len(new['images'])} images "
          f"changed; per task: " + ", ".join(f"{t} {before[t]:.3f} -> {new[t]:.3f}" for t in TASKS if t in before))
    return new
