"""WKV-7: the chunked PyTorch version against the sequential reference (forward and every gradient)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dir7_kernels import wkv7, wkv7_chunked, wkv7_naive


def rwkv7_inputs(B, T, H, K, V=None, dtype=torch.float64, log_decay="rwkv7", seed=0):
    """Inputs shaped like RWKV-7's: unit-norm removal key kk, a = -kk, b = kk * eta."""
    g = torch.Generator().manual_seed(seed)
    V = V or K

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    r, k, v = randn(B, T, H, K), randn(B, T, H, K), randn(B, T, H, V)
    if log_decay == "rwkv7":
        w = -0.6065306597126334 * torch.sigmoid(randn(B, T, H, K))
    else:  # fla's test distribution: stronger, occasionally near-zero decays
        w = F.logsigmoid(randn(B, T, H, K))
    kk = F.normalize(randn(B, T, H, K), dim=-1)
    eta = torch.sigmoid(randn(B, T, H, K))
    return r, w, k, v, -kk, kk * eta


def rel_err(x, ref):
    """||x - ref|| / ||ref||; a reference that is exactly zero (e.g. d o / d w_0 with no
    initial state at T = 1) is compared in absolute terms through the floor 1e-3."""
    assert torch.isfinite(x).all(), "NaN or inf never passes"
    return ((x - ref).norm() / ref.norm().clamp_min(1e-3)).item()


@pytest.mark.parametrize("T", [1, 15, 17, 63, 100])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_matches_naive_forward_and_gradients(T, with_state):
    B, H, K = 2, 3, 16
    inputs = [x.requires_grad_() for x in rwkv7_inputs(B, T, H, K, V=12, seed=T)]
    s0 = torch.randn(B, H, K, 12, dtype=torch.float64, requires_grad=True) if with_state else None
    do = torch.randn(B, T, H, 12, dtype=torch.float64)
    dS = torch.randn(B, H, K, 12, dtype=torch.float64)

    results = []
    for fn in (wkv7_naive, wkv7_chunked):
        o, S = fn(*inputs, initial_state=s0, output_final_state=True)
        leaves = [*inputs, s0] if with_state else inputs
        grads = torch.autograd.grad((o * do).sum() + (S * dS).sum(), leaves)
        results.append((o, S, grads))

    (o1, S1, g1), (o2, S2, g2) = results
    assert rel_err(o2, o1) < 1e-10
    assert rel_err(S2, S1) < 1e-10
    for name, a, b in zip("r w k v a b s0".split(), g2, g1):
        assert rel_err(a, b) < 1e-9, f"gradient of {name}"


@pytest.mark.parametrize("chunk_size", [8, 16, 32, 64])
def test_chunk_sizes_and_strong_decay(chunk_size):
    inputs = rwkv7_inputs(1, 70, 2, 16, log_decay="logsigmoid", seed=chunk_size)
    o1, S1 = wkv7_naive(*inputs, output_final_state=True)
    o2, S2 = wkv7_chunked(*inputs, output_final_state=True, chunk_size=chunk_size)
    assert rel_err(o2, o1) < 1e-9 and rel_err(S2, S1) < 1e-9


def test_float32_and_bfloat16_inputs_against_float64_reference():
    ref_inputs = rwkv7_inputs(2, 50, 2, 32, seed=3)
    o_ref, S_ref = wkv7_naive(*ref_inputs, output_final_state=True)
    for dtype, tol in ((torch.float32, 2e-3), (torch.bfloat16, 1e-2)):
        o, S = wkv7_chunked(*(x.to(dtype) for x in ref_inputs), output_final_state=True)
        assert o.dtype == dtype and S.dtype == torch.float32  # the state is always kept in float32
        assert rel_err(o.double(), o_ref) < tol
        assert rel_err(S.double(), S_ref) < tol


def test_two_parts_with_carried_state_equal_one_pass():
    inputs = rwkv7_inputs(2, 41, 2, 16, seed=5)
    o, S = wkv7_chunked(*inputs, output_final_state=True)
    first = [x[:, :23] for x in inputs]
    second = [x[:, 23:] for x in inputs]
    o_a, S_a = wkv7_chunked(*first, output_final_state=True)
    o_b, S_b = wkv7_chunked(*second, initial_state=S_a, output_final_state=True)
    assert rel_err(torch.cat([o_a, o_b], 1), o) < 1e-12
    assert rel_err(S_b, S) < 1e-12


def test_scale_and_dispatch():
    inputs = rwkv7_inputs(1, 9, 1, 16, seed=7)
    o1, _ = wkv7_naive(*inputs, scale=0.25)
    o2, _ = wkv7(*inputs, scale=0.25)
    assert rel_err(o2, o1) < 1e-12
    o_unscaled, _ = wkv7(*inputs)
    assert rel_err(o2, 0.25 * o_unscaled) < 1e-12


def test_cpu_dispatch_trains_through_the_chunked_form_and_infers_through_the_compiled_loop(monkeypatch):
    """On the CPU a gradient (or float64) takes the differentiable chunked form; inference takes
    the Numba loop; both give the reference's output."""
    from dir7_kernels import dispatch

    calls = []
    cpu = dispatch._cpu_kernel()
    assert cpu is not None, "Numba is a dependency: the CPU kernel must import"
    monkeypatch.setattr(dispatch, "_cpu_kernel", lambda: lambda *a: calls.append("cpu") or cpu(*a))
    monkeypatch.setattr(dispatch, "wkv7_chunked", lambda *a: calls.append("chunked") or wkv7_chunked(*a))
    inputs = [x.float() for x in rwkv7_inputs(1, 12, 2, 16, seed=8)]
    ref, _ = wkv7_naive(*(x.double() for x in inputs))
    o, _ = wkv7(*inputs)
    assert calls == ["cpu"] and rel_err(o.double(), ref) < 1e-5
    wkv7(*(x.double() for x in inputs))
    assert calls[-1] == "chunked"
    leaf = inputs[0].clone().requires_grad_()
    o, _ = wkv7(leaf, *inputs[1:])
    assert calls[-1] == "chunked" and o.requires_grad


def test_delta_rule_recalls_a_stored_value():
    """With eta = 1 and no decay, writing (k, v) after removing k's old value makes S^T k = v."""
    K = 16
    k = F.normalize(torch.randn(1, 2, 1, K, dtype=torch.float64), dim=-1)
    k = torch.cat([k[:, :1], k[:, :1]], dim=1)           # the same key twice
    v = torch.randn(1, 2, 1, K, dtype=torch.float64)     # two different values
    w = torch.zeros_like(k)
    o, _ = wkv7_naive(k, w, k, v, -k, k)                 # read with r = k
    assert torch.allclose(o[0, 1, 0], v[0, 1, 0])        # the second write replaced the first


def test_bad_shapes_raise():
    r, w, k, v, a, b = rwkv7_inputs(1, 4, 2, 8)
    with pytest.raises(ValueError, match="w has shape"):
        wkv7_chunked(r, w[:, :3], k, v, a, b)
    with pytest.raises(ValueError, match="initial_state"):
        wkv7_chunked(r, w, k, v, a, b, initial_state=torch.zeros(1, 2, 8, 3, dtype=r.dtype))
    with pytest.raises(ValueError, match=r"\[B, T, H, K\]"):
        wkv7_chunked(r[0], w, k, v, a, b)


def test_the_kernel_accessors_do_not_break_a_compiled_graph():
    """Every dispatch call of a layer asks an accessor for its kernels; under torch.compile a
    call that traced an import (or a functools.cache wrapper) split the model into one graph per
    call site. Once resolved (on a GPU machine: when kernels is imported) they trace as constants."""
    from dir7_kernels import dispatch

    if torch.cuda.is_available():  # imported with kernels.dispatch, before any accessor ran
        assert all(m in dispatch._FOUND for m in dispatch.TRITON_MODULES)
    accessors = (dispatch._cpu_kernel, dispatch._cpu_time_mix, dispatch._triton_kernels, dispatch._triton_time_mix,
                 dispatch._triton_adaln, dispatch._triton_token_shift)
    for accessor in accessors:
        accessor()

    def f(x):
        found = sum(accessor() is not None for accessor in accessors)
        return x * 2 + found

    explained = torch._dynamo.explain(f)(torch.randn(4))
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
