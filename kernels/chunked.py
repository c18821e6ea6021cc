"""Chunked WKV-7 in plain PyTorch: intra-chunk work as small matrix products.

The sequence is cut into chunks of C steps. Inside a chunk everything that does not
depend on the incoming state is computed for all chunks at once (batched matmuls and
one triangular inverse); only a [K, K] @ [K, V] product per chunk stays sequential.

Derivation (one head, chunk-local time t = 1..C, incoming state S_0):
    cw_t = sum_{j<=t} w_j                          cumulative log-decay (inclusive)
    G(t, s) = diag(exp(cw_t - cw_s))               decay from step s to step t
    u_t = a_t^T S_{t-1}                            what the delta rule removes at t
    S_t = G(t, 0) S_0 + sum_{s<=t} G(t, s) (b_s u_s + k_s v_s^T)
so u solves the unit-lower-triangular system
    (I - L_ab) u = A_dec S_0 + L_ak V,   L_xy[t, s] = x_t^T G(t-1, s) y_s   (s < t)
and, with W = (I - L_ab)^{-1} A_dec and U0 = (I - L_ab)^{-1} L_ak V:
    o     = (R_dec + Q_rb W) S_0 + (Q_rb U0 + Q_rk V)        Q_xy[t, s] = x_t^T G(t, s) y_s  (s <= t)
    S_C   = exp(cw_C) * S_0 + B_end^T (W S_0) + (B_end^T U0 + K_end^T V)

Numerical trap: the pairwise decays exp(cw_t - cw_s) are factorised as
exp(cw_t - m) * exp(m - cw_s) to become matrix products. m is the cumulative decay at
the chunk's middle, so neither factor exceeds exp(|sum of w over half a chunk|). In
float32 that overflows only if the log-decays of C/2 consecutive steps sum below about
-80; RWKV-7 keeps every w above -0.61 (so -4.9 for C = 16), fla's tests use
logsigmoid(randn) (rarely below -5 a step). Entries with s > t would be the large ones:
they are masked with ``torch.where``, never multiplied by zero (inf * 0 = NaN).
"""

from __future__ import annotations

import torch

from .naive import check_wkv7_inputs, compute_dtype


def wkv7_chunked(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as :func:`kernels.naive.wkv7_naive`, differentiable, much faster."""
    check_wkv7_inputs(r, w, k, v, a, b, initial_state)
    B, T, H, K = r.shape
    V = v.shape[-1]
    C = chunk_size
    out_dtype, dtype = r.dtype, compute_dtype(r.dtype)
    r, w, k, v, a, b = (x.to(dtype) for x in (r, w, k, v, a, b))
    S = r.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    if T == 0:
        return r.new_zeros(B, 0, H, V).to(out_dtype), (S if output_final_state else None)

    # ---- pad T to a multiple of C with identity steps (w = 0 keeps the state, k = a = 0 write nothing)
    N = -(-T // C)
    pad = N * C - T
    if pad:
        r, w, k, v, a, b = (torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad)) for x in (r, w, k, v, a, b))

    def chunks(x: torch.Tensor) -> torch.Tensor:  # [B, N*C, H, X] -> [B, H, N, C, X]
        return x.view(B, N, C, H, x.shape[-1]).permute(0, 3, 1, 2, 4)

    r, w, k, v, a, b = (chunks(x) for x in (r, w, k, v, a, b))

    # ---- decays inside each chunk
    cw = torch.cumsum(w, dim=-2)                       # cw_t, inclusive   [B, H, N, C, K]
    cw_prev = cw - w                                   # cw_{t-1}
    mid = cw[..., C // 2 : C // 2 + 1, :]              # reference point   [B, H, N, 1, K]
    cw_end = cw[..., -1:, :]                           # cw_C              [B, H, N, 1, K]
    r_m = r * torch.exp(cw - mid)
    a_m = a * torch.exp(cw_prev - mid)
    b_m = b * torch.exp(mid - cw)
    k_m = k * torch.exp(mid - cw)

    strict = torch.ones(C, C, dtype=torch.bool, device=r.device).tril(-1)  # s < t
    causal = torch.ones(C, C, dtype=torch.bool, device=r.device).tril()    # s <= t
    zero = r.new_zeros(())
    L_ab = torch.where(strict, a_m @ b_m.transpose(-1, -2), zero)          # [B, H, N, C, C]
    L_ak = torch.where(strict, a_m @ k_m.transpose(-1, -2), zero)
    Q_rb = torch.where(causal, r_m @ b_m.transpose(-1, -2), zero)
    Q_rk = torch.where(causal, r_m @ k_m.transpose(-1, -2), zero)

    # ---- WY form: everything except the state hand-off, for all chunks at once
    eye = torch.eye(C, dtype=dtype, device=r.device)
    T_inv = torch.linalg.solve_triangular(eye - L_ab, eye.expand_as(L_ab), upper=False, unitriangular=True)
    a_dec = a * torch.exp(cw_prev)                     # a_t * G(t-1, 0)   [B, H, N, C, K]
    r_dec = r * torch.exp(cw)                          # r_t * G(t, 0)
    b_end = b * torch.exp(cw_end - cw)                 # b_s * G(C, s)
    k_end = k * torch.exp(cw_end - cw)
    W = T_inv @ a_dec                                  # [B, H, N, C, K]
    U0 = T_inv @ (L_ak @ v)                            # [B, H, N, C, V]
    P = r_dec + Q_rb @ W                               # o = P S_0 + O0
    O0 = Q_rb @ U0 + Q_rk @ v                          # [B, H, N, C, V]
    decay_end = torch.exp(cw_end).transpose(-1, -2)                    # [B, H, N, K, 1]
    b_end_t = b_end.transpose(-1, -2)                                  # [B, H, N, K, C]
    G = b_end_t @ U0 + k_end.transpose(-1, -2) @ v                     # [B, H, N, K, V]

    # ---- the only sequential part: hand the state from chunk to chunk,
    # S_C = exp(cw_C) * S_0 + B_end^T (W S_0) + G (two thin products; never form the [K, K] transition)
    starts = []
    for n in range(N):
        starts.append(S)
        S = decay_end[:, :, n] * S + b_end_t[:, :, n] @ (W[:, :, n] @ S) + G[:, :, n]
    S_starts = torch.stack(starts, dim=2)              # state entering each chunk [B, H, N, K, V]

    o = scale * (P @ S_starts + O0)                    # [B, H, N, C, V]
    o = o.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, V)[:, :T]
    return o.to(out_dtype), (S if output_final_state else None)
