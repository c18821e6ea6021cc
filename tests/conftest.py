"""Shared fixtures: one text encoder per test session (loading it takes seconds), a fixed seed.

Helpers (the tiny model config and friends) are in ``tests/helpers.py``. Importing ``dir7``
here first also makes ``dir7_kernels`` importable in a source checkout (see ``dir7/ops.py``).
"""

from __future__ import annotations

import os

# Without a GPU the Triton kernels run through Triton's interpreter (CPU tensors, tiny shapes).
# Triton picks compile-or-interpret when a function is decorated, its own ``tl.*`` helpers
# included, so the flag must be set before anything imports triton (torch can, lazily).
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

import dir7


@pytest.fixture(scope="session")
def text_encoder() -> dir7.TextEncoder:
    return dir7.TextEncoder.from_pretrained()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_addoption(parser):
    parser.addoption("--refresh-reference", action="store_true",
                     help="rewrite the shipped model's stored outputs (tests/pipeline/test_shipped_model.py)")
