"""adaLN's normalise-and-modulate, in plain PyTorch: the reference of ``kernels.triton_adaln``.

    y = LayerNorm(x) * (1 + scale) + shift          LayerNorm over D, no affine, in float32

``x`` is ``[B, T, D]`` (the residual stream), ``shift`` and ``scale`` are ``[B, D]`` (one per
image, from the timestep embedding). ``y`` comes out in ``shift``'s dtype: under autocast the
modulation comes from a bf16 product, and the layers after it run in bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def adaln_modulate_reference(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    # the normalisation in float32 whatever x's dtype (as nn.LayerNorm does under autocast):
    # a bf16 variance of a residual stream that grows with depth loses most of its bits
    xn = F.layer_norm(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, x.shape[-1:], eps=eps)
    return torch.addcmul(shift[:, None], xn.to(shift.dtype), 1 + scale[:, None])
