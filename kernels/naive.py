"""Sequential reference for the RWKV-7 WKV recurrence (the generalized delta rule).

This is the definition every other implementation is checked against; it favours
clarity over speed. Layout is ``[B, T, H, K]``; the state is ``[B, H, K, V]``.

    S_t = diag(exp(w_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T
    o_t = scale * S_t^T r_t

``w`` is the *log* of the decay (always <= 0 in RWKV-7). With ``a = -kk`` and
``b = kk * eta`` the middle term removes what the state stored under key ``kk``
(the delta rule); this is the convention of fla's ``chunk_rwkv7``.
"""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate in float32 at least (float64 inputs stay float64)."""
    return torch.promote_types(dtype, torch.float32)


def check_wkv7_inputs(r, w, k, v, a, b, initial_state) -> None:
    """Raise a clear error for inputs that do not fit the ``[B, T, H, K]`` layout."""
    if r.dim() != 4:
        raise ValueError(f"wkv7 expects [B, T, H, K] tensors, got r of shape {tuple(r.shape)}")
    B, T, H, K = r.shape
    for name, x in (("w", w), ("k", k), ("a", a), ("b", b)):
        if x.shape != r.shape:
            raise ValueError(f"wkv7: {name} has shape {tuple(x.shape)}, expected {tuple(r.shape)} like r")
    if v.dim() != 4 or v.shape[:3] != (B, T, H):
        raise ValueError(f"wkv7: v has shape {tuple(v.shape)}, expected [{B}, {T}, {H}, V]")
    V = v.shape[-1]
    if initial_state is not None and initial_state.shape != (B, H, K, V):
        raise ValueError(
            f"wkv7: initial_state has shape {tuple(initial_state.shape)}, expected {(B, H, K, V)}"
        )


def wkv7_naive(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One step at a time. Returns ``(o [B, T, H, V], S_T [B, H, K, V] or None)``.

    Differentiable through autograd (slowly): use it for tests, not training.
    """
    check_wkv7_inputs(r, w, k, v, a, b, initial_state)
    B, T, H, K = r.shape
    V = v.shape[-1]
    out_dtype, dtype = r.dtype, compute_dtype(r.dtype)
    r, w, k, v, a, b = (x.to(dtype) for x in (r, w, k, v, a, b))

    if initial_state is None:
        S = r.new_zeros(B, H, K, V)
    else:
        S = initial_state.to(dtype)
    outputs = []
    for t in range(T):
        decay = torch.exp(w[:, t])                               # [B, H, K]
        removed = torch.einsum("bhk,bhkv->bhv", a[:, t], S)      # a_t^T S_{t-1}: [B, H, V]
        S = (
            decay[..., None] * S
            + b[:, t, :, :, None] * removed[:, :, None, :]
            + k[:, t, :, :, None] * v[:, t, :, None, :]
        )
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", r[:, t], S))
    o = torch.stack(outputs, dim=1) if T > 0 else v.new_zeros(B, 0, H, V)  # [B, T, H, V]
    return o.to(out_dtype), (S if output_final_state else None)
