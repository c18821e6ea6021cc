"""Fused-recurrent WKV-7 forward in Triton (inference, short T; no backward).

One program owns one ``(batch, head, V-tile)``: the ``[K, BV]`` slice of the float32 state
lives in registers for the whole sequence, and the program walks ``t = 0 .. T-1``:

    sa_t = a_t^T S_{t-1}                                   [BV]   what the delta rule removes
    o_t  = scale * ((r_t * d_t)^T S_{t-1} + (r_t . b_t) sa_t + (r_t . k_t) v_t)
    S_t  = d_t * S_{t-1} + b_t sa_t^T + k_t v_t^T          d_t = exp(w_t)

``o_t`` is ``scale * S_t^T r_t`` expanded so that it reads ``S_{t-1}``: its reduction over K
runs side by side with the one for ``sa_t`` instead of waiting for the update, which halves
the dependent chain per step (the chain, not bandwidth, bounds this kernel). The inputs of
step ``t + 2`` are loaded while step ``t`` computes, so load latency stays off the chain.

V is split across programs (``BV`` columns each) for parallelism; each V-tile re-reads the
K-sized vectors (from L2).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .naive import check_wkv7_inputs
from .triton_common import contiguous

# Default launch shape, chosen on an H100 by ``python -m benchmarks.wkv7`` (docs/wkv7-kernel-notes.md).
DEFAULT_BV = 16
DEFAULT_NUM_WARPS = 1


@triton.jit
def _load_step(r, w, k, v, a, b, t, T, base_k, base_v, o_k, o_v, m_k, m_v, HK, HV):
    """The six input vectors of step ``t`` as float32 (zeros, and w = 0, past the end)."""
    # (a tensor comparison: a Python bool mask breaks the interpreter)
    mk = m_k & ((o_k * 0 + t) < T)
    mv = m_v & ((o_v * 0 + t) < T)
    off_k = base_k + t * HK + o_k
    off_v = base_v + t * HV + o_v
    b_r = tl.load(r + off_k, mask=mk, other=0.0).to(tl.float32)
    b_w = tl.load(w + off_k, mask=mk, other=0.0).to(tl.float32)
    b_k = tl.load(k + off_k, mask=mk, other=0.0).to(tl.float32)
    b_v = tl.load(v + off_v, mask=mv, other=0.0).to(tl.float32)
    b_a = tl.load(a + off_k, mask=mk, other=0.0).to(tl.float32)
    b_b = tl.load(b + off_k, mask=mk, other=0.0).to(tl.float32)
    return b_r, b_w, b_k, b_v, b_a, b_b


@triton.jit
def _recurrent_fwd_kernel(
    r, w, k, v, a, b,          # [B, T, H, K] (v: [B, T, H, V]), any float dtype
    o,                         # [B, T, H, V] output
    h0,                        # [B, H, K, V] float32 initial state (or dummy)
    ht,                        # [B, H, K, V] float32 final state (or dummy)
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    HK, HV = H * K, H * V
    # int64 offsets: B * T * H * K overflows int32 at long sequences
    base_k = i_b.to(tl.int64) * T * HK + i_h * K
    base_v = i_b.to(tl.int64) * T * HV + i_h * V
    state_off = i_bh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :]
    m_state = m_k[:, None] & m_v[None, :]

    S = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        S += tl.load(h0 + state_off, mask=m_state, other=0.0)

    # two steps in flight ahead of the one being computed (plain variables, not tuples, so
    # the loop-carried values stay simple for older Triton versions)
    r0, w0, k0, v0, a0, b0 = _load_step(r, w, k, v, a, b, 0, T, base_k, base_v, o_k, o_v, m_k, m_v, HK, HV)
    r1, w1, k1, v1, a1, b1 = _load_step(r, w, k, v, a, b, 1, T, base_k, base_v, o_k, o_v, m_k, m_v, HK, HV)
    for t in range(0, T):
        r2, w2, k2, v2, a2, b2 = _load_step(
            r, w, k, v, a, b, t + 2, T, base_k, base_v, o_k, o_v, m_k, m_v, HK, HV
        )
        d = tl.exp(w0)
        sa = tl.sum(a0[:, None] * S, 0)                        # a_t^T S_{t-1}          [BV]
        so = tl.sum((r0 * d)[:, None] * S, 0)                  # (r_t * d_t)^T S_{t-1}  [BV]
        rb = tl.sum(r0 * b0, 0)
        rk = tl.sum(r0 * k0, 0)
        b_o = scale * (so + rb * sa + rk * v0)
        tl.store(o + base_v + t * HV + o_v, b_o.to(o.dtype.element_ty), mask=m_v)
        S = d[:, None] * S + b0[:, None] * sa[None, :] + k0[:, None] * v0[None, :]
        r0, w0, k0, v0, a0, b0 = r1, w1, k1, v1, a1, b1
        r1, w1, k1, v1, a1, b1 = r2, w2, k2, v2, a2, b2

    if STORE_HT:
        tl.store(ht + state_off, S, mask=m_state)


def wkv7_triton_recurrent(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    *,
    out: torch.Tensor | None = None,
    final_state_out: torch.Tensor | None = None,
    BV: int | None = None,
    num_warps: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fused-recurrent forward; same contract as :func:`kernels.naive.wkv7_naive`.

    Not differentiable (use :func:`kernels.triton_chunk.wkv7_triton_chunk` for training).
    ``out`` / ``final_state_out`` let the caller supply the output buffers (``[B, T, H, V]`` in
    r's dtype, ``[B, H, K, V]`` float32), e.g. views into a larger buffer.
    """
    check_wkv7_inputs(r, w, k, v, a, b, initial_state)
    B, T, H, K = r.shape
    V = v.shape[-1]
    r, w, k, v, a, b = contiguous(r, w, k, v, a, b)
    o = out if out is not None else torch.empty(B, T, H, V, dtype=r.dtype, device=r.device)
    ht = None
    if output_final_state:
        ht = final_state_out if final_state_out is not None else r.new_empty(B, H, K, V, dtype=torch.float32)
    h0 = None if initial_state is None else initial_state.to(torch.float32).contiguous()
    if T == 0:
        if ht is not None:
            ht.copy_(h0 if h0 is not None else torch.zeros_like(ht))
        return o, ht

    BK = max(16, triton.next_power_of_2(K))
    BV = BV or min(DEFAULT_BV, max(16, triton.next_power_of_2(V)))
    grid = (triton.cdiv(V, BV), B * H)
    _recurrent_fwd_kernel[grid](
        r, w, k, v, a, b, o,
        h0 if h0 is not None else o,          # dummies are never read (constexpr flags)
        ht if ht is not None else o,
        float(scale), T,
        H=H, K=K, V=V, BK=BK, BV=BV,
        USE_H0=h0 is not None, STORE_HT=ht is not None,
        num_warps=num_warps or DEFAULT_NUM_WARPS,
    )
    return o, ht
