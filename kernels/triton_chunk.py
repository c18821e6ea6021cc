"""Chunked WKV-7 in Triton: one fused forward kernel, one fused backward kernel.

Same maths as :mod:`kernels.chunked` (read its docstring for the WY-form derivation); per
chunk of C steps, one head, incoming state S_0 ([K, V]), chunk-local cumulative log-decay
cw_t = sum_{j<=t} w_j:

    L_ab, L_ak  strictly lower [C, C]      L_xy[t, s] = x_t^T G(t-1, s) y_s
    Q_rb, Q_rk  lower incl. diagonal       Q_xy[t, s] = x_t^T G(t, s) y_s
    u   = (I - L_ab)^{-1} (A_dec S_0 + L_ak V)         [C, V]  u_t = a_t^T S_{t-1}
    o   = scale * (R_dec S_0 + Q_rb u + Q_rk V)
    S_C = exp(cw_C) * S_0 + B_end^T u + K_end^T V

with A_dec = a_t exp(cw_{t-1}), R_dec = r_t exp(cw_t), B_end / K_end = b_s / k_s exp(cw_C - cw_s).

Forward: one program per (batch, head, V-tile) walks the chunks in order with the state in
registers, so the whole forward is ONE launch (fla uses several kernels and round trips
through memory for the same work). For training it also writes the state entering each
chunk (``[B, H, NT, K, V]`` float32) for the backward. The default kernel holds the state
transposed (S^T) and multiplies in bf16 for half inputs, so each product on the chain feeds
the next in registers (see _chunk_fwd_kernel). Variants that measured slower (the S-layout
forward, a two-pass and a look-ahead forward, register caps) are described, with their
numbers and the commit that last held them, in docs/performance.md.

Backward: one program per (batch, head) walks the chunks in reverse with dS (the gradient
w.r.t. the state leaving the chunk) in registers, recomputes the chunk's matrices, and emits
every gradient of the chunk directly: again ONE launch. It needs the whole V per program
(the gradients of r, w, k, a, b sum over V), so its parallelism is B * H programs.

Numerical traps (also in kernels/chunked.py):
- pairwise decays exp(cw_t - cw_s) are factorised around the chunk's middle,
  exp(cw_t - m) * exp(m - cw_s), so each factor stays below exp(|sum of w over C/2 steps|);
  float32 overflows only past about 80 in the exponent (C = 16: 8 steps of w < -10 each).
  Entries with s > t would be the huge ones; they are masked with ``tl.where`` after the
  product, never multiplied by zero.
- the gradient w.r.t. the middle reference m is exactly zero (it cancels inside every
  product), so it is not propagated.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .naive import check_wkv7_inputs
from .triton_common import block_size, contiguous, dot_precision, fwd_precision, mm, unit_lower_inverse

# Launch defaults, chosen on an H100 by ``python -m benchmarks.wkv7 --sweep`` (docs/performance.md).
DEFAULT_CHUNK = 16        # chunk length of the inference forward
DEFAULT_FWD_BV = 32       # V columns per forward program (V may be split for parallelism)
DEFAULT_FWD_WARPS = 2
TRAIN_CHUNK = 16          # chunk length of forward + backward (both must use the same)
DEFAULT_BWD_WARPS = 8


# =====================================================================================
# Per-chunk helpers
# =====================================================================================


@triton.jit
def _load_chunk(x, base, t0, T, o_c, o_x, m_x, HX):
    """Rows t0 .. t0+C-1 of one head of a [B, T, H, X] tensor as float32 [C, BX] (0 past T)."""
    rows = t0 + o_c
    ptr = x + base + rows[:, None] * HX + o_x[None, :]
    return tl.load(ptr, mask=(rows < T)[:, None] & m_x[None, :], other=0.0).to(tl.float32)


@triton.jit
def _chunk_decays(b_w, o_c, C: tl.constexpr):
    """Cumulative log-decays of one chunk: cw (inclusive), cw_prev, mid and end rows (in the
    log base of ``b_w``: the S^T forward passes log2 units)."""
    cw = tl.cumsum(b_w, 0)                                               # [C, K]
    cw_prev = cw - b_w                                                   # cw_{t-1}
    mid = tl.sum(tl.where((o_c == C // 2)[:, None], cw, 0.0), 0)        # [K]
    # padded rows have w = 0, so the last row is the cumulative decay of the real steps
    cw_end = tl.sum(tl.where((o_c == C - 1)[:, None], cw, 0.0), 0)      # [K]
    return cw, cw_prev, mid, cw_end


# =====================================================================================
# Forward kernel
# =====================================================================================


@triton.jit
def _chunk_fwd_kernel(
    r, w, k, v, a, b,          # [B, T, H, K] (v: [B, T, H, V])
    o,                         # [B, T, H, V]
    h0, ht,                    # [B, H, K, V] float32 (dummies when unused)
    hs,                        # [B, H, NT, K, V] float32: state entering each chunk (training)
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    STORE_HS: tl.constexpr,
    PRECISION: tl.constexpr,   # "bf16" (half inputs) or "ieee" (float32): see fwd_precision
):
    """The forward with the state held transposed, S^T [BV, K], and every equation of the
    header transposed with it:

        rhs^T = S^T A_dec^T + V^T L_ak^T        u^T = rhs^T T_inv^T
        o^T   = S^T R_dec^T + u^T Q_rb^T + V^T Q_rk^T
        S_C^T = S^T diag(exp(cw_C)) + u^T B_end + V^T K_end

    Why: on the chain from one chunk's state to the next, every product's result (S^T,
    rhs^T, u^T) is then the *left* operand of the next product, which with 16-bit operands
    stays in registers; in the [K, V] form each of them crossed shared memory (with a
    barrier) to become a right operand. The right operands (A_dec^T, T_inv^T, Q^T, B_end,
    ...) do not depend on the state. On sm_90 this cut the chunk loop from 1,722 to 1,084
    instructions per warp (docs/wkv7-kernel-notes.md, session 4).
    """
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, C)
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    base_k = i_b.to(tl.int64) * T * H * K + i_h * K
    base_v = i_b.to(tl.int64) * T * H * V + i_h * V
    state_off = o_v[:, None] + o_k[None, :] * V          # S^T[v, k] is stored at S[k, v]
    m_state = m_v[:, None] & m_k[None, :]
    strict_t = o_c[:, None] < o_c[None, :]               # [s, t]: s < t (transposed strict)
    causal_t = o_c[:, None] <= o_c[None, :]

    St = tl.zeros([BV, BK], dtype=tl.float32)                                          # S^T
    if USE_H0:
        St += tl.load(h0 + i_bh.to(tl.int64) * K * V + state_off, mask=m_state, other=0.0)

    for i_t in range(0, NT):
        t0 = i_t * C
        rows = t0 + o_c
        if STORE_HS:
            tl.store(hs + (i_bh.to(tl.int64) * NT + i_t) * K * V + state_off, St, mask=m_state)
        # ---- state-independent part
        b_r = _load_chunk(r, base_k, t0, T, o_c, o_k, m_k, H * K)                      # [C, K]
        b_w = _load_chunk(w, base_k, t0, T, o_c, o_k, m_k, H * K)
        b_k = _load_chunk(k, base_k, t0, T, o_c, o_k, m_k, H * K)
        b_a = _load_chunk(a, base_k, t0, T, o_c, o_k, m_k, H * K)
        b_b = _load_chunk(b, base_k, t0, T, o_c, o_k, m_k, H * K)
        vt_mask = m_v[:, None] & (rows < T)[None, :]
        b_vt = tl.load(v + base_v + rows[None, :] * H * V + o_v[:, None], mask=vt_mask,
                       other=0.0).to(tl.float32)                                        # V^T [BV, C]
        # log-decays in log2 units: tl.exp2 skips the multiply (and range checks) tl.exp adds
        cw, cw_prev, mid, cw_end = _chunk_decays(b_w * 1.4426950408889634, o_c, C)
        r_m = b_r * tl.exp2(cw - mid[None, :])
        a_m = b_a * tl.exp2(cw_prev - mid[None, :])
        down = tl.exp2(mid[None, :] - cw)
        b_m = b_b * down
        k_m = b_k * down
        # transposed pair products, [C, C] indexed [s, t]
        L_abT = tl.where(strict_t, mm(b_m, tl.trans(a_m), PRECISION), 0.0)
        L_akT = tl.where(strict_t, mm(k_m, tl.trans(a_m), PRECISION), 0.0)
        Q_rbT = tl.where(causal_t, mm(b_m, tl.trans(r_m), PRECISION), 0.0)
        Q_rkT = tl.where(causal_t, mm(k_m, tl.trans(r_m), PRECISION), 0.0)
        T_invT = unit_lower_inverse(L_abT, C, PRECISION)                                  # (I - L_ab)^-T
        a_decT = tl.trans(b_a * tl.exp2(cw_prev))                                        # [K, C]
        r_decT = tl.trans(b_r * tl.exp2(cw))
        to_end = tl.exp2(cw_end[None, :] - cw)
        b_end = b_b * to_end                                                              # [C, K]
        k_end = b_k * to_end

        # ---- the chain through the state
        rhsT = mm(St, a_decT, PRECISION) + mm(b_vt, L_akT, PRECISION)                     # [BV, C]
        uT = mm(rhsT, T_invT, PRECISION)                                                  # [BV, C]
        oT = mm(St, r_decT, PRECISION) + mm(uT, Q_rbT, PRECISION) + mm(b_vt, Q_rkT, PRECISION)
        p_o = o + base_v + rows[None, :] * H * V + o_v[:, None]
        tl.store(p_o, (scale * oT).to(o.dtype.element_ty), mask=vt_mask)
        St = tl.exp2(cw_end)[None, :] * St + mm(uT, b_end, PRECISION) + mm(b_vt, k_end, PRECISION)

    if STORE_HT:
        tl.store(ht + i_bh.to(tl.int64) * K * V + state_off, St, mask=m_state)


# =====================================================================================
# Backward kernel
# =====================================================================================


@triton.jit
def _chunk_bwd_kernel(
    r, w, k, v, a, b,          # inputs as in the forward
    hs,                        # [B, H, NT, K, V] float32 states entering each chunk
    do,                        # [B, T, H, V] gradient of o
    dht,                       # [B, H, K, V] gradient of the final state (dummy if none)
    dr, dw, dk, dv, da, db,    # outputs, same shapes and dtypes as the inputs
    dh0,                       # [B, H, K, V] float32 gradient of the initial state (dummy)
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_DHT: tl.constexpr,
    STORE_DH0: tl.constexpr,
    PRECISION: tl.constexpr,
):
    i_bh = tl.program_id(0)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, C)
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_state = m_k[:, None] & m_v[None, :]
    base_k = i_b.to(tl.int64) * T * H * K + i_h * K
    base_v = i_b.to(tl.int64) * T * H * V + i_h * V
    state_off = o_k[:, None] * V + o_v[None, :]
    strict = o_c[:, None] > o_c[None, :]
    causal = o_c[:, None] >= o_c[None, :]

    dS = tl.zeros([BK, BV], dtype=tl.float32)        # gradient w.r.t. the state leaving the chunk
    if USE_DHT:
        dS += tl.load(dht + i_bh.to(tl.int64) * K * V + state_off, mask=m_state, other=0.0)

    for j in range(0, NT):
        i_t = NT - 1 - j
        t0 = i_t * C
        rows = t0 + o_c
        m_rows_k = (rows < T)[:, None] & m_k[None, :]
        m_rows_v = (rows < T)[:, None] & m_v[None, :]
        S0 = tl.load(hs + (i_bh.to(tl.int64) * NT + i_t) * K * V + state_off, mask=m_state, other=0.0)
        b_r = _load_chunk(r, base_k, t0, T, o_c, o_k, m_k, H * K)
        b_w = _load_chunk(w, base_k, t0, T, o_c, o_k, m_k, H * K)
        b_k = _load_chunk(k, base_k, t0, T, o_c, o_k, m_k, H * K)
        b_a = _load_chunk(a, base_k, t0, T, o_c, o_k, m_k, H * K)
        b_b = _load_chunk(b, base_k, t0, T, o_c, o_k, m_k, H * K)
        b_v = _load_chunk(v, base_v, t0, T, o_c, o_v, m_v, H * V)
        # cast back: torch.compile hands a Python float over as a float64 scalar, which would
        # promote dO and break the float32 tl.dot calls below
        dO = (scale * _load_chunk(do, base_v, t0, T, o_c, o_v, m_v, H * V)).to(tl.float32)

        # ---- recompute the forward quantities of this chunk
        cw, cw_prev, mid, cw_end = _chunk_decays(b_w, o_c, C)
        e_rm = tl.exp(cw - mid[None, :])
        e_am = tl.exp(cw_prev - mid[None, :])
        e_bm = tl.exp(mid[None, :] - cw)
        r_m = b_r * e_rm
        a_m = b_a * e_am
        b_m = b_b * e_bm
        k_m = b_k * e_bm
        L_ab = tl.where(strict, mm(a_m, tl.trans(b_m), PRECISION), 0.0)
        L_ak = tl.where(strict, mm(a_m, tl.trans(k_m), PRECISION), 0.0)
        Q_rb = tl.where(causal, mm(r_m, tl.trans(b_m), PRECISION), 0.0)
        Q_rk = tl.where(causal, mm(r_m, tl.trans(k_m), PRECISION), 0.0)
        T_inv = unit_lower_inverse(L_ab, C, PRECISION)
        e_cw = tl.exp(cw)
        e_cwp = tl.exp(cw_prev)
        to_end = tl.exp(cw_end[None, :] - cw)
        dec_end = tl.exp(cw_end)
        a_dec = b_a * e_cwp
        r_dec = b_r * e_cw
        b_end = b_b * to_end
        k_end = b_k * to_end
        rhs = mm(a_dec, S0, PRECISION) + mm(L_ak, b_v, PRECISION)
        u = mm(T_inv, rhs, PRECISION)                       # [C, V]

        # ---- S_C = dec_end * S_0 + B_end^T u + K_end^T v
        du = mm(b_end, dS, PRECISION)                          # [C, V]
        b_dv = mm(k_end, dS, PRECISION)                        # [C, V]
        d_b_end = mm(u, tl.trans(dS), PRECISION)               # [C, K]
        d_k_end = mm(b_v, tl.trans(dS), PRECISION)             # [C, K]
        d_dec_end = tl.sum(S0 * dS, 1)                                             # [K]
        dS0 = dec_end[:, None] * dS
        # ---- o = scale * (R_dec S_0 + Q_rb u + Q_rk v)   (scale is folded into dO)
        dS0 += mm(tl.trans(r_dec), dO, PRECISION)
        d_r_dec = mm(dO, tl.trans(S0), PRECISION)              # [C, K]
        dQ_rb = tl.where(causal, mm(dO, tl.trans(u), PRECISION), 0.0)
        dQ_rk = tl.where(causal, mm(dO, tl.trans(b_v), PRECISION), 0.0)
        du += mm(tl.trans(Q_rb), dO, PRECISION)
        b_dv += mm(tl.trans(Q_rk), dO, PRECISION)
        # ---- u = (I - L_ab)^{-1} rhs:  d rhs = (I - L_ab)^{-T} du,  d L_ab = d rhs u^T
        drhs = mm(tl.trans(T_inv), du, PRECISION)
        dL_ab = tl.where(strict, mm(drhs, tl.trans(u), PRECISION), 0.0)
        # ---- rhs = A_dec S_0 + L_ak v
        dS0 += mm(tl.trans(a_dec), drhs, PRECISION)
        d_a_dec = mm(drhs, tl.trans(S0), PRECISION)           # [C, K]
        dL_ak = tl.where(strict, mm(drhs, tl.trans(b_v), PRECISION), 0.0)
        b_dv += mm(tl.trans(L_ak), drhs, PRECISION)
        tl.store(dv + base_v + rows[:, None] * H * V + o_v[None, :], b_dv.to(dv.dtype.element_ty),
                 mask=m_rows_v)
        dS = dS0                                            # hand the gradient to the previous chunk

        # ---- through the mid-factorised pair products (Q = r_m b_m^T etc.)
        d_r_m = mm(dQ_rb, b_m, PRECISION) + mm(dQ_rk, k_m, PRECISION)
        d_a_m = mm(dL_ab, b_m, PRECISION) + mm(dL_ak, k_m, PRECISION)
        d_b_m = mm(tl.trans(dQ_rb), r_m, PRECISION)
        d_b_m += mm(tl.trans(dL_ab), a_m, PRECISION)
        d_k_m = mm(tl.trans(dQ_rk), r_m, PRECISION)
        d_k_m += mm(tl.trans(dL_ak), a_m, PRECISION)

        # ---- back to r, a, b, k (each enters through a decayed copy and a mid-scaled copy)
        b_dr = d_r_dec * e_cw + d_r_m * e_rm
        b_da = d_a_dec * e_cwp + d_a_m * e_am
        b_db = d_b_end * to_end + d_b_m * e_bm
        b_dk = d_k_end * to_end + d_k_m * e_bm
        # ---- and to the cumulative log-decays: d/dc of x*exp(+-c) is +-x*exp(+-c), so each
        # term is (gradient of the scaled copy) * (scaled copy), whatever the factorisation
        g_cw = d_r_dec * r_dec + d_r_m * r_m - d_b_end * b_end - d_b_m * b_m - d_k_end * k_end - d_k_m * k_m
        g_cwp = d_a_dec * a_dec + d_a_m * a_m
        g_end = d_dec_end * dec_end + tl.sum(d_b_end * b_end + d_k_end * k_end, 0)          # [K]
        # cw_t = sum_{j<=t} w_j, cw_{t-1} = sum_{j<t} w_j, cw_end = sum_j w_j
        b_dw = tl.cumsum(g_cw, 0, reverse=True) + tl.cumsum(g_cwp, 0, reverse=True) - g_cwp
        b_dw += g_end[None, :]

        off_k = base_k + rows[:, None] * H * K + o_k[None, :]
        tl.store(dr + off_k, b_dr.to(dr.dtype.element_ty), mask=m_rows_k)
        tl.store(dw + off_k, b_dw.to(dw.dtype.element_ty), mask=m_rows_k)
        tl.store(dk + off_k, b_dk.to(dk.dtype.element_ty), mask=m_rows_k)
        tl.store(da + off_k, b_da.to(da.dtype.element_ty), mask=m_rows_k)
        tl.store(db + off_k, b_db.to(db.dtype.element_ty), mask=m_rows_k)

    if STORE_DH0:
        tl.store(dh0 + i_bh.to(tl.int64) * K * V + state_off, dS, mask=m_state)


# =====================================================================================
# Launchers
# =====================================================================================


def chunk_fwd(
    r, w, k, v, a, b, scale, initial_state, output_final_state,
    *, store_states=False, out=None, final_state_out=None, chunk_size=None, BV=None, num_warps=None,
    precision=None,
):
    """Launch the forward kernel. Returns ``(o, final state or None, chunk states or None)``."""
    B, T, H, K = r.shape
    V = v.shape[-1]
    C = chunk_size or DEFAULT_CHUNK
    NT = triton.cdiv(T, C)
    o = out if out is not None else torch.empty(B, T, H, V, dtype=r.dtype, device=r.device)
    ht = None
    if output_final_state:
        ht = final_state_out if final_state_out is not None else r.new_empty(B, H, K, V, dtype=torch.float32)
    hs = r.new_empty(B, H, NT, K, V, dtype=torch.float32) if store_states else None
    h0 = initial_state
    if T == 0:
        if ht is not None:
            ht.copy_(h0 if h0 is not None else torch.zeros_like(ht))
        return o, ht, hs
    BK = block_size(K)
    BV = min(BV or DEFAULT_FWD_BV, block_size(V))
    grid = (triton.cdiv(V, BV), B * H)
    _chunk_fwd_kernel[grid](
        r, w, k, v, a, b, o,
        h0 if h0 is not None else o,          # dummies are never touched (constexpr flags)
        ht if ht is not None else o,
        hs if hs is not None else o,
        float(scale), T,
        H=H, K=K, V=V, C=C, BK=BK, BV=BV,
        USE_H0=h0 is not None, STORE_HT=ht is not None, STORE_HS=hs is not None,
        PRECISION=precision or fwd_precision(r.dtype),
        num_warps=num_warps or DEFAULT_FWD_WARPS,
    )
    return o, ht, hs


def chunk_bwd(r, w, k, v, a, b, scale, hs, do, dht, need_dh0, *, chunk_size=None, num_warps=None,
              precision=None):
    """Launch the backward kernel. Returns ``(dr, dw, dk, dv, da, db, dh0 or None)``."""
    B, T, H, K = r.shape
    V = v.shape[-1]
    C = chunk_size or TRAIN_CHUNK
    dr, dw, dk, dv, da, db = (torch.empty_like(x) for x in (r, w, k, v, a, b))
    dh0 = r.new_empty(B, H, K, V, dtype=torch.float32) if need_dh0 else None
    if T == 0:
        if dh0 is not None:
            dh0.copy_(dht if dht is not None else torch.zeros_like(dh0))
        return dr, dw, dk, dv, da, db, dh0
    _chunk_bwd_kernel[(B * H,)](
        r, w, k, v, a, b, hs, do,
        dht if dht is not None else do,
        dr, dw, dk, dv, da, db,
        dh0 if dh0 is not None else do,
        float(scale), T,
        H=H, K=K, V=V, C=C, BK=block_size(K), BV=block_size(V),
        USE_DHT=dht is not None, STORE_DH0=dh0 is not None,
        PRECISION=precision or dot_precision(r.dtype),
        num_warps=num_warps or DEFAULT_BWD_WARPS,
    )
    return dr, dw, dk, dv, da, db, dh0



# =====================================================================================
# Autograd wrapper and public entry point
# =====================================================================================


class ChunkWKV7Function(torch.autograd.Function):
    """Forward stores the chunk-entry states; backward is one fused kernel."""

    @staticmethod
    def forward(ctx, r, w, k, v, a, b, scale, initial_state, output_final_state, chunk_size):
        chunk_size = chunk_size or TRAIN_CHUNK
        o, ht, hs = chunk_fwd(
            r, w, k, v, a, b, scale, initial_state, output_final_state,
            store_states=True, chunk_size=chunk_size,
        )
        ctx.save_for_backward(r, w, k, v, a, b, hs)
        ctx.scale, ctx.chunk_size = scale, chunk_size
        ctx.has_h0 = initial_state is not None
        ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
        if ht is not None:
            return o, ht
        return o

    @staticmethod
    def backward(ctx, do, dht=None):
        r, w, k, v, a, b, hs = ctx.saved_tensors
        dr, dw, dk, dv, da, db, dh0 = chunk_bwd(
            r, w, k, v, a, b, ctx.scale, hs, do.contiguous(),
            None if dht is None else dht.to(torch.float32).contiguous(),
            need_dh0=ctx.has_h0 and ctx.needs_input_grad[7], chunk_size=ctx.chunk_size,
        )
        if dh0 is not None:
            dh0 = dh0.to(ctx.h0_dtype)
        return dr, dw, dk, dv, da, db, None, dh0, None, None


def wkv7_triton_chunk(
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
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked WKV-7, differentiable w.r.t. r, w, k, v, a, b and initial_state.

    Same contract as :func:`kernels.naive.wkv7_naive`. Without any input that requires grad
    (or under ``torch.no_grad``) it runs the forward kernel alone and stores no states.
    """
    check_wkv7_inputs(r, w, k, v, a, b, initial_state)
    r, w, k, v, a, b = contiguous(r, w, k, v, a, b)
    h0 = None if initial_state is None else initial_state.contiguous()
    if h0 is not None and h0.dtype != torch.float32:
        h0 = h0.float()  # the state is always float32; autograd maps the gradient back
    tensors = (r, w, k, v, a, b, h0)
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors):
        res = ChunkWKV7Function.apply(r, w, k, v, a, b, float(scale), h0, output_final_state, chunk_size)
        return (res[0], res[1]) if output_final_state else (res, None)
    o, ht, _ = chunk_fwd(r, w, k, v, a, b, scale, h0, output_final_state, chunk_size=chunk_size)
    return o, ht


def wkv7_triton_chunk_fwd(
    r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, **launch
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forward only (no autograd), with the launch knobs exposed: ``out``, ``final_state_out``,
    ``chunk_size``, ``BV``, ``num_warps``, ``precision``, ``store_states``."""
    check_wkv7_inputs(r, w, k, v, a, b, initial_state)
    r, w, k, v, a, b = contiguous(r, w, k, v, a, b)
    h0 = None if initial_state is None else initial_state.to(torch.float32).contiguous()
    o, ht, _ = chunk_fwd(r, w, k, v, a, b, scale, h0, output_final_state, **launch)
    return o, ht
