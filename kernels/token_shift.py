"""The shifted sum after a time-mix layer's fused products, in plain PyTorch: the reference of
``kernels.triton_token_shift``.

    out = y[..., :N] + token_shift(y[..., N:])        token_shift(z)_t = z_{t-1}, zero at t = 0

``y`` is ``[B, T, 2N]``: one matrix product of ``x`` with ``[(1 - mu) M, mu M]`` (the layer's
first matrices, scaled by the token-shift weights), so ``out = lerp(x) @ M`` without the lerp
ever being written (dir7's ``TimeMix.shifted_products`` explains the identity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_shifted_sum_inputs(y: torch.Tensor, n: int) -> None:
    if y.dim() != 3 or y.shape[-1] != 2 * n:
        raise ValueError(f"shifted_sum: y must be [B, T, 2 * n] with n = {n}, got {tuple(y.shape)}")


def shifted_sum_reference(y: torch.Tensor, n: int) -> torch.Tensor:
    check_shifted_sum_inputs(y, n)
    # autograd's backward of this (two slices and a pad) writes a zero [B, T, 2N] gradient
    # and copies into it: what the Triton kernel does in one pass
    return y[..., :n] + F.pad(y[..., n:], (0, 0, 1, -1))
