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
