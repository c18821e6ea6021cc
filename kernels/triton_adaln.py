"""adaLN's normalise-and-modulate as one Triton kernel each way (reference: ``kernels.adaln``).

Forward: one pass over ``x`` (read once, any float dtype) writes ``y`` in ``shift``'s dtype
and the rows' mean and 1/std (float32, for the backward), where PyTorch runs a LayerNorm that
writes a float32 copy of ``x`` and an ``addcmul`` that reads it back and casts it.

Backward (xhat = (x - mean) * rstd, g = dy * (1 + scale)):

    dx     = rstd * (g - mean_D(g) - xhat * mean_D(g * xhat))
    dscale = sum_T dy * xhat        dshift = sum_T dy

One program per (image, block of rows) writes dx and its block's partial sums of dscale and
dshift (float32), summed over the blocks afterwards: no atomics, so the result is deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

NUM_WARPS = 4
TILE = 4096  # elements of x per program: 16 rows at D <= 256, fewer for wider rows (no register spills)


def _block_rows(D: int) -> int:
    return max(1, min(16, TILE // triton.next_power_of_2(D)))


@triton.jit
def _tile(x, T, D, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's image b, row block, its rows and columns with their masks, the tile's offsets
    into [B, T, D] and x's tile (float32)."""
    b, pid_t = tl.program_id(0), tl.program_id(1)
    rows = pid_t * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    m_r, m_c = rows < T, cols < D
    mask = m_r[:, None] & m_c[None, :]
    offs = (b * T + rows).to(tl.int64)[:, None] * D + cols[None, :]  # int64: B * T * D may pass 2^31
    b_x = tl.load(x + offs, mask=mask, other=0.0).to(tl.float32)
    return b, pid_t, rows, cols, m_r, m_c, mask, offs, b_x


@triton.jit
def _adaln_fwd_kernel(x, shift, scale, y, mean, rstd, T, D, s_mod, eps,
                      BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    b, _, rows, cols, m_r, m_c, mask, offs, b_x = _tile(x, T, D, BLOCK_R, BLOCK_D)
    mu = tl.sum(b_x, axis=1) / D
    xc = tl.where(mask, b_x - mu[:, None], 0.0)
    inv = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)
    b_shift = tl.load(shift + b * s_mod + cols, mask=m_c, other=0.0).to(tl.float32)
    b_scale = tl.load(scale + b * s_mod + cols, mask=m_c, other=0.0).to(tl.float32)
    b_y = xc * inv[:, None] * (1.0 + b_scale[None, :]) + b_shift[None, :]
    tl.store(y + offs, b_y.to(y.dtype.element_ty), mask=mask)
    tl.store(mean + b * T + rows, mu, mask=m_r)
    tl.store(rstd + b * T + rows, inv, mask=m_r)


@triton.jit
def _adaln_bwd_kernel(x, scale, mean, rstd, dy, dx, dscale_part, dshift_part, T, D, s_mod, n_blocks,
                      BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    b, pid_t, rows, cols, m_r, m_c, mask, offs, b_x = _tile(x, T, D, BLOCK_R, BLOCK_D)
    mu = tl.load(mean + b * T + rows, mask=m_r, other=0.0)
    inv = tl.load(rstd + b * T + rows, mask=m_r, other=0.0)
    xhat = tl.where(mask, (b_x - mu[:, None]) * inv[:, None], 0.0)
    b_dy = tl.load(dy + offs, mask=mask, other=0.0).to(tl.float32)
    b_scale = tl.load(scale + b * s_mod + cols, mask=m_c, other=0.0).to(tl.float32)
    g = b_dy * (1.0 + b_scale[None, :])
    c1 = tl.sum(g, axis=1) / D
    c2 = tl.sum(g * xhat, axis=1) / D
    b_dx = inv[:, None] * (g - c1[:, None] - xhat * c2[:, None])
    tl.store(dx + offs, b_dx.to(dx.dtype.element_ty), mask=mask)
    part = (b * n_blocks + pid_t) * D + cols
    tl.store(dscale_part + part, tl.sum(b_dy * xhat, axis=0), mask=m_c)
    tl.store(dshift_part + part, tl.sum(b_dy, axis=0), mask=m_c)


def _rows(mod: torch.Tensor) -> torch.Tensor:
    """A ``[B, D]`` modulation with unit column stride (a column slice of the ``[B, 9D]``
    modulation product passes as it is; its row stride goes to the kernel)."""
    return mod if mod.stride(-1) == 1 else mod.contiguous()


class _AdaLN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, shift, scale, eps):
        B, T, D = x.shape
        x = x.contiguous()  # the residual stream: already contiguous, so no copy
        shift, scale = _rows(shift), _rows(scale)
        if shift.stride(0) != scale.stride(0):  # one row stride for both (slices of one product, or dense)
            shift, scale = shift.contiguous(), scale.contiguous()
        y = torch.empty(B, T, D, device=x.device, dtype=shift.dtype)
        mean = torch.empty(B, T, device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        rows = _block_rows(D)
        _adaln_fwd_kernel[(B, triton.cdiv(T, rows))](
            x, shift, scale, y, mean, rstd, T, D, scale.stride(0), eps,
            BLOCK_R=rows, BLOCK_D=triton.next_power_of_2(D), num_warps=NUM_WARPS)
        ctx.save_for_backward(x, scale, mean, rstd)
        ctx.meta = (scale.stride(0), shift.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, scale, mean, rstd = ctx.saved_tensors
        s_mod, mod_dtype = ctx.meta
        B, T, D = x.shape
        dy = dy.contiguous()
        dx = torch.empty(B, T, D, device=x.device, dtype=x.dtype)
        rows = _block_rows(D)
        n_blocks = triton.cdiv(T, rows)
        parts = torch.empty(2, B, n_blocks, D, device=x.device, dtype=torch.float32)
        _adaln_bwd_kernel[(B, n_blocks)](x, scale, mean, rstd, dy, dx, parts[0], parts[1], T, D, s_mod,
                                         n_blocks, BLOCK_R=rows, BLOCK_D=triton.next_power_of_2(D),
                                         num_warps=NUM_WARPS)
        dscale, dshift = parts.sum(2).to(mod_dtype).unbind(0)
        return dx, dshift, dscale, None


def adaln_modulate_triton(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """Same contract as :func:`kernels.adaln.adaln_modulate_reference`; differentiable in x, shift, scale."""
    return _AdaLN.apply(x, shift, scale, eps)
