"""BENCHMARKS.md is generated from the stored benchmark result, not edited by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("triton")


def test_benchmarks_md_is_the_render_of_the_stored_result(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    res = subprocess.run(
        [sys.executable, "benchmarks/wkv7.py", "--render", "benchmarks/wkv7_results.json", "--md", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr
    assert out.read_text() == (ROOT / "BENCHMARKS.md").read_text(), (
        "BENCHMARKS.md differs from the render of benchmarks/wkv7_results.json: "
        "rerun `python benchmarks/wkv7.py --render benchmarks/wkv7_results.json --md BENCHMARKS.md`"
    )
