"""Shared fixtures: small configs and one text encoder per test session (loading it takes seconds)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import dir7


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


@pytest.fixture(scope="session")
def text_encoder() -> dir7.TextEncoder:
    return dir7.TextEncoder.from_pretrained()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
