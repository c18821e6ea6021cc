"""Softmax cross-attention to the text, in place of CrossWKV in a DIR-7 block (``cross_mode="attention"``).

The text conditioning of DiT-style models (PixArt, SD3's joint blocks read the text the same
way): the image tokens are the queries, the projected text tokens the keys and values, heads of
the model's head size, padding masked. Everything else in the block (RWKV-7 time mixing,
channel mixing, adaLN-Zero) is unchanged, so comparing this mode with the CrossWKV modes
measures the text path alone. It has no recurrent state: the pipeline's state statistics do not
apply to a model built with it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CrossAttention(nn.Module):
    """``forward(x, text, text_mask, v_first)`` -> ``(out, v_first, None)``: CrossWKV's interface."""

    v_first_has_image = False  # it passes v_first through untouched (there is none: it has no values to mix)

    def __init__(self, cfg, layer_id: int, n_layers: int):
        super().__init__()
        D = cfg.dim
        self.n_heads, self.head_size = D // cfg.head_size, cfg.head_size
        self.text_in = nn.Linear(cfg.text_dim, D, bias=False)
        self.query = nn.Linear(D, D, bias=False)
        self.key = nn.Linear(D, D, bias=False)
        self.value = nn.Linear(D, D, bias=False)
        self.output = nn.Linear(D, D, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.query.weight.is_meta:
            return
        # the same small uniform init as CrossWKV's projections (its output is gated by adaLN-Zero)
        for lin in (self.text_in, self.query, self.key, self.value, self.output):
            bound = 0.5 / math.sqrt(lin.in_features)
            nn.init.uniform_(lin.weight, -bound, bound)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                v_first: torch.Tensor | None = None, output_final_state: bool = False):
        """x ``[B, T, D]`` image tokens, text ``[B, L, Dq]``, text_mask ``[B, L]`` (True = token)."""
        if output_final_state:
            raise ValueError("cross_mode='attention' has no recurrent state to return")
        B, T, D = x.shape
        L, H, K = text.shape[1], self.n_heads, self.head_size
        t = self.text_in(text)                                            # [B, L, D]
        q = self.query(x).view(B, T, H, K).transpose(1, 2)                # [B, H, T, K]
        k = self.key(t).view(B, L, H, K).transpose(1, 2)                  # [B, H, L, K]
        v = self.value(t).view(B, L, H, K).transpose(1, 2)
        mask = text_mask.bool()
        # a prompt with no real token (never from our encoder) would give a row of -inf: NaN
        mask = mask | ~mask.any(dim=1, keepdim=True)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])   # [B, H, T, K]
        return self.output(o.transpose(1, 2).reshape(B, T, D)), v_first, None


__all__ = ["CrossAttention"]
