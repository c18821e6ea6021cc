"""Fixtures of the demo's tests: model directories to offer side by side in the selector."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

import dir7
from tests.helpers import tiny_config


@pytest.fixture(scope="session")
def save_model(text_encoder):
    """``save_model(root, name, summary=..., examples=..., vocabulary=..., sampling=..., **config)``:
    a tiny untrained model written as a shipped one is (weights, sampling defaults, a card with
    front matter, the training vocabulary), at ``root / name``; ``config`` overrides tiny_config
    (``cross_mode="attention"``: no recurrent state, and quick to sample on a CPU)."""

    def save(root: Path, name: str, *, summary: str, examples: Iterable[str] = (),
             vocabulary: Iterable[str] | None = None, sampling: dir7.PipelineConfig | None = None,
             **config) -> Path:
        pipe = dir7.DIR7Pipeline.from_config(tiny_config(patch_size=4, **config), text_encoder=text_encoder,
                                             config=sampling)
        pipe.vocabulary = None if vocabulary is None else frozenset(vocabulary)
        path = pipe.save_pretrained(root / name)
        card = {"summary": summary, "widget": [{"text": prompt} for prompt in examples]}
        (path / "README.md").write_text(f"---\n{yaml.safe_dump(card)}---\n\n# {name}\n")
        return path

    return save
