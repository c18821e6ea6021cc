"""Helpers shared by the tests (fixtures live in conftest.py): one tiny model config, one way to
give an untrained model input-dependent outputs, one environment for subprocesses."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

import dir7

REPO = Path(__file__).resolve().parent.parent


def tiny_config(**overrides) -> dir7.DIR7Config:
    """A DIR-7 small enough for CPU tests: 16x16 images, 64 tokens, two blocks."""
    base = dir7.DIR7Config.from_preset(
        "dir7-demo", image_size=16, patch_size=2, dim=64, depth=2, head_size=16, conv_channels=16,
        decay_lora=8, iclr_lora=8, value_lora=4, gate_lora=16,
    )
    return dataclasses.replace(base, **overrides)


def randomize_zero_inits(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Give every zero-initialised parameter (adaLN-Zero gates, the decoder conv, LoRA A)
    random values, so an untrained model's output depends on its inputs, as a trained one's does."""
    with torch.no_grad():
        for p in model.parameters():
            if torch.count_nonzero(p) == 0:
                p.normal_(std=std)
    return model


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child ``python``: this checkout first on its path, the caller's
    path after it (wheels carried to a machine live there)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}
