"""Chunked WKV-7 in Triton: one fused forward kernel, a two-kernel backward.

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
chunk (``[B, H, NT, K, V]``, bf16 for half inputs: ``stored_states_dtype``) for the backward.
The default kernel holds the state transposed (S^T) and multiplies in bf16 for half inputs, so
each product on the chain feeds the next in registers (see _chunk_fwd_kernel). Variants that
measured slower (the S-layout forward, a two-pass and a look-ahead forward, register caps) are
described, with their numbers and the commit that last held them, in docs/performance.md.

Backward: two implementations, chosen by sequence length (``SPLIT_BWD_MIN_T``, measured).
 - split, two launches:
   1. ``_chunk_bwd_scan_kernel``: a program per (batch, head, V-tile) carries only dS (the
      gradient of the state leaving a chunk) backwards through the chunks and writes it for
      each chunk (``dhs``, ``[B, H, NT, K, V]``, stored like ``hs``) and dh0. The recurrence
      acts on each V column separately, so V splits as in the forward; dS is held transposed
      like the forward's state.
   2. ``_chunk_bwd_chunk_kernel``: a program per (chunk, batch, head), no serial loop: from hs
      (the forward's chunk-entry states, reused) and dhs it recomputes the chunk's matrices and
      writes every gradient; it walks V in tiles, summing over V in registers (which is what
      made it faster: fewer live tiles, 48 instead of 236 bytes of register spills).
 - fused, one launch (``_chunk_bwd_kernel``): a program per (batch, head) walks the chunks in
   reverse doing all of each chunk's work; no ``dhs`` round trip through memory, B * H programs.
On an H200 (B=16, H=16, K=V=64, bf16), forward + backward: fused 0.708 / 2.073 / 8.205 ms,
split 0.797 / 1.622 / 6.371 ms at T = 256 / 1024 / 4096 (docs/wkv7-kernel-notes.md, session 6).

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

# Launch defaults: the forward's and the fused backward's chosen on an H100 by ``python -m
# benchmarks.wkv7 --sweep``, the split backward's on an H200 by ``python -m benchmarks.wkv7_bwd
# --sweep`` (docs/performance.md, docs/wkv7-kernel-notes.md).
DEFAULT_CHUNK = 16        # chunk length of the inference forward
DEFAULT_FWD_BV = 32       # V columns per forward program (V may be split for parallelism)
DEFAULT_FWD_WARPS = 2
TRAIN_CHUNK = 16          # chunk length of forward + backward (both must use the same)
DEFAULT_BWD_WARPS = 8     # the fused backward
DEFAULT_BWD_SCAN_BV = 32  # split backward: V columns per dS-scan program
DEFAULT_BWD_SCAN_WARPS = 2
DEFAULT_BWD_SCAN_PRECISION = None   # None: as the forward (fwd_precision)
DEFAULT_BWD_CHUNK_WARPS = 4         # split backward: the per-chunk gradient kernel
DEFAULT_BWD_CHUNK_BV = 32           # its V columns per pass (it loops over V)
# Its products with a V side (u, du, dv and their sums over V); None: as ``precision`` (tf32 for
# half inputs). bf16 operands instead are 12% faster (1.423 / 5.614 against 1.616 / 6.361 ms forward
# + backward at T = 1024 / 4096; H200, B=16, H=16, K=V=64, float32 states) but miss the 1e-2 bar
# on the tests' hard case of nearly equal keys (da 1.3e-2 against float64), so they stay off.
DEFAULT_BWD_STATE_PRECISION = None
# Storage of the chunk-entry states the training forward keeps for the backward (``hs``) and of
# the split backward's state gradients (``dhs``), both [B, H, NT, K, V]: at T = 4096 with B = 16,
# H = 16 each is 1 GiB in float32, written once and read once. None takes stored_states_dtype():
# bf16 for half inputs, float32 for float32 inputs (their 1e-4 bar). The kernels compute in
# float32 whatever these are; only the stored copy is rounded (docs/wkv7-kernel-notes.md, session 7).
DEFAULT_STATES_DTYPE = None
DEFAULT_DHS_DTYPE = None
# Sequences at least this long take the split backward, shorter ones the fused one: measured
# (module docstring) fused faster at T=256, split at 1024 and 4096; between, untimed.
SPLIT_BWD_MIN_T = 1024


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
    hs,                        # [B, H, NT, K, V] stored_states_dtype(): state entering each chunk (training)
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
            tl.store(hs + (i_bh.to(tl.int64) * NT + i_t) * K * V + state_off, St.to(hs.dtype.element_ty),
                     mask=m_state)
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
# Backward kernels
# =====================================================================================


@triton.jit
def _chunk_bwd_step(
    r, w, k, v, a, b, do,      # inputs and dO, [B, T, H, X]
    dr, dw, dk, dv, da, db,    # outputs, written for this chunk
    S0, dS,                    # [BK, BV] float32: state entering the chunk, gradient of the one leaving
    scale, t0, T, base_k, base_v,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PRECISION: tl.constexpr,   # the pair products, the inverse and their gradients
    SPREC: tl.constexpr,       # the products with a V side (S0, dS, v, u, dO and their chain)
):
    """Every gradient of one chunk (written), given the state entering it and the gradient of
    the state leaving it (the whole V). Returns dS0, the gradient of the entering state, which
    the fused backward carries to the chunk before. (The split backward's per-chunk kernel does
    the same algebra in its own form, walking V in tiles.)"""
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    strict = o_c[:, None] > o_c[None, :]
    causal = o_c[:, None] >= o_c[None, :]
    rows = t0 + o_c
    m_rows_k = (rows < T)[:, None] & m_k[None, :]
    m_rows_v = (rows < T)[:, None] & m_v[None, :]
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
    rhs = mm(a_dec, S0, SPREC) + mm(L_ak, b_v, SPREC)
    u = mm(T_inv, rhs, SPREC)                       # [C, V]

    # ---- S_C = dec_end * S_0 + B_end^T u + K_end^T v
    du = mm(b_end, dS, SPREC)                          # [C, V]
    b_dv = mm(k_end, dS, SPREC)                        # [C, V]
    d_b_end = mm(u, tl.trans(dS), SPREC)               # [C, K]
    d_k_end = mm(b_v, tl.trans(dS), SPREC)             # [C, K]
    d_dec_end = tl.sum(S0 * dS, 1)                                             # [K]
    dS0 = dec_end[:, None] * dS
    # ---- o = scale * (R_dec S_0 + Q_rb u + Q_rk v)   (scale is folded into dO)
    dS0 += mm(tl.trans(r_dec), dO, SPREC)
    d_r_dec = mm(dO, tl.trans(S0), SPREC)              # [C, K]
    dQ_rb = tl.where(causal, mm(dO, tl.trans(u), SPREC), 0.0)
    dQ_rk = tl.where(causal, mm(dO, tl.trans(b_v), SPREC), 0.0)
    du += mm(tl.trans(Q_rb), dO, SPREC)
    b_dv += mm(tl.trans(Q_rk), dO, SPREC)
    # ---- u = (I - L_ab)^{-1} rhs:  d rhs = (I - L_ab)^{-T} du,  d L_ab = d rhs u^T
    drhs = mm(tl.trans(T_inv), du, SPREC)
    dL_ab = tl.where(strict, mm(drhs, tl.trans(u), SPREC), 0.0)
    # ---- rhs = A_dec S_0 + L_ak v
    dS0 += mm(tl.trans(a_dec), drhs, SPREC)
    d_a_dec = mm(drhs, tl.trans(S0), SPREC)           # [C, K]
    dL_ak = tl.where(strict, mm(drhs, tl.trans(b_v), SPREC), 0.0)
    b_dv += mm(tl.trans(L_ak), drhs, SPREC)
    tl.store(dv + base_v + rows[:, None] * H * V + o_v[None, :], b_dv.to(dv.dtype.element_ty),
             mask=m_rows_v)

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
    return dS0


@triton.jit
def _chunk_bwd_kernel(
    r, w, k, v, a, b,          # inputs as in the forward
    hs,                        # [B, H, NT, K, V] stored_states_dtype() states entering each chunk
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
    """The fused backward (sequences shorter than ``SPLIT_BWD_MIN_T``): one program per (batch, head)
    walks the chunks in reverse with dS in registers and does all of each chunk's work."""
    i_bh = tl.program_id(0)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, C)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_state = (o_k < K)[:, None] & (o_v < V)[None, :]
    base_k = i_b.to(tl.int64) * T * H * K + i_h * K
    base_v = i_b.to(tl.int64) * T * H * V + i_h * V
    state_off = o_k[:, None] * V + o_v[None, :]

    dS = tl.zeros([BK, BV], dtype=tl.float32)        # gradient w.r.t. the state leaving the chunk
    if USE_DHT:
        dS += tl.load(dht + i_bh.to(tl.int64) * K * V + state_off, mask=m_state, other=0.0)

    for j in range(0, NT):
        i_t = NT - 1 - j
        S0 = tl.load(hs + (i_bh.to(tl.int64) * NT + i_t) * K * V + state_off, mask=m_state,
                     other=0.0).to(tl.float32)
        dS = _chunk_bwd_step(r, w, k, v, a, b, do, dr, dw, dk, dv, da, db, S0, dS,
                             scale, i_t * C, T, base_k, base_v, H, K, V, C, BK, BV, PRECISION, PRECISION)

    if STORE_DH0:
        tl.store(dh0 + i_bh.to(tl.int64) * K * V + state_off, dS, mask=m_state)


@triton.jit
def _chunk_bwd_scan_kernel(
    r, w, a, b,                # [B, T, H, K]
    do,                        # [B, T, H, V] gradient of o
    dht,                       # [B, H, K, V] gradient of the final state (dummy if none)
    dhs,                       # [B, H, NT, K, V] stored_states_dtype(): gradient of the state LEAVING each chunk
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
    """Split backward, pass 1: carry dS backwards through the chunks, nothing else.

    dS_0 = diag(exp(cw_C)) dS + R_dec^T dO + A_dec^T (I - L_ab)^{-T} (B_end dS + Q_rb^T dO)
    acts on each V column of dS and dO separately (every matrix in it depends on r, w, a, b
    only), so V splits over programs as in the forward: a program per (batch, head, V-tile).
    Like the forward it holds the transposed gradient, dS^T [BV, K]:

        du^T   = dS^T B_end^T + dO^T Q_rb          drhs^T = du^T T_inv
        dS_0^T = dS^T diag(exp(cw_C)) + dO^T R_dec + drhs^T A_dec

    so each product on the chain (dS^T -> du^T -> drhs^T -> dS_0^T) is the left operand of the
    next, which in bf16 stays in registers; the right operands do not depend on dS.
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
    state_off = o_v[:, None] + o_k[None, :] * V          # dS^T[v, k] is stored at dS[k, v]
    m_state = m_v[:, None] & m_k[None, :]
    strict = o_c[:, None] > o_c[None, :]                 # [t, s]: s < t
    causal = o_c[:, None] >= o_c[None, :]

    dSt = tl.zeros([BV, BK], dtype=tl.float32)                                         # dS^T
    if USE_DHT:
        dSt += tl.load(dht + i_bh.to(tl.int64) * K * V + state_off, mask=m_state, other=0.0)

    for j in range(0, NT):
        i_t = NT - 1 - j
        t0 = i_t * C
        rows = t0 + o_c
        tl.store(dhs + (i_bh.to(tl.int64) * NT + i_t) * K * V + state_off, dSt.to(dhs.dtype.element_ty),
                 mask=m_state)
        b_r = _load_chunk(r, base_k, t0, T, o_c, o_k, m_k, H * K)                      # [C, K]
        b_w = _load_chunk(w, base_k, t0, T, o_c, o_k, m_k, H * K)
        b_a = _load_chunk(a, base_k, t0, T, o_c, o_k, m_k, H * K)
        b_b = _load_chunk(b, base_k, t0, T, o_c, o_k, m_k, H * K)
        vt_mask = m_v[:, None] & (rows < T)[None, :]
        # dO^T [BV, C]; the cast: a float64 scale (torch.compile) would promote it
        dOt = (scale * tl.load(do + base_v + rows[None, :] * H * V + o_v[:, None], mask=vt_mask,
                               other=0.0).to(tl.float32)).to(tl.float32)
        # log-decays in log2 units (tl.exp2, as in the forward)
        cw, cw_prev, mid, cw_end = _chunk_decays(b_w * 1.4426950408889634, o_c, C)
        r_m = b_r * tl.exp2(cw - mid[None, :])
        a_m = b_a * tl.exp2(cw_prev - mid[None, :])
        b_m = b_b * tl.exp2(mid[None, :] - cw)
        L_ab = tl.where(strict, mm(a_m, tl.trans(b_m), PRECISION), 0.0)               # [t, s]
        Q_rb = tl.where(causal, mm(r_m, tl.trans(b_m), PRECISION), 0.0)               # [t, s]
        T_inv = unit_lower_inverse(L_ab, C, PRECISION)                                  # (I - L_ab)^-1
        b_endT = tl.trans(b_b * tl.exp2(cw_end[None, :] - cw))                          # [K, C]
        a_dec = b_a * tl.exp2(cw_prev)                                                  # [C, K]
        r_dec = b_r * tl.exp2(cw)

        duT = mm(dSt, b_endT, PRECISION) + mm(dOt, Q_rb, PRECISION)                     # [BV, C]
        drhsT = mm(duT, T_inv, PRECISION)                                               # [BV, C]
        dSt = tl.exp2(cw_end)[None, :] * dSt + mm(dOt, r_dec, PRECISION) + mm(drhsT, a_dec, PRECISION)

    if STORE_DH0:
        tl.store(dh0 + i_bh.to(tl.int64) * K * V + state_off, dSt, mask=m_state)


@triton.jit
def _chunk_bwd_chunk_kernel(
    r, w, k, v, a, b,          # inputs as in the forward
    hs,                        # [B, H, NT, K, V] stored_states_dtype() states entering each chunk (forward)
    dhs,                       # [B, H, NT, K, V] stored_states_dtype() gradients of the states leaving them (scan)
    do,                        # [B, T, H, V] gradient of o
    dr, dw, dk, dv, da, db,    # outputs, same shapes and dtypes as the inputs
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,          # V columns per pass of the loop below (BV < V: several passes)
    PRECISION: tl.constexpr,   # the pair products, the inverse and their gradients
    SPREC: tl.constexpr,       # the products with a V side
):
    """Split backward, pass 2: a program per (chunk, batch, head): every gradient of its chunk
    from the state entering it (hs) and the gradient of the one leaving it (dhs).

    Same algebra as _chunk_bwd_step, but the V side (S0, dS, v, dO, u, du, drhs: everything
    with a V dimension) is walked in tiles of BV columns, accumulating the sums over V (the
    gradients of the pair products and of the decayed copies) in [C, K] / [C, C] registers,
    so fewer [K, V] tiles are live at once. dv is written per tile."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, C)
    t0 = i_t * C
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    base_k = i_b.to(tl.int64) * T * H * K + i_h * K
    base_v = i_b.to(tl.int64) * T * H * V + i_h * V
    base_s = (i_bh.to(tl.int64) * NT + i_t) * K * V
    strict = o_c[:, None] > o_c[None, :]
    causal = o_c[:, None] >= o_c[None, :]
    rows = t0 + o_c
    m_rows_k = (rows < T)[:, None] & m_k[None, :]
    b_r = _load_chunk(r, base_k, t0, T, o_c, o_k, m_k, H * K)
    b_w = _load_chunk(w, base_k, t0, T, o_c, o_k, m_k, H * K)
    b_k = _load_chunk(k, base_k, t0, T, o_c, o_k, m_k, H * K)
    b_a = _load_chunk(a, base_k, t0, T, o_c, o_k, m_k, H * K)
    b_b = _load_chunk(b, base_k, t0, T, o_c, o_k, m_k, H * K)

    # ---- recompute the state-independent matrices of this chunk (log2-unit decays)
    cw, cw_prev, mid, cw_end = _chunk_decays(b_w * 1.4426950408889634, o_c, C)
    e_rm = tl.exp2(cw - mid[None, :])
    e_am = tl.exp2(cw_prev - mid[None, :])
    e_bm = tl.exp2(mid[None, :] - cw)
    r_m = b_r * e_rm
    a_m = b_a * e_am
    b_m = b_b * e_bm
    k_m = b_k * e_bm
    L_ab = tl.where(strict, mm(a_m, tl.trans(b_m), PRECISION), 0.0)
    L_ak = tl.where(strict, mm(a_m, tl.trans(k_m), PRECISION), 0.0)
    Q_rb = tl.where(causal, mm(r_m, tl.trans(b_m), PRECISION), 0.0)
    Q_rk = tl.where(causal, mm(r_m, tl.trans(k_m), PRECISION), 0.0)
    T_inv = unit_lower_inverse(L_ab, C, PRECISION)
    e_cw = tl.exp2(cw)
    e_cwp = tl.exp2(cw_prev)
    to_end = tl.exp2(cw_end[None, :] - cw)
    dec_end = tl.exp2(cw_end)
    a_dec = b_a * e_cwp
    b_end = b_b * to_end
    k_end = b_k * to_end

    # ---- the V side, BV columns at a time; sums over V accumulate
    d_b_end = tl.zeros([C, BK], dtype=tl.float32)
    d_k_end = tl.zeros([C, BK], dtype=tl.float32)
    d_r_dec = tl.zeros([C, BK], dtype=tl.float32)
    d_a_dec = tl.zeros([C, BK], dtype=tl.float32)
    dQ_rb = tl.zeros([C, C], dtype=tl.float32)
    dQ_rk = tl.zeros([C, C], dtype=tl.float32)
    dL_ab = tl.zeros([C, C], dtype=tl.float32)
    dL_ak = tl.zeros([C, C], dtype=tl.float32)
    d_dec_end = tl.zeros([BK], dtype=tl.float32)
    for i_v in range(0, tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        m_state = m_k[:, None] & m_v[None, :]
        m_rows_v = (rows < T)[:, None] & m_v[None, :]
        s_off = base_s + o_k[:, None] * V + o_v[None, :]
        S0 = tl.load(hs + s_off, mask=m_state, other=0.0).to(tl.float32)                # [K, BV]
        dS = tl.load(dhs + s_off, mask=m_state, other=0.0).to(tl.float32)
        b_v = _load_chunk(v, base_v, t0, T, o_c, o_v, m_v, H * V)                      # [C, BV]
        # the cast: a float64 scale (torch.compile) would promote dO
        dO = (scale * _load_chunk(do, base_v, t0, T, o_c, o_v, m_v, H * V)).to(tl.float32)
        rhs = mm(a_dec, S0, SPREC) + mm(L_ak, b_v, SPREC)
        u = mm(T_inv, rhs, SPREC)                                                       # [C, BV]
        # S_C = dec_end * S_0 + B_end^T u + K_end^T v
        du = mm(b_end, dS, SPREC) + mm(tl.trans(Q_rb), dO, SPREC)
        b_dv = mm(k_end, dS, SPREC) + mm(tl.trans(Q_rk), dO, SPREC)
        d_b_end += mm(u, tl.trans(dS), SPREC)
        d_k_end += mm(b_v, tl.trans(dS), SPREC)
        d_dec_end += tl.sum(S0 * dS, 1)
        # o = scale * (R_dec S_0 + Q_rb u + Q_rk v)
        d_r_dec += mm(dO, tl.trans(S0), SPREC)
        dQ_rb += mm(dO, tl.trans(u), SPREC)
        dQ_rk += mm(dO, tl.trans(b_v), SPREC)
        # u = (I - L_ab)^{-1} rhs, rhs = A_dec S_0 + L_ak v
        drhs = mm(tl.trans(T_inv), du, SPREC)
        dL_ab += mm(drhs, tl.trans(u), SPREC)
        d_a_dec += mm(drhs, tl.trans(S0), SPREC)
        dL_ak += mm(drhs, tl.trans(b_v), SPREC)
        b_dv += mm(tl.trans(L_ak), drhs, SPREC)
        tl.store(dv + base_v + rows[:, None] * H * V + o_v[None, :], b_dv.to(dv.dtype.element_ty),
                 mask=m_rows_v)
    dQ_rb = tl.where(causal, dQ_rb, 0.0)
    dQ_rk = tl.where(causal, dQ_rk, 0.0)
    dL_ab = tl.where(strict, dL_ab, 0.0)
    dL_ak = tl.where(strict, dL_ak, 0.0)

    # ---- through the mid-factorised pair products, back to r, a, b, k and the decays
    # (as in _chunk_bwd_step)
    d_r_m = mm(dQ_rb, b_m, PRECISION) + mm(dQ_rk, k_m, PRECISION)
    d_a_m = mm(dL_ab, b_m, PRECISION) + mm(dL_ak, k_m, PRECISION)
    d_b_m = mm(tl.trans(dQ_rb), r_m, PRECISION)
    d_b_m += mm(tl.trans(dL_ab), a_m, PRECISION)
    d_k_m = mm(tl.trans(dQ_rk), r_m, PRECISION)
    d_k_m += mm(tl.trans(dL_ak), a_m, PRECISION)
    r_dec = b_r * e_cw
    b_dr = d_r_dec * e_cw + d_r_m * e_rm
    b_da = d_a_dec * e_cwp + d_a_m * e_am
    b_db = d_b_end * to_end + d_b_m * e_bm
    b_dk = d_k_end * to_end + d_k_m * e_bm
    g_cw = d_r_dec * r_dec + d_r_m * r_m - d_b_end * b_end - d_b_m * b_m - d_k_end * k_end - d_k_m * k_m
    g_cwp = d_a_dec * a_dec + d_a_m * a_m
    g_end = d_dec_end * dec_end + tl.sum(d_b_end * b_end + d_k_end * k_end, 0)          # [K]
    b_dw = tl.cumsum(g_cw, 0, reverse=True) + tl.cumsum(g_cwp, 0, reverse=True) - g_cwp
    b_dw += g_end[None, :]

    off_k = base_k + rows[:, None] * H * K + o_k[None, :]
    tl.store(dr + off_k, b_dr.to(dr.dtype.element_ty), mask=m_rows_k)
    tl.store(dw + off_k, b_dw.to(dw.dtype.element_ty), mask=m_rows_k)
    tl.store(dk + off_k, b_dk.to(dk.dtype.element_ty), mask=m_rows_k)
    tl.store(da + off_k, b_da.to(da.dtype.element_ty), mask=m_rows_k)
    tl.store(db + off_k, b_db.to(db.dtype.element_ty), mask=m_rows_k)


# =====================================================================================
# Launchers
# =====================================================================================


def stored_states_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype ``hs`` and ``dhs`` are stored in for inputs of ``dtype``: bfloat16 for half
    inputs (a stored state is rounded once, to 8 mantissa bits, like the forward's bf16 operands),
    float32 otherwise."""
    return torch.bfloat16 if dtype in (torch.float16, torch.bfloat16) else torch.float32


def chunk_fwd(
    r, w, k, v, a, b, scale, initial_state, output_final_state,
    *, store_states=False, out=None, final_state_out=None, chunk_size=None, BV=None, num_warps=None,
    precision=None, states_dtype=None,
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
    hs_dtype = states_dtype or DEFAULT_STATES_DTYPE or stored_states_dtype(r.dtype)
    hs = r.new_empty(B, H, NT, K, V, dtype=hs_dtype) if store_states else None
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
              precision=None, impl=None, scan_BV=None, scan_warps=None, scan_precision=None,
              state_precision=None, chunk_BV=None, dhs_dtype=None):
    """Launch the backward. Returns ``(dr, dw, dk, dv, da, db, dh0 or None)``.

    ``impl``: "split" (scan + per-chunk kernel) or "fused" (one kernel); default by ``SPLIT_BWD_MIN_T``.
    ``num_warps`` / ``precision``: the kernel that writes the gradients (fused, or the
    per-chunk one); ``scan_BV`` / ``scan_warps`` / ``scan_precision``: the split's dS scan.
    """
    B, T, H, K = r.shape
    V = v.shape[-1]
    C = chunk_size or TRAIN_CHUNK
    impl = impl or ("split" if T >= SPLIT_BWD_MIN_T else "fused")
    dr, dw, dk, dv, da, db = (torch.empty_like(x) for x in (r, w, k, v, a, b))
    dh0 = r.new_empty(B, H, K, V, dtype=torch.float32) if need_dh0 else None
    if T == 0:
        if dh0 is not None:
            dh0.copy_(dht if dht is not None else torch.zeros_like(dh0))
        return dr, dw, dk, dv, da, db, dh0
    BK, BV = block_size(K), block_size(V)
    precision = precision or dot_precision(r.dtype)
    if impl == "fused":
        _chunk_bwd_kernel[(B * H,)](
            r, w, k, v, a, b, hs, do,
            dht if dht is not None else do,
            dr, dw, dk, dv, da, db,
            dh0 if dh0 is not None else do,
            float(scale), T,
            H=H, K=K, V=V, C=C, BK=BK, BV=BV,
            USE_DHT=dht is not None, STORE_DH0=dh0 is not None,
            PRECISION=precision,
            num_warps=num_warps or DEFAULT_BWD_WARPS,
        )
        return dr, dw, dk, dv, da, db, dh0
    if impl != "split":
        raise ValueError(f"chunk_bwd: impl must be 'split' or 'fused', got {impl!r}")
    NT = triton.cdiv(T, C)
    # the gradient of the state leaving each chunk
    dhs = torch.empty_like(hs, dtype=dhs_dtype or DEFAULT_DHS_DTYPE or stored_states_dtype(r.dtype))
    sBV = min(scan_BV or DEFAULT_BWD_SCAN_BV, BV)
    _chunk_bwd_scan_kernel[(triton.cdiv(V, sBV), B * H)](
        r, w, a, b, do,
        dht if dht is not None else do,
        dhs,
        dh0 if dh0 is not None else do,
        float(scale), T,
        H=H, K=K, V=V, C=C, BK=BK, BV=sBV,
        USE_DHT=dht is not None, STORE_DH0=dh0 is not None,
        PRECISION=scan_precision or DEFAULT_BWD_SCAN_PRECISION or fwd_precision(r.dtype),
        num_warps=scan_warps or DEFAULT_BWD_SCAN_WARPS,
    )
    _chunk_bwd_chunk_kernel[(NT, B * H)](
        r, w, k, v, a, b, hs, dhs, do,
        dr, dw, dk, dv, da, db,
        float(scale), T,
        H=H, K=K, V=V, C=C, BK=BK, BV=min(chunk_BV or DEFAULT_BWD_CHUNK_BV, BV),
        PRECISION=precision,
        SPREC=state_precision or DEFAULT_BWD_STATE_PRECISION or precision,
        num_warps=num_warps or DEFAULT_BWD_CHUNK_WARPS,
    )
    return dr, dw, dk, dv, da, db, dh0


# =====================================================================================
# Autograd wrapper and public entry point
# =====================================================================================


class ChunkWKV7Function(torch.autograd.Function):
    """Forward stores the chunk-entry states; backward is chunk_bwd (see the module docstring)."""

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
