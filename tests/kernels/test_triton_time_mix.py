"""The fused Triton time-mix kernels against the PyTorch references: forward and every gradient.

Without CUDA they run through Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors) at
tiny, odd shapes; with CUDA also at a full-size one, in bfloat16. The reference runs in
float64 on the same (already rounded) inputs; errors are relative RMS, NaN never passes.
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

from dir7_kernels import dispatch, triton_time_mix  # noqa: E402
from dir7_kernels.time_mix import time_mix_prepare_reference, time_mix_readout_reference  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"
W_SCALE = -0.6065306597126334
TOL = {torch.float32: 1e-4, torch.bfloat16: 1.5e-2}
f32, bf16 = torch.float32, torch.bfloat16
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="full-size cases need a GPU")
# (B, T, H, K, dtype): odd token counts (not a multiple of the 32-token tile), a head size
# that is not a power of two, and one head
SHAPES = [
    pytest.param(1, 1, 1, 16, f32, id="T1"),
    pytest.param(2, 37, 3, 16, f32, id="T37-H3"),
    pytest.param(1, 5, 2, 24, f32, id="K24"),
    pytest.param(3, 11, 2, 32, f32, id="K32-B3"),
    pytest.param(2, 1030, 6, 64, bf16, id="gpu-T1030-bf16", marks=needs_cuda),
    pytest.param(1, 77, 4, 64, f32, id="gpu-T77-K64", marks=needs_cuda),
]


def _randn(*shape, g, dtype, scale=1.0, sliced=False):
    """Random ``shape``; ``sliced``: as a column slice of a wider tensor (rows not adjacent in
    memory), the way the layer's projections reach the kernels."""
    if not sliced:
        return (scale * torch.randn(*shape, generator=g)).to(DEVICE, dtype)
    wide = (scale * torch.randn(*shape[:-1], shape[-1] + 40, generator=g)).to(DEVICE, dtype)
    return wide[..., 24:24 + shape[-1]]


def check_gradients(ours_out, ref_out, ours_in, ref_in, names, dtype, seed):
    """Backpropagate the same random cotangents through both; compare outputs and input gradients."""
    g = torch.Generator().manual_seed(seed + 1)
    cots = [torch.randn(o.shape, generator=g).to(DEVICE, dtype) for o in ours_out]
    for i, (x, ref) in enumerate(zip(ours_out, ref_out)):
        assert x.dtype == dtype and x.shape == ref.shape, f"output {i}"
        assert rel_err(x.double(), ref) < TOL[dtype], f"output {i}: {rel_err(x.double(), ref):.2e}"
    ours_g = torch.autograd.grad(ours_out, ours_in, cots, allow_unused=False)
    ref_g = torch.autograd.grad(ref_out, ref_in, [c.double() for c in cots])
    for name, x, ref, inp in zip(names, ours_g, ref_g, ours_in):
        assert x.dtype == inp.dtype and x.shape == inp.shape, name
        err = rel_err(x.double(), ref)
        # parameter gradients are sums over every token: float32 accumulation, tighter than the inputs
        assert err < TOL[dtype], f"d{name}: relative error {err:.2e}"


@pytest.mark.parametrize(("B", "T", "H", "K", "dtype"), SHAPES)
@pytest.mark.parametrize("with_v_first", [False, True])
@pytest.mark.parametrize("with_keep", [False, True])
@pytest.mark.parametrize("sliced", [False, True])
def test_prepare_matches_the_reference(B, T, H, K, dtype, with_v_first, with_keep, sliced):
    seed = B * T + H * K + 2 * with_v_first + with_keep
    g = torch.Generator().manual_seed(seed)
    D = H * K
    names = ["k", "w_raw", "a_raw", "v", "k_k", "k_a"] + (["v_first", "v_mix_raw"] if with_v_first else [])
    x = {n: _randn(B, T, D, g=g, dtype=dtype, scale=2.0, sliced=sliced) for n in names if n not in ("k_k", "k_a")}
    x["k_k"] = (torch.rand(D, generator=g) + 0.2).to(DEVICE)   # parameters stay float32 under autocast
    x["k_a"] = (2 * torch.rand(D, generator=g)).to(DEVICE)
    keep = (torch.rand(B, T, generator=g) > 0.3).to(DEVICE) if with_keep else None
    ours_in = [x[n].detach().requires_grad_() for n in names]  # a slice stays a slice
    ref_in = [x[n].double().requires_grad_() for n in names]

    def call(fn, t, out_dtype):
        d = dict(zip(names, t))
        return fn(d["k"], d["w_raw"], d["a_raw"], d["v"], d.get("v_first"), d.get("v_mix_raw"), d["k_k"],
                  d["k_a"], keep, H, W_SCALE, out_dtype)

    ours = call(triton_time_mix.time_mix_prepare_triton, ours_in, dtype)
    ref = call(time_mix_prepare_reference, ref_in, torch.float64)
    check_gradients(ours, ref, ours_in, ref_in, names, dtype, seed)
    if with_keep:  # a padding position is an identity step: no decay, no write, no removal
        for out in (ours[0], ours[1], ours[3], ours[4]):
            assert (out[~keep] == 0).all()


@pytest.mark.parametrize(("B", "T", "H", "K", "dtype"), SHAPES)
@pytest.mark.parametrize("sliced", [False, True])
def test_readout_matches_the_reference(B, T, H, K, dtype, sliced):
    seed = 7 * T + K
    g = torch.Generator().manual_seed(seed)
    names = ["o", "r", "k", "v", "g", "ln_weight", "ln_bias", "r_k"]
    x = {n: _randn(B, T, H, K, g=g, dtype=dtype, scale=2.0) for n in ("o", "k", "v")}
    x["r"] = _randn(B, T, H * K, g=g, dtype=dtype, scale=2.0, sliced=sliced).unflatten(-1, (H, K))
    x["g"] = _randn(B, T, H * K, g=g, dtype=dtype)
    x["ln_weight"], x["ln_bias"] = (torch.randn(H * K, generator=g).to(DEVICE) for _ in range(2))
    x["r_k"] = torch.randn(H, K, generator=g).to(DEVICE)
    ours_in = [x[n].detach().requires_grad_() for n in names]
    ref_in = [x[n].double().requires_grad_() for n in names]
    eps = K * 1e-5
    ours = triton_time_mix.time_mix_readout_triton(*ours_in, eps)
    ref = time_mix_readout_reference(*ref_in, eps)
    check_gradients([ours], [ref], ours_in, ref_in, names, dtype, seed)


def test_nan_reaches_the_output_and_the_gradients():
    g = torch.Generator().manual_seed(0)
    B, T, H, K, D = 1, 4, 2, 16, 32
    k, w_raw, a_raw, v = (_randn(B, T, D, g=g, dtype=f32) for _ in range(4))
    k[0, 2, 5] = float("nan")  # one k of head 0 at t = 2: that head's kk is NaN
    k.requires_grad_()
    ones = torch.ones(D, device=DEVICE)
    _, _, _, a, _ = triton_time_mix.time_mix_prepare_triton(k, w_raw, a_raw, v, None, None, ones, ones, None, H,
                                                              W_SCALE, f32)
    assert torch.isnan(a[0, 2, 0]).all() and torch.isfinite(a[0, :2]).all() and torch.isfinite(a[0, 2, 1]).all()
    (dk,) = torch.autograd.grad(a.sum(), k)
    assert torch.isnan(dk[0, 2, :16]).all()
    o = _randn(B, T, H, K, g=g, dtype=f32)
    o[0, 1, 1, 3] = float("inf")
    out = triton_time_mix.time_mix_readout_triton(o, o, o, o, torch.ones(B, T, D, device=DEVICE), ones,
                                                  torch.zeros(D, device=DEVICE), torch.ones(H, K, device=DEVICE),
                                                  1e-5)
    assert not torch.isfinite(out[0, 1, 16:]).any() and torch.isfinite(out[0, 0]).all()


@pytest.mark.skipif(not HAS_CUDA, reason="the dispatch sends CUDA tensors to Triton")
def test_dispatch_sends_cuda_tensors_to_the_fused_kernels():
    x = torch.randn(1, 3, 2, 16, device="cuda", requires_grad=True)
    out = dispatch.time_mix_readout(x, x, x, x, torch.ones(1, 3, 32, device="cuda"), torch.ones(32, device="cuda"),
                                    torch.zeros(32, device="cuda"), torch.ones(2, 16, device="cuda"), 1e-5)
    assert out.grad_fn is not None and "Readout" in type(out.grad_fn).__name__
