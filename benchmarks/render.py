"""Write BENCHMARKS.md from the stored results in results/benchmarks/ (nothing is measured here).

    python -m benchmarks.render [--out BENCHMARKS.md]

Each section is the markdown of one benchmark's JSON (``benchmarks.model_vs_dit`` on the CPU
and the GPU, ``benchmarks.wkv7``); a result not stored yet is named with the command that
measures it. A test checks that BENCHMARKS.md is this render of the stored results.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import model_vs_dit, wkv7

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "benchmarks"
SECTIONS = (
    ("model_vs_dit_cpu.json", model_vs_dit.markdown_cpu, model_vs_dit.COMMANDS["cpu"],
     "DIR-7 against a DiT with cross-attention (CPU, the demo's path)"),
    ("model_vs_dit_gpu.json", model_vs_dit.markdown_gpu, model_vs_dit.COMMANDS["gpu"],
     "DIR-7 against a DiT with cross-attention (GPU)"),
    ("wkv7_results.json", wkv7.markdown, wkv7.COMMAND, "WKV-7 kernels"),
)


def render(results: Path = RESULTS) -> str:
    parts = ["# Benchmarks", "",
             "Every table is rendered from a JSON file in `results/benchmarks/` by `python -m benchmarks.render`; "
             "the command under each table measures it again. How to read them, and what was tried: "
             "[docs/performance.md](docs/performance.md).", ""]
    for name, to_markdown, command, title in SECTIONS:
        path = results / name
        if path.is_file():
            parts.append(to_markdown(json.loads(path.read_text())))
        else:
            parts += [f"## {title}", "", "Not measured yet. Command:", "", "```", command, "```", ""]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    args.out.write_text(render())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
