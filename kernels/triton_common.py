"""Helpers shared by the Triton WKV-7 kernels (imported only when Triton is wanted).

Everything here imports ``triton`` at module level; ``kernels/__init__.py`` and
``kernels/dispatch.py`` import the Triton modules lazily, so ``import kernels`` works on a
machine without Triton or without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# =====================================================================================
# Python side
# =====================================================================================


def block_size(n: int) -> int:
    """Power-of-two tile covering ``n`` (at least 16: ``tl.dot`` needs every dimension >= 16)."""
    return max(16, triton.next_power_of_2(n))


def dot_precision(dtype: torch.dtype) -> str:
    """Precision of the in-kernel float32 matrix products.

    tf32 rounds operands to 10 mantissa bits (~5e-4 relative): fine against the 1e-2 bar of
    half-precision inputs, but the state is re-rounded every chunk and the error of a
    slowly-decaying state adds up, so float32 inputs get exact ("ieee") products.
    """
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


def contiguous(*xs: torch.Tensor) -> list[torch.Tensor]:
    """The kernels index ``[B, T, H, K]`` tensors as dense row-major: make them so."""
    return [x.contiguous() for x in xs]


# =====================================================================================
# Device side
# =====================================================================================


@triton.jit
def unit_lower_inverse(L, C: tl.constexpr):
    """``(I - L)^{-1}`` for a strictly lower-triangular ``L`` of shape ``[C, C]`` (float32).

    Forward substitution, one row at a time: with ``Y = (I - L)^{-1} - I`` (strictly lower),
    ``Y[i, :] = L[i, :] + L[i, :] @ Y``, and row ``i`` needs only rows ``j < i`` of ``Y``
    (``L[i, j] = 0`` for ``j >= i``), which are final by then. ``C`` cheap steps of
    ``[C, C]`` element-wise work; no division, so it cannot produce NaN from finite ``L``.
    """
    o_c = tl.arange(0, C)
    Y = L
    for i in range(1, C):
        is_row = (o_c == i)[:, None]
        row = tl.sum(tl.where(is_row, Y, 0.0), 0)            # L[i, :]
        row = row + tl.sum(row[:, None] * Y, 0)               # + L[i, :] @ Y
        Y = tl.where(is_row, row[None, :], Y)
    return Y + (o_c[:, None] == o_c[None, :]).to(tl.float32)
