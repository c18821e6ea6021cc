"""The element-wise work of an RWKV-7 time-mix layer around the recurrence, in plain PyTorch.

These are the references (and the differentiable path used for training): the compiled CPU
versions in :mod:`kernels.cpu_time_mix` compute the same in one pass each, and are tested
against these. ``kernels.dispatch`` picks one.

``time_mix_prepare``: the projections' outputs -> the recurrence's inputs. Per channel,
with D = H * K and heads of K channels:

    w   = w_scale * sigmoid(w_raw)                  log-decay in (w_scale, 0)
    v   = lerp(v, v_first, sigmoid(v_mix_raw))      the value residual (when v_first is given)
    eta = sigmoid(a_raw)                            in-context learning rate, (0, 1)
    kk  = normalize_per_head(k * k_k)               removal key, unit norm per head
    k   = k * (1 + (eta - 1) * k_a)
    a, b = -kk, kk * eta
    keep[t] False -> w = k = kk = 0 at t: an identity step of the recurrence (text padding)

``time_mix_readout``: the recurrence's output -> what the output projection reads:

    o = LayerNorm_K(o) * ln_weight + ln_bias        per head (RWKV-7's GroupNorm with H groups)
    o = o + (sum_K r * k * r_k) * v                 the per-head "bonus"
    out = o * g
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def time_mix_prepare_reference(
    k: torch.Tensor,
    w_raw: torch.Tensor,
    a_raw: torch.Tensor,
    v: torch.Tensor,
    v_first: torch.Tensor | None,
    v_mix_raw: torch.Tensor | None,
    k_k: torch.Tensor,
    k_a: torch.Tensor,
    keep: torch.Tensor | None,
    n_heads: int,
    w_scale: float,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, ...]:
    """``[B, T, D]`` inputs (``keep [B, T]`` bool) -> ``(w, k, v, a, b)``, each ``[B, T, H, K]`` in
    ``dtype`` (the recurrence's: under autocast the LoRA terms arrive in float32, r in bf16)."""
    B, T, D = k.shape
    H, K = n_heads, D // n_heads
    w = w_scale * torch.sigmoid(w_raw)
    if v_first is not None:
        # under autocast the LoRA's float32 bias promotes its output: lerp wants one dtype
        v = torch.lerp(v, v_first.to(v.dtype), torch.sigmoid(v_mix_raw).to(v.dtype))
    eta = torch.sigmoid(a_raw)
    kk = F.normalize((k * k_k).view(B, T, H, K), dim=-1)
    k = k * torch.addcmul(1 - k_a, eta, k_a)                      # k * (1 + (eta - 1) * k_a)
    w, k, v, eta = (t.view(B, T, H, K) for t in (w, k, v, eta))  # [B, T, D] -> [B, T, H, K]
    if keep is not None:
        m = keep.to(k.dtype)[:, :, None, None]
        w, k, kk = w * m, k * m, kk * m
    w, k, v, kk, eta = (t.to(dtype) for t in (w, k, v, kk, eta))
    return w, k, v, -kk, kk * eta


def time_mix_readout_reference(
    o: torch.Tensor,
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    r_k: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """``o, r, k, v [B, T, H, K]``, ``g [B, T, D]``, ``ln_weight, ln_bias [D]``, ``r_k [H, K]`` -> ``[B, T, D]``."""
    B, T, H, K = o.shape
    o = F.layer_norm(o, (K,), eps=eps)
    o = torch.addcmul(ln_bias.view(H, K), o, ln_weight.view(H, K))
    o = o + (r * k * r_k).sum(-1, keepdim=True) * v
    return o.reshape(B, T, H * K) * g
