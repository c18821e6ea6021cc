"""The time-mix layer's element-wise work: the compiled CPU versions against the PyTorch references."""

from __future__ import annotations

import pytest
import torch

from dir7_kernels import dispatch
from dir7_kernels.cpu_time_mix import time_mix_prepare_cpu, time_mix_readout_cpu
from dir7_kernels.time_mix import time_mix_prepare_reference, time_mix_readout_reference
from tests.kernels.test_chunked import rel_err

W_SCALE = -0.6065306597126334


def prepare_inputs(B, T, H, K, with_v_first, with_keep, seed):
    g = torch.Generator().manual_seed(seed)
    D = H * K
    k, w_raw, a_raw, v, v_first, v_mix = (3 * torch.randn(B, T, D, generator=g) for _ in range(6))
    k_k, k_a = torch.rand(D, generator=g) + 0.2, 2 * torch.rand(D, generator=g)
    keep = torch.rand(B, T, generator=g) > 0.3 if with_keep else None
    return (k, w_raw, a_raw, v, v_first if with_v_first else None, v_mix if with_v_first else None,
            k_k, k_a, keep, H, W_SCALE, torch.float32)


@pytest.mark.parametrize(("B", "T", "H", "K"), [(1, 1, 1, 16), (2, 37, 3, 16), (3, 9, 6, 32), (1, 5, 2, 24)])
@pytest.mark.parametrize("with_v_first", [False, True])
@pytest.mark.parametrize("with_keep", [False, True])
def test_prepare_matches_the_reference(B, T, H, K, with_v_first, with_keep):
    args = prepare_inputs(B, T, H, K, with_v_first, with_keep, seed=B * T + H)
    got, want = time_mix_prepare_cpu(*args), time_mix_prepare_reference(*args)
    for name, x, ref in zip(("w", "k", "v", "a", "b"), got, want):
        assert x.shape == ref.shape == (B, T, H, K) and x.dtype == ref.dtype, name
        assert rel_err(x.double(), ref.double()) < 1e-5, name
    if with_keep:  # a padding position is an identity step: no decay, no write, no removal
        dropped = ~args[8]
        for name, x in zip(("w", "k", "a", "b"), (got[0], got[1], got[3], got[4])):
            assert (x[dropped] == 0).all(), name


@pytest.mark.parametrize(("B", "T", "H", "K"), [(1, 1, 1, 16), (2, 37, 3, 16), (3, 9, 6, 32), (1, 5, 2, 24)])
def test_readout_matches_the_reference(B, T, H, K):
    g = torch.Generator().manual_seed(T)
    o, r, k, v = (2 * torch.randn(B, T, H, K, generator=g) for _ in range(4))
    gate = torch.randn(B, T, H * K, generator=g)
    ln_w, ln_b, r_k = torch.randn(H * K, generator=g), torch.randn(H * K, generator=g), torch.randn(H, K, generator=g)
    args = (o, r, k, v, gate, ln_w, ln_b, r_k, K * 1e-5)
    got, want = time_mix_readout_cpu(*args), time_mix_readout_reference(*args)
    assert got.shape == want.shape == (B, T, H * K)
    assert rel_err(got.double(), want.double()) < 1e-5


def test_nan_reaches_the_output():
    args = list(prepare_inputs(1, 4, 2, 16, True, False, seed=3))
    args[0][0, 2, 5] = float("nan")  # one k of head 0 at t = 2: that head's kk is NaN
    a = time_mix_prepare_cpu(*args)[3]
    assert torch.isnan(a[0, 2, 0]).all() and torch.isfinite(a[0, :2]).all() and torch.isfinite(a[0, 2, 1]).all()
    o = torch.randn(1, 4, 2, 16)
    o[0, 1, 1, 3] = float("inf")
    out = time_mix_readout_cpu(o, o, o, o, torch.ones(1, 4, 32), torch.ones(32), torch.zeros(32), torch.ones(2, 16),
                               1e-5)
    assert not torch.isfinite(out[0, 1, 16:]).any() and torch.isfinite(out[0, 0]).all()


def test_dispatch_uses_the_references_for_gradients_and_float64():
    args = list(prepare_inputs(2, 5, 2, 16, True, True, seed=5))
    calls = []
    real = dispatch._cpu_time_mix()
    dispatch_fns = (lambda *a: calls.append("prepare") or real[0](*a),
                    lambda *a: calls.append("readout") or real[1](*a))
    original = dispatch._cpu_time_mix
    try:
        dispatch._cpu_time_mix = lambda: dispatch_fns
        with torch.no_grad():
            dispatch.time_mix_prepare(*args)
        assert calls == ["prepare"]
        args[0] = args[0].clone().requires_grad_()
        out = dispatch.time_mix_prepare(*args)
        assert calls == ["prepare"] and out[1].requires_grad  # the reference, differentiable
        double = [x.double() if torch.is_tensor(x) and x.is_floating_point() else x for x in args]
        with torch.no_grad():
            dispatch.time_mix_prepare(*double)
        assert calls == ["prepare"]
    finally:
        dispatch._cpu_time_mix = original
