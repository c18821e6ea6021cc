"""The Triton shifted sum against its PyTorch reference: forward and the gradient.

Without CUDA it runs through Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors) at
tiny, odd shapes; with CUDA also at a full-size one in bfloat16. The forward equals the
reference exactly (one rounding of a float32 sum, as PyTorch's add); the gradient is a
rearrangement of the incoming one, so it too is exact. NaN never passes: a NaN placed in the
input must come out where the reference puts it.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")
HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    raise RuntimeError("without a GPU these tests need TRITON_INTERPRET=1 from the start (see tests/conftest.py)")

from dir7_kernels import dispatch, triton_token_shift  # noqa: E402
from dir7_kernels.token_shift import shifted_sum_reference  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"
f32, bf16 = torch.float32, torch.bfloat16
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="full-size cases need a GPU")
# Triton 3.9's interpreter truncates float32 -> bf16 casts instead of rounding them: one bf16
# step apart there, exact on a GPU
SUM_RTOL = {f32: 0.0, bf16: 0.0 if HAS_CUDA else 2**-7}
# (B, T, N, dtype): T and B * T not multiples of the row block, N not of the column block
SHAPES = [
    pytest.param(1, 1, 8, f32, id="T1"),
    pytest.param(2, 19, 24, f32, id="T19-N24"),
    pytest.param(3, 5, 300, f32, id="N300"),  # two column blocks, the second partial
    pytest.param(2, 7, 40, bf16, id="bf16"),
    pytest.param(4, 1030, 1424, bf16, id="gpu-T1030-N1424", marks=needs_cuda),
]


@pytest.mark.parametrize(("B", "T", "N", "dtype"), SHAPES)
def test_shifted_sum_equals_the_reference_forward_and_gradient(B, T, N, dtype):
    g = torch.Generator().manual_seed(B * T + N)
    y = torch.randn(B, T, 2 * N, generator=g).to(DEVICE, dtype).requires_grad_()
    y_ref = y.detach().clone().requires_grad_()
    out = triton_token_shift.shifted_sum_triton(y, N)
    ref = shifted_sum_reference(y_ref, N)
    assert out.dtype == dtype and out.shape == (B, T, N)
    torch.testing.assert_close(out, ref, rtol=SUM_RTOL[dtype], atol=0)
    # a gradient that is not contiguous (as a transposed view would be)
    dout = torch.randn(B, N, T, generator=g).to(DEVICE, dtype).transpose(1, 2)
    (dy,) = torch.autograd.grad(out, y, dout)
    (dy_ref,) = torch.autograd.grad(ref, y_ref, dout)
    assert dy.dtype == dtype and dy.shape == y.shape
    torch.testing.assert_close(dy, dy_ref, rtol=0, atol=0)


def test_nan_goes_where_the_reference_puts_it():
    y = torch.randn(2, 6, 2 * 16, device=DEVICE)
    y[0, 2, 3] = float("nan")        # first half: out[0, 2, 3]
    y[1, 4, 16 + 5] = float("nan")   # second half: out[1, 5, 5] (the next row)
    y[1, 5, 16 + 6] = float("nan")   # second half of an image's last row: read by no row
    out, ref = triton_token_shift.shifted_sum_triton(y, 16), shifted_sum_reference(y, 16)
    assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().sum() == 2
    torch.testing.assert_close(out, ref, equal_nan=True, rtol=0, atol=0)


def test_bad_shapes_are_refused_with_the_shape_in_the_message():
    with pytest.raises(ValueError, match=r"\[B, T, 2 \* n\].*\(2, 3, 10\)"):
        triton_token_shift.shifted_sum_triton(torch.zeros(2, 3, 10, device=DEVICE), 4)
    with pytest.raises(ValueError, match="2 \\* n"):
        shifted_sum_reference(torch.zeros(3, 10), 5)


def test_dispatch_runs_the_reference_off_cuda_and_triton_on_it(monkeypatch):
    calls = []
    fake = lambda *a: calls.append(1) or shifted_sum_reference(*a)  # noqa: E731
    monkeypatch.setattr(dispatch, "_triton_token_shift", lambda: fake)
    y = torch.randn(2, 5, 8)
    torch.testing.assert_close(dispatch.shifted_sum(y, 4), shifted_sum_reference(y, 4))
    assert not calls  # CPU tensors: the reference
    if HAS_CUDA:
        dispatch.shifted_sum(y.cuda(), 4)
        assert calls
