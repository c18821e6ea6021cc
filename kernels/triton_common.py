"""Helpers shared by the Triton WKV-7 kernels (imported only when Triton is wanted).

Everything here imports ``triton`` at module level; ``kernels/__init__.py`` imports the Triton
modules lazily and ``kernels/dispatch.py`` only where a GPU is present (and then under
try/except), so ``import kernels`` works on a machine without Triton or without a GPU.
"""

from __future__ import annotations

import os

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


def fwd_precision(dtype: torch.dtype) -> str:
    """Precision of the chunked forward's products: exact for float32 inputs; for half
    inputs bf16 operands (float32 accumulation). Why bf16 and not tf32: 16-bit operands
    let a product's result feed the next product's left operand in registers, with no
    shared-memory round trip, and halve the MMA count. The cost is rounding of the
    float32 intermediates (state, decayed tiles) to 8 mantissa bits: about 3e-3 relative
    error in o and 1e-3 in the state on the tests' inputs, against 1e-2 allowed.
    """
    return "ieee" if dtype in (torch.float32, torch.float64) else "bf16"


def contiguous(*xs: torch.Tensor) -> list[torch.Tensor]:
    """The kernels index ``[B, T, H, K]`` tensors as dense row-major: make them so."""
    return [x.contiguous() for x in xs]


# =====================================================================================
# Device side
# =====================================================================================


# The interpreter (TRITON_INTERPRET=1, CI) gets bf16 tl.dot wrong and truncates casts to
# bf16 (Triton 3.9); mm() then emulates the GPU's products.
INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


@triton.jit
def round_bf16(x):
    """float32 -> the nearest-even bfloat16 value, kept in float32 (finite inputs)."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def mm(x, y, PRECISION: tl.constexpr):
    """``x @ y`` of float32 tiles with a float32 result. PRECISION: "ieee" (exact), "tf32",
    or "bf16" (operands rounded to bfloat16, see fwd_precision)."""
    if PRECISION == "bf16" and INTERPRET:
        out = tl.dot(round_bf16(x), round_bf16(y), input_precision="ieee")
    elif PRECISION == "bf16":
        out = tl.dot(x.to(tl.bfloat16), y.to(tl.bfloat16))
    else:
        out = tl.dot(x, y, input_precision=PRECISION)
    return out


@triton.jit
def unit_lower_inverse(L, C: tl.constexpr, PRECISION: tl.constexpr):
    """``(I - L)^{-1}`` for a strictly lower-triangular ``L`` of shape ``[C, C]`` (float32).

    Block-triangular inversion by doubling, all in matrix products: ``X`` starts as the
    inverse of the 1x1 diagonal blocks (``I``); each level merges neighbouring diagonal
    blocks of size ``n`` into blocks of ``2n`` with

        [[A, 0], [-L21, B]]^{-1} = [[A^{-1}, 0], [B^{-1} L21 A^{-1}, B^{-1}]]
        i.e.  X <- X + X @ L_off @ X,   L_off = the L21 blocks of this level.

    log2(C) levels of two small products instead of C row-by-row substitution steps (each a
    cross-thread reduction). Numerical trap avoided: the shorter Neumann-product form
    (I + L)(I + L^2)(I + L^4)... forms powers of L whose entries grow combinatorially
    (L^8 entries reach C(15, 7) = 6435 when consecutive keys align, as neighbouring image
    patches do) and then cancel; the block form only multiplies true sub-inverses, as
    stable as substitution.

    The same recurrence inverts a strictly *upper*-triangular ``L`` (the masks below are
    symmetric): ``(I - L^T)^{-1} = ((I - L)^{-1})^T``, which the forward uses.
    """
    o_c = tl.arange(0, C)
    # level 0 needs no product: the 1x1 blocks invert to 1, so X = I + (L on the pairs' subdiagonal)
    pair_sub = (o_c[:, None] // 2 == o_c[None, :] // 2) & (o_c[:, None] != o_c[None, :])
    X = (o_c[:, None] == o_c[None, :]).to(tl.float32) + tl.where(pair_sub, L, 0.0)
    for lvl in tl.static_range(1, 7):
        if (1 << lvl) < C:
            n = 1 << lvl
            same_next = (o_c[:, None] // (2 * n)) == (o_c[None, :] // (2 * n))
            other_cur = (o_c[:, None] // n) != (o_c[None, :] // n)
            L_off = tl.where(same_next & other_cur, L, 0.0)
            X += mm(mm(X, L_off, PRECISION), X, PRECISION)
    return X
