"""The time-mix layer's element-wise work around the recurrence as fused Triton kernels, with backward.

``time_mix_prepare_triton`` and ``time_mix_readout_triton`` compute what the plain-PyTorch
references in :mod:`kernels.time_mix` compute (the equations are written there), as one pass
forward and one pass backward each, instead of a dozen element-wise PyTorch kernels, each a
round trip of a ``[B, T, D]`` tensor through memory (and, under autocast, in float32).

Both work on per-head rows: a program owns ``BT`` tokens of one head, a ``[BT, K]`` tile of
every ``[B, T, D]`` input (D = H * K, head ``h`` at columns ``h*K .. h*K + K``), so the per-head
reductions (the removal key's norm, the GroupNorm, the bonus ``sum_K r k r_k``) stay in
registers. Arithmetic is float32 whatever the inputs' dtypes; outputs are written in the
dtype asked for. The per-channel parameters' gradients (``k_k``, ``k_a``, ``ln_x``'s weight
and bias, ``r_k``) are sums over every token: each program writes its tile's partial sum to
one row of a ``[n_blocks, D]`` float32 buffer, summed afterwards (no atomics, deterministic).

What the backward keeps: the inputs, and for the readout the rows' mean and 1/std; everything
else is recomputed (cheaper than storing it).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BT = 32         # tokens per program: a [32, K] tile of each of ~10 tensors fits in registers for K <= 64
NUM_WARPS = 4
NORM_EPS = tl.constexpr(1e-12)  # F.normalize's eps, which the reference uses for the removal key


def _grid(M: int, H: int):
    return (triton.cdiv(M, BT), H)


def _bk(K: int) -> int:
    return triton.next_power_of_2(K)


def _rows(x: torch.Tensor, D: int) -> tuple[torch.Tensor, int]:
    """``x`` viewed as ``[M, D]`` rows, and its row stride: a column slice of a wider ``[B, T, N]``
    product passes as it is (unit channel stride, evenly spaced tokens), anything else is copied."""
    x2 = x.reshape(x.shape[0], x.shape[1], D) if x.dim() == 4 else x  # [B, T, H, K] -> [B, T, D], a view
    B, T, _ = x2.shape
    if x2.stride(2) == 1 and (B == 1 or x2.stride(0) == T * x2.stride(1)):
        return x2, x2.stride(1) if T > 1 else (x2.stride(0) if B > 1 else D)
    return x2.contiguous(), D


# =====================================================================================
# Prepare: projections' outputs -> the recurrence's inputs
# =====================================================================================


@triton.jit
def _tile(pid_m, h, M, H: tl.constexpr, K: tl.constexpr, BLOCK_T: tl.constexpr, BK: tl.constexpr):
    """Rows, columns and masks of the ``[BLOCK_T, BK]`` tile of tokens ``pid_m * BLOCK_T ..`` in head
    ``h``, and its offsets in a dense ``[M, D]`` tensor (outputs, gradients)."""
    rows = pid_m * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BK)
    m_row = rows < M
    m_col = cols < K
    mask = m_row[:, None] & m_col[None, :]
    off = rows[:, None].to(tl.int64) * (H * K) + h * K + cols[None, :]
    return rows, cols, m_row, m_col, mask, off


@triton.jit
def _at(rows, cols, h, K: tl.constexpr, stride):
    """Offsets of the tile in an input whose rows lie ``stride`` apart (a column slice of a wider
    product: the layer's projections come out of one matrix product, side by side)."""
    return rows[:, None].to(tl.int64) * stride + h * K + cols[None, :]


@triton.jit
def _prepare_loads(k, w_raw, a_raw, k_k, k_a, rows, cols, h, K: tl.constexpr, m_col, mask, s_k, s_w, s_a):
    """The tile's k, its per-channel k_k and k_a, sigmoid(w_raw) and eta = sigmoid(a_raw), float32."""
    b_k = tl.load(k + _at(rows, cols, h, K, s_k), mask=mask, other=0.0).to(tl.float32)
    b_kk_w = tl.load(k_k + h * K + cols, mask=m_col, other=0.0).to(tl.float32)
    b_ka = tl.load(k_a + h * K + cols, mask=m_col, other=0.0).to(tl.float32)
    sig_w = tl.sigmoid(tl.load(w_raw + _at(rows, cols, h, K, s_w), mask=mask, other=0.0).to(tl.float32))
    eta = tl.sigmoid(tl.load(a_raw + _at(rows, cols, h, K, s_a), mask=mask, other=0.0).to(tl.float32))
    return b_k, b_kk_w, b_ka, sig_w, eta


@triton.jit
def _removal_key(b_k, b_kk_w):
    """kk = normalize(k * k_k) per row (head), with the row's norm and the divisor max(norm, eps).

    F.normalize's rule: x / max(||x||, eps). A NaN anywhere in the head makes the whole row NaN, as
    there (tl.maximum drops a NaN unless told otherwise)."""
    kk0 = b_k * b_kk_w[None, :]
    norm = tl.sqrt(tl.sum(kk0 * kk0, axis=1))
    n = tl.maximum(norm, NORM_EPS, propagate_nan=tl.PropagateNan.ALL)
    return kk0 / n[:, None], norm, n


@triton.jit
def _prepare_fwd_kernel(
    k, w_raw, a_raw, v, v_first, v_mix_raw,   # [M, D] inputs (M = B * T), any float dtype
    k_k, k_a,                                  # [D]
    keep,                                      # [M] uint8 (or dummy)
    w_out, k_out, v_out, a_out, b_out,         # [M, D] outputs
    s_k, s_w, s_a, s_v, s_vf, s_vm,            # the inputs' row strides
    M, w_scale,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BLOCK_T: tl.constexpr,
    HAS_V_FIRST: tl.constexpr, HAS_KEEP: tl.constexpr,
):
    pid_m, h = tl.program_id(0), tl.program_id(1)
    rows, cols, m_row, m_col, mask, off = _tile(pid_m, h, M, H, K, BLOCK_T, BK)
    b_k, b_kk_w, b_ka, sig_w, eta = _prepare_loads(k, w_raw, a_raw, k_k, k_a, rows, cols, h, K, m_col, mask,
                                                   s_k, s_w, s_a)
    w = w_scale * sig_w
    kk, _, _ = _removal_key(b_k, b_kk_w)
    k_new = b_k * (1.0 + (eta - 1.0) * b_ka[None, :])
    if HAS_KEEP:
        m = tl.load(keep + rows, mask=m_row, other=0).to(tl.float32)[:, None]
        w, k_new, kk = w * m, k_new * m, kk * m
    if HAS_V_FIRST:
        b_v = tl.load(v + _at(rows, cols, h, K, s_v), mask=mask, other=0.0).to(tl.float32)
        b_vf = tl.load(v_first + _at(rows, cols, h, K, s_vf), mask=mask, other=0.0).to(tl.float32)
        mix = tl.sigmoid(tl.load(v_mix_raw + _at(rows, cols, h, K, s_vm), mask=mask, other=0.0).to(tl.float32))
        tl.store(v_out + off, (b_v + (b_vf - b_v) * mix).to(v_out.dtype.element_ty), mask=mask)
    tl.store(w_out + off, w.to(w_out.dtype.element_ty), mask=mask)
    tl.store(k_out + off, k_new.to(k_out.dtype.element_ty), mask=mask)
    tl.store(a_out + off, (-kk).to(a_out.dtype.element_ty), mask=mask)
    tl.store(b_out + off, (kk * eta).to(b_out.dtype.element_ty), mask=mask)


@triton.jit
def _prepare_bwd_kernel(
    k, w_raw, a_raw, v, v_first, v_mix_raw, k_k, k_a, keep,
    dw, dk_out, dv_out, da, db,                # [M, D] gradients of the outputs
    dk, dw_raw, da_raw, dv, dv_first, dv_mix_raw,  # [M, D] gradients of the inputs
    dk_k_part, dk_a_part,                      # [n_blocks, D] float32 partial sums
    s_k, s_w, s_a, s_v, s_vf, s_vm,            # the inputs' row strides (gradients are dense)
    M, w_scale,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BLOCK_T: tl.constexpr,
    HAS_V_FIRST: tl.constexpr, HAS_KEEP: tl.constexpr,
):
    pid_m, h = tl.program_id(0), tl.program_id(1)
    rows, cols, m_row, m_col, mask, off = _tile(pid_m, h, M, H, K, BLOCK_T, BK)
    b_k, b_kk_w, b_ka, sig_w, eta = _prepare_loads(k, w_raw, a_raw, k_k, k_a, rows, cols, h, K, m_col, mask,
                                                   s_k, s_w, s_a)
    kk, norm, n = _removal_key(b_k, b_kk_w)
    if HAS_KEEP:
        m = tl.load(keep + rows, mask=m_row, other=0).to(tl.float32)[:, None]
    else:
        m = tl.full((BLOCK_T, 1), 1.0, tl.float32)
    g_w = tl.load(dw + off, mask=mask, other=0.0).to(tl.float32) * m
    g_k_new = tl.load(dk_out + off, mask=mask, other=0.0).to(tl.float32) * m
    g_a = tl.load(da + off, mask=mask, other=0.0).to(tl.float32)
    g_b = tl.load(db + off, mask=mask, other=0.0).to(tl.float32)
    # a = -kk m, b = kk m eta, k_new = k (1 + (eta - 1) k_a) m, w = w_scale sigmoid(w_raw) m
    g_kk = (g_b * eta - g_a) * m
    g_eta = g_b * kk * m + g_k_new * b_k * b_ka[None, :]
    g_k = g_k_new * (1.0 + (eta - 1.0) * b_ka[None, :])
    g_ka = tl.sum(g_k_new * b_k * (eta - 1.0), axis=0)
    # through kk = kk0 / max(||kk0||, eps): the norm carries gradient only where it is not clamped
    proj = tl.where(norm > NORM_EPS, tl.sum(g_kk * kk, axis=1), 0.0)
    g_kk0 = (g_kk - kk * proj[:, None]) / n[:, None]
    g_k += g_kk0 * b_kk_w[None, :]
    g_kkw = tl.sum(g_kk0 * b_k, axis=0)
    tl.store(dk + off, g_k.to(dk.dtype.element_ty), mask=mask)
    tl.store(dw_raw + off, (g_w * w_scale * sig_w * (1.0 - sig_w)).to(dw_raw.dtype.element_ty), mask=mask)
    tl.store(da_raw + off, (g_eta * eta * (1.0 - eta)).to(da_raw.dtype.element_ty), mask=mask)
    part = pid_m * (H * K) + h * K + cols
    tl.store(dk_k_part + part, g_kkw, mask=m_col)
    tl.store(dk_a_part + part, g_ka, mask=m_col)
    if HAS_V_FIRST:
        g_v_new = tl.load(dv_out + off, mask=mask, other=0.0).to(tl.float32)
        b_v = tl.load(v + _at(rows, cols, h, K, s_v), mask=mask, other=0.0).to(tl.float32)
        b_vf = tl.load(v_first + _at(rows, cols, h, K, s_vf), mask=mask, other=0.0).to(tl.float32)
        mix = tl.sigmoid(tl.load(v_mix_raw + _at(rows, cols, h, K, s_vm), mask=mask, other=0.0).to(tl.float32))
        tl.store(dv + off, (g_v_new * (1.0 - mix)).to(dv.dtype.element_ty), mask=mask)
        tl.store(dv_first + off, (g_v_new * mix).to(dv_first.dtype.element_ty), mask=mask)
        tl.store(dv_mix_raw + off, (g_v_new * (b_vf - b_v) * mix * (1.0 - mix)).to(dv_mix_raw.dtype.element_ty),
                 mask=mask)


class _Prepare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, k, w_raw, a_raw, v, v_first, v_mix_raw, k_k, k_a, keep, n_heads, w_scale, dtype):
        B, T, D = k.shape
        H, K, M = n_heads, D // n_heads, B * T
        has_vf = v_first is not None
        (k, s_k), (w_raw, s_w), (a_raw, s_a), (v, s_v) = (_rows(x, D) for x in (k, w_raw, a_raw, v))
        (v_first, s_vf), (v_mix_raw, s_vm) = (_rows(x, D) for x in (v_first, v_mix_raw)) if has_vf else \
            ((None, D), (None, D))
        k_k, k_a = k_k.contiguous(), k_a.contiguous()
        keep_u8 = keep.reshape(M).to(torch.uint8) if keep is not None else None
        w_o, k_o, a_o, b_o = (torch.empty(B, T, D, device=k.device, dtype=dtype) for _ in range(4))
        v_o = torch.empty(B, T, D, device=k.device, dtype=dtype) if has_vf else v.to(dtype)
        _prepare_fwd_kernel[_grid(M, H)](
            k, w_raw, a_raw, v, v_first if has_vf else k, v_mix_raw if has_vf else k, k_k, k_a,
            keep_u8 if keep_u8 is not None else k, w_o, k_o, v_o, a_o, b_o, s_k, s_w, s_a, s_v, s_vf, s_vm,
            M, w_scale, H=H, K=K, BK=_bk(K), BLOCK_T=BT, HAS_V_FIRST=has_vf, HAS_KEEP=keep is not None,
            num_warps=NUM_WARPS)
        ctx.save_for_backward(k, w_raw, a_raw, v, v_first, v_mix_raw, k_k, k_a, keep_u8)
        ctx.meta = (H, K, w_scale, (s_k, s_w, s_a, s_v, s_vf, s_vm))
        return tuple(t.view(B, T, H, K) for t in (w_o, k_o, v_o, a_o, b_o))

    @staticmethod
    def backward(ctx, dw, dk_o, dv_o, da, db):
        k, w_raw, a_raw, v, v_first, v_mix_raw, k_k, k_a, keep_u8 = ctx.saved_tensors
        H, K, w_scale, strides = ctx.meta
        B, T, D = k.shape
        M = B * T
        has_vf = v_first is not None
        dw, dk_o, dv_o, da, db = (g.reshape(B, T, D).contiguous() for g in (dw, dk_o, dv_o, da, db))

        def dense(x):  # gradients are written dense, whatever the input's strides
            return torch.empty(B, T, D, device=x.device, dtype=x.dtype)

        dk, dw_raw, da_raw = dense(k), dense(w_raw), dense(a_raw)
        if has_vf:
            dv, dv_first, dv_mix = dense(v), dense(v_first), dense(v_mix_raw)
        else:
            dv, dv_first, dv_mix = dv_o.to(v.dtype), None, None
        n_blocks = triton.cdiv(M, BT)
        parts = torch.empty(2, n_blocks, D, device=k.device, dtype=torch.float32)
        _prepare_bwd_kernel[_grid(M, H)](
            k, w_raw, a_raw, v, v_first if has_vf else k, v_mix_raw if has_vf else k, k_k, k_a,
            keep_u8 if keep_u8 is not None else k, dw, dk_o, dv_o, da, db,
            dk, dw_raw, da_raw, dv, dv_first if has_vf else dk, dv_mix if has_vf else dk,
            parts[0], parts[1], *strides, M, w_scale,
            H=H, K=K, BK=_bk(K), BLOCK_T=BT, HAS_V_FIRST=has_vf, HAS_KEEP=keep_u8 is not None,
            num_warps=NUM_WARPS)
        dk_k, dk_a = parts.sum(1).to(k_k.dtype).unbind(0)
        return dk, dw_raw, da_raw, dv, dv_first, dv_mix, dk_k, dk_a, None, None, None, None


def time_mix_prepare_triton(k, w_raw, a_raw, v, v_first, v_mix_raw, k_k, k_a, keep, n_heads, w_scale, dtype):
    """Same contract as ``kernels.time_mix.time_mix_prepare_reference``: ``(w, k, v, a, b)``,
    each ``[B, T, H, K]`` in ``dtype``; differentiable in every floating input."""
    return _Prepare.apply(k, w_raw, a_raw, v, v_first, v_mix_raw, k_k, k_a, keep, n_heads, w_scale, dtype)


# =====================================================================================
# Readout: the recurrence's output -> what the output projection reads
# =====================================================================================


@triton.jit
def _readout_fwd_kernel(
    o, r, k, v, g,            # [M, D] (o, r, k, v are [B, T, H, K] = [M, D]); any float dtype
    ln_w, ln_b, r_k,          # [D]
    out,                      # [M, D]
    mean, rstd,               # [M, H] float32, kept for the backward
    s_r,                      # r's row stride (a column slice of the layer's projections)
    M, eps,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BLOCK_T: tl.constexpr,
):
    pid_m, h = tl.program_id(0), tl.program_id(1)
    rows, cols, m_row, m_col, mask, off = _tile(pid_m, h, M, H, K, BLOCK_T, BK)
    x = tl.load(o + off, mask=mask, other=0.0).to(tl.float32)
    mu = tl.sum(x, axis=1) / K
    xc = tl.where(mask, x - mu[:, None], 0.0)
    inv = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / K + eps)
    b_w = tl.load(ln_w + h * K + cols, mask=m_col, other=0.0).to(tl.float32)
    b_b = tl.load(ln_b + h * K + cols, mask=m_col, other=0.0).to(tl.float32)
    b_rk = tl.load(r_k + h * K + cols, mask=m_col, other=0.0).to(tl.float32)
    b_r = tl.load(r + _at(rows, cols, h, K, s_r), mask=mask, other=0.0).to(tl.float32)
    b_k = tl.load(k + off, mask=mask, other=0.0).to(tl.float32)
    b_v = tl.load(v + off, mask=mask, other=0.0).to(tl.float32)
    bonus = tl.sum(b_r * b_k * b_rk[None, :], axis=1)
    y = xc * inv[:, None] * b_w[None, :] + b_b[None, :] + bonus[:, None] * b_v
    b_g = tl.load(g + off, mask=mask, other=0.0).to(tl.float32)
    tl.store(out + off, (y * b_g).to(out.dtype.element_ty), mask=mask)
    tl.store(mean + rows * H + h, mu, mask=m_row)
    tl.store(rstd + rows * H + h, inv, mask=m_row)


@triton.jit
def _readout_bwd_kernel(
    o, r, k, v, g, ln_w, ln_b, r_k, mean, rstd,
    dout,                                  # [M, D]
    do, dr, dk, dv, dg,                    # [M, D]
    dw_part, db_part, drk_part,            # [n_blocks, D] float32 partial sums
    s_r,
    M,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BLOCK_T: tl.constexpr,
):
    pid_m, h = tl.program_id(0), tl.program_id(1)
    rows, cols, m_row, m_col, mask, off = _tile(pid_m, h, M, H, K, BLOCK_T, BK)
    x = tl.load(o + off, mask=mask, other=0.0).to(tl.float32)
    mu = tl.load(mean + rows * H + h, mask=m_row, other=0.0)
    inv = tl.load(rstd + rows * H + h, mask=m_row, other=0.0)
    xhat = tl.where(mask, (x - mu[:, None]) * inv[:, None], 0.0)
    b_w = tl.load(ln_w + h * K + cols, mask=m_col, other=0.0).to(tl.float32)
    b_b = tl.load(ln_b + h * K + cols, mask=m_col, other=0.0).to(tl.float32)
    b_rk = tl.load(r_k + h * K + cols, mask=m_col, other=0.0).to(tl.float32)
    b_r = tl.load(r + _at(rows, cols, h, K, s_r), mask=mask, other=0.0).to(tl.float32)
    b_k = tl.load(k + off, mask=mask, other=0.0).to(tl.float32)
    b_v = tl.load(v + off, mask=mask, other=0.0).to(tl.float32)
    b_g = tl.load(g + off, mask=mask, other=0.0).to(tl.float32)
    g_out = tl.load(dout + off, mask=mask, other=0.0).to(tl.float32)
    bonus = tl.sum(b_r * b_k * b_rk[None, :], axis=1)
    y = xhat * b_w[None, :] + b_b[None, :] + bonus[:, None] * b_v
    g_y = g_out * b_g                                          # out = y * g
    g_bonus = tl.sum(g_y * b_v, axis=1)
    tl.store(dg + off, (g_out * y).to(dg.dtype.element_ty), mask=mask)
    tl.store(dv + off, (g_y * bonus[:, None]).to(dv.dtype.element_ty), mask=mask)
    tl.store(dr + off, (g_bonus[:, None] * b_k * b_rk[None, :]).to(dr.dtype.element_ty), mask=mask)
    tl.store(dk + off, (g_bonus[:, None] * b_r * b_rk[None, :]).to(dk.dtype.element_ty), mask=mask)
    # layer norm over the head's K values: dx = inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    g_xhat = g_y * b_w[None, :]
    c1 = tl.sum(g_xhat, axis=1) / K
    c2 = tl.sum(g_xhat * xhat, axis=1) / K
    g_x = (g_xhat - c1[:, None] - xhat * c2[:, None]) * inv[:, None]
    tl.store(do + off, g_x.to(do.dtype.element_ty), mask=mask)
    part = pid_m * (H * K) + h * K + cols
    tl.store(dw_part + part, tl.sum(g_y * xhat, axis=0), mask=m_col)
    tl.store(db_part + part, tl.sum(g_y, axis=0), mask=m_col)
    tl.store(drk_part + part, tl.sum(g_bonus[:, None] * b_r * b_k, axis=0), mask=m_col)


class _Readout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, o, r, k, v, g, ln_weight, ln_bias, r_k, eps):
        B, T, H, K = o.shape
        M, D = B * T, H * K
        o, k, v, g = (x.contiguous() for x in (o, k, v, g))
        r, s_r = _rows(r, D)
        ln_weight, ln_bias, r_k = ln_weight.contiguous(), ln_bias.contiguous(), r_k.contiguous()
        out = torch.empty(B, T, D, device=o.device, dtype=o.dtype)
        mean = torch.empty(M, H, device=o.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        _readout_fwd_kernel[_grid(M, H)](o, r, k, v, g, ln_weight, ln_bias, r_k, out, mean, rstd, s_r, M, eps,
                                         H=H, K=K, BK=_bk(K), BLOCK_T=BT, num_warps=NUM_WARPS)
        ctx.save_for_backward(o, r, k, v, g, ln_weight, ln_bias, r_k, mean, rstd)
        ctx.s_r = s_r
        return out

    @staticmethod
    def backward(ctx, dout):
        o, r, k, v, g, ln_weight, ln_bias, r_k, mean, rstd = ctx.saved_tensors
        B, T, H, K = o.shape
        M, D = B * T, H * K
        do, dk, dv, dg = (torch.empty_like(x) for x in (o, k, v, g))
        dr = torch.empty(B, T, H, K, device=r.device, dtype=r.dtype)
        n_blocks = triton.cdiv(M, BT)
        parts = torch.empty(3, n_blocks, D, device=o.device, dtype=torch.float32)
        _readout_bwd_kernel[_grid(M, H)](o, r, k, v, g, ln_weight, ln_bias, r_k, mean, rstd, dout.contiguous(),
                                         do, dr, dk, dv, dg, parts[0], parts[1], parts[2], ctx.s_r, M,
                                         H=H, K=K, BK=_bk(K), BLOCK_T=BT, num_warps=NUM_WARPS)
        dw, db, drk = parts.sum(1).unbind(0)
        return (do, dr, dk, dv, dg, dw.to(ln_weight.dtype), db.to(ln_bias.dtype), drk.view(H, K).to(r_k.dtype),
                None)


def time_mix_readout_triton(o, r, k, v, g, ln_weight, ln_bias, r_k, eps):
    """Same contract as ``kernels.time_mix.time_mix_readout_reference``, the result in ``o``'s dtype
    (the recurrence's: bf16 under autocast, where the reference's float32 LayerNorm would
    promote it); differentiable in every floating input."""
    return _Readout.apply(o, r, k, v, g, ln_weight, ln_bias, r_k, eps)
