"""The benchmarks: BENCHMARKS.md is the render of the stored results, and the timing code runs."""

from __future__ import annotations

import torch

import dir7
from benchmarks import model_vs_dit, render
from dir7.dit import DiTConfig, DiTModel
from tests.helpers import REPO, tiny_config


def test_benchmarks_md_is_the_render_of_the_stored_results():
    assert (REPO / "BENCHMARKS.md").read_text() == render.render(), (
        "BENCHMARKS.md differs from the render of results/benchmarks/: rerun `python -m benchmarks.render`")


def test_the_dit_peer_is_parameter_matched_within_five_percent():
    with torch.device("meta"):
        ours = dir7.DIR7Model(dir7.DIR7Config.from_preset("dir7-s"))
    cfg = model_vs_dit.matched_dit(model_vs_dit.count(ours), DiTConfig.from_preset("dit-s"))
    with torch.device("meta"):
        dit = model_vs_dit.count(DiTModel(cfg))
    assert abs(dit - model_vs_dit.count(ours)) <= 0.05 * model_vs_dit.count(ours)


def test_the_gpu_timing_code_runs_on_tiny_models():
    """The GPU benchmark's forward and training-step timing, on the CPU and tiny models (eager only)."""
    timer = lambda fn: (fn(), fn(), 1.0)[-1]  # noqa: E731  (runs the step twice, times nothing)
    cfg = tiny_config()
    dit_cfg = DiTConfig(image_size=cfg.image_size, patch_size=cfg.patch_size, heads=2, head_dim=16, depth=1)
    for model, c in ((dir7.DIR7Model(cfg), cfg), (DiTModel(dit_cfg), dit_cfg)):
        before = [p.detach().clone() for p in model.parameters()]
        out = model_vs_dit.time_model(model, c, 2, torch.device("cpu"), compiled=False, timer=timer)
        assert set(out) == {"forward_ms", "forward_images_per_s", "train_step_ms", "train_step_images_per_s"}
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # AdamW stepped


def test_the_gpu_table_names_the_commits_when_its_cells_were_measured_apart():
    def cell(commit):
        return {"forward_ms": 1.0, "train_step_ms": 2.0, "train_step_peak_GiB": 3.0, "commit": commit}

    row = {"tokens": 1024, "batch": 64, "ours_params": 1e6, "dit_params": 1e6, "dit_depth": 2,
           "ours_eager": cell("aaa1111"), "dit_eager": cell("aaa1111")}
    result = {"env": {"gpu": "G", "date": "d", "torch": "t", "diffusers": "x"}, "shapes": [row]}
    assert "separate runs" not in model_vs_dit.markdown_gpu(result)
    row["ours_compiled"], row["dit_compiled"] = cell("bbb2222"), cell("bbb2222")
    text = model_vs_dit.markdown_gpu(result)
    assert "commit aaa1111: ours eager at 1024, dit eager at 1024" in text and "commit bbb2222" in text


def test_the_commit_a_cell_names_is_the_senders_where_it_is_given(monkeypatch):
    """A tree copied to a GPU machine may carry a stale .git: $DIR7_COMMIT comes first, git second."""
    model_vs_dit.commit.cache_clear()
    monkeypatch.setenv("DIR7_COMMIT", "abc1234")
    assert model_vs_dit.commit() == "abc1234"
    model_vs_dit.commit.cache_clear()
    monkeypatch.delenv("DIR7_COMMIT")
    found = model_vs_dit.commit()  # this checkout's HEAD, or None outside a git checkout
    assert found is None or (found != "abc1234" and len(found) >= 7)
    model_vs_dit.commit.cache_clear()


def test_the_cpu_benchmark_times_a_folder_or_an_architecture(monkeypatch):
    """--checkpoint (default the shipped model) or --preset with --set edits (random weights, the
    shipped sampling defaults); a mix of the two is refused."""
    import pytest

    class FakeEncoder:  # the pipeline only keeps it
        dim = 384

    made = {}
    monkeypatch.setattr(dir7.DIR7Pipeline, "from_pretrained",
                        classmethod(lambda cls, path, text_encoder=None: made.setdefault("path", path)))
    _, name = model_vs_dit.cpu_pipeline(None, None, [], FakeEncoder())
    assert made["path"] == model_vs_dit.SHIPPED_CHECKPOINT and name == "dir7-shapes"
    pipe, name = model_vs_dit.cpu_pipeline(None, "dir7-demo", ["depth=3"], FakeEncoder())
    assert len(pipe.model.blocks) == 3 and name == "dir7-demo --set depth=3 (random weights)"
    assert pipe.config.to_dict() == dir7.pipeline.load_configs(model_vs_dit.SHIPPED_CHECKPOINT)[1].to_dict()
    with pytest.raises(ValueError, match="not both"):
        model_vs_dit.cpu_pipeline("some/dir", "dir7-demo", [], FakeEncoder())
    with pytest.raises(ValueError, match="--set edits a --preset"):
        model_vs_dit.cpu_pipeline(None, None, ["depth=3"], FakeEncoder())


def test_every_benchmark_script_imports_and_prints_its_help():
    """The GPU-only scripts are never run by CI; their code must at least compile and parse its flags."""
    import subprocess
    import sys

    for name in sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem != "__init__"):
        out = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0 and "usage" in out.stdout, f"benchmarks.{name}: {out.stderr[-2000:]}"
