"""The fused Triton adaLN kernel against its PyTorch reference: forward and every gradient.

Without CUDA it runs through Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors) at
tiny, odd shapes; with CUDA also at full size in bfloat16. The reference runs in float64 on
the same (already rounded) inputs; errors are relative RMS, NaN never passes.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.kernels.test_chunked import rel_err

pytest.importorskip("triton")
HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    raise RuntimeError("without a GPU these tests need TRITON_INTERPRET=1 from the start (see tests/conftest.py)")

from dir7_kernels import dispatch, triton_adaln  # noqa: E402
from dir7_kernels.adaln import adaln_modulate_reference  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"
EPS = 1e-6
f32, bf16 = torch.float32, torch.bfloat16
TOL = {f32: 1e-4, bf16: 1.5e-2}
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="full-size cases need a GPU")
# (B, T, D, x dtype, modulation dtype): T not a multiple of the 16-row block, D not a power of
# two; under autocast the residual stream is float32 and the modulation bf16
SHAPES = [
    pytest.param(1, 1, 8, f32, f32, id="T1"),
    pytest.param(2, 19, 24, f32, f32, id="T19-D24"),
    pytest.param(3, 33, 40, f32, bf16, id="mixed"),
    pytest.param(2, 9, 600, f32, bf16, id="D600"),  # wide rows: fewer rows per program
    pytest.param(2, 1030, 384, f32, bf16, id="gpu-T1030-D384", marks=needs_cuda),
    pytest.param(4, 256, 192, bf16, bf16, id="gpu-bf16", marks=needs_cuda),
]


@pytest.mark.parametrize(("B", "T", "D", "x_dtype", "mod_dtype"), SHAPES)
@pytest.mark.parametrize("sliced", [False, True])
def test_adaln_matches_the_reference_forward_and_every_gradient(B, T, D, x_dtype, mod_dtype, sliced):
    g = torch.Generator().manual_seed(B * T + D + sliced)
    # a residual stream with an offset and a spread per token, as deep in a network
    x = (3 * torch.randn(B, T, D, generator=g) + torch.randn(B, T, 1, generator=g)).to(DEVICE, x_dtype)
    mods = torch.randn(B, 9 * D if sliced else 2 * D, generator=g).to(DEVICE, mod_dtype)
    # sliced: the columns of one [B, 9D] modulation product, as the block's chunk(9) gives them
    shift, scale = (mods[:, 3 * D:4 * D], mods[:, 4 * D:5 * D]) if sliced else mods.chunk(2, dim=-1)
    shift, scale = shift.detach().requires_grad_(), scale.detach().requires_grad_()
    x = x.detach().requires_grad_()
    y = triton_adaln.adaln_modulate_triton(x, shift, scale, EPS)
    inputs64 = [t.detach().double().requires_grad_() for t in (x, shift, scale)]
    ref = adaln_modulate_reference(*inputs64, EPS)
    assert y.dtype == mod_dtype and y.shape == (B, T, D)
    assert rel_err(y.double(), ref) < TOL[mod_dtype]
    dy = torch.randn(B, T, D, generator=g).to(DEVICE, mod_dtype)
    ours = torch.autograd.grad(y, (x, shift, scale), dy)
    theirs = torch.autograd.grad(ref, inputs64, dy.double())
    for name, a, b, inp in zip(("x", "shift", "scale"), ours, theirs, (x, shift, scale)):
        assert a.dtype == inp.dtype and a.shape == inp.shape, name
        assert rel_err(a.double(), b) < TOL[mod_dtype if name != "x" else max(x_dtype, mod_dtype, key=TOL.get)], name


def test_dispatch_runs_the_reference_off_cuda_and_triton_on_it(monkeypatch):
    calls = []
    monkeypatch.setattr(dispatch, "_triton_adaln", lambda: lambda *a: calls.append(1) or adaln_modulate_reference(*a))
    x, mod = torch.randn(2, 5, 8), torch.randn(2, 8)
    torch.testing.assert_close(dispatch.adaln_modulate(x, mod, mod, EPS), adaln_modulate_reference(x, mod, mod, EPS))
    assert not calls  # CPU tensors: the reference
    if HAS_CUDA:
        dispatch.adaln_modulate(x.cuda(), mod.cuda(), mod.cuda(), EPS)
        assert calls
    assert not torch.isnan(dispatch.adaln_modulate(torch.zeros(1, 3, 8), mod[:1], mod[:1], EPS)).any()  # var 0
