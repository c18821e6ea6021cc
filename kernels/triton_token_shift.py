"""The shifted sum of ``kernels.token_shift`` as one Triton kernel each way.

Forward, ``y [B, T, 2N] -> out [B, T, N]``: each program reads a tile of rows of ``y``'s first
half and the same columns of the second half one row earlier (zero where the row is an image's
first), and writes their sum. PyTorch does this as a pad (a copy of the second half) and an add
of two strided slices.

Backward, ``g [B, T, N] -> dy [B, T, 2N]``: ``dy[..., :N] = g`` and ``dy[..., N:]`` is ``g`` one
row later (zero on an image's last row), written in one pass where autograd fills a zero
``[B, T, 2N]`` tensor and copies three slices into it.

The sum is taken in float32 and rounded once to y's dtype, as PyTorch's bf16 add does, so the
forward equals the reference bit for bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from .token_shift import check_shifted_sum_inputs

BLOCK_R = 8      # rows per program
BLOCK_N = 256    # columns per program
NUM_WARPS = 4


@triton.jit
def _tile(M, T, N, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's rows of the flattened [B * T] axis, its columns, their masks and each row's t."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_r, m_c = rows < M, cols < N
    return rows.to(tl.int64), cols, m_r[:, None] & m_c[None, :], rows % T  # int64: B * T * 2N may pass 2^31


@triton.jit
def _shifted_sum_fwd_kernel(y, out, M, T, N, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    rows, cols, mask, t = _tile(M, T, N, BLOCK_R, BLOCK_N)
    now = tl.load(y + rows[:, None] * (2 * N) + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    # the second half of the previous row: (row - 1) * 2N + N + col
    prev = tl.load(y + rows[:, None] * (2 * N) - N + cols[None, :], mask=mask & (t > 0)[:, None],
                   other=0.0).to(tl.float32)
    tl.store(out + rows[:, None] * N + cols[None, :], (now + prev).to(out.dtype.element_ty), mask=mask)


@triton.jit
def _shifted_sum_bwd_kernel(g, dy, M, T, N, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    rows, cols, mask, t = _tile(M, T, N, BLOCK_R, BLOCK_N)
    b_g = tl.load(g + rows[:, None] * N + cols[None, :], mask=mask, other=0.0)
    nxt = tl.load(g + (rows[:, None] + 1) * N + cols[None, :], mask=mask & (t < T - 1)[:, None], other=0.0)
    tl.store(dy + rows[:, None] * (2 * N) + cols[None, :], b_g, mask=mask)
    tl.store(dy + rows[:, None] * (2 * N) + N + cols[None, :], nxt, mask=mask)


def _grid(M: int, N: int) -> tuple[int, int]:
    return triton.cdiv(M, BLOCK_R), triton.cdiv(N, BLOCK_N)


class _ShiftedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, n):
        B, T, _ = y.shape
        y = y.contiguous()  # a matrix product's output: already contiguous, so no copy
        out = torch.empty(B, T, n, device=y.device, dtype=y.dtype)
        ctx.dtype = y.dtype
        if out.numel():
            _shifted_sum_fwd_kernel[_grid(B * T, n)](y, out, B * T, T, n, BLOCK_R=BLOCK_R, BLOCK_N=BLOCK_N,
                                                     num_warps=NUM_WARPS)
        return out

    @staticmethod
    @once_differentiable  # the backward is a rearrangement with no graph of its own
    def backward(ctx, g):
        B, T, n = g.shape
        g = g.contiguous()  # the concatenated gradient of the column slices taken from out
        dy = torch.empty(B, T, 2 * n, device=g.device, dtype=ctx.dtype)
        if dy.numel():
            _shifted_sum_bwd_kernel[_grid(B * T, n)](g, dy, B * T, T, n, BLOCK_R=BLOCK_R, BLOCK_N=BLOCK_N,
                                                     num_warps=NUM_WARPS)
        return dy, None


def shifted_sum_triton(y: torch.Tensor, n: int) -> torch.Tensor:
    """Same contract as :func:`kernels.token_shift.shifted_sum_reference`; differentiable in y."""
    check_shifted_sum_inputs(y, n)
    return _ShiftedSum.apply(y, n)
