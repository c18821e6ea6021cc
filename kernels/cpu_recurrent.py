"""Fused-recurrent WKV-7 forward on the CPU, compiled with Numba (inference; no backward).

The CPU counterpart of :mod:`kernels.triton_recurrent`. On a CPU the chunked PyTorch form
(:mod:`kernels.chunked`) spends almost all of its time in the overhead of ~100 small tensor
operations per call, not in arithmetic; one compiled loop per (batch, head) does the same work
in a tenth of the time (docs/performance.md). Each program keeps its head's ``[K, V]`` state in
a local array and walks ``t = 0 .. T-1``:

    sa_t = a_t^T S_{t-1}                                   what the delta rule removes  [V]
    S_t  = diag(exp(w_t)) S_{t-1} + b_t sa_t^T + k_t v_t^T
    o_t  = scale * S_t^T r_t                               accumulated while S_t is written

The heads run in parallel on Numba's threads (as many as ``torch.get_num_threads()``).
Arithmetic is float32 whatever the input dtype (like the other kernels' state); the output has
the input's dtype. The first call compiles the loop (seconds); the machine code is cached on
disk, so later processes load it.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

from .naive import check_wkv7_inputs


# fastmath without "nnan"/"ninf": a NaN or inf in the input must reach the output, never be optimised away
@njit(parallel=True, fastmath={"contract", "reassoc", "arcp", "afn", "nsz"}, cache=True, nogil=True)
def _recurrent_fwd(r, d, k, v, a, b, scale, S0, o, ST):  # pragma: no cover - compiled by Numba
    """r, d, k, a, b [B, T, H, K], v [B, T, H, V], float32; S0, ST [B, H, K, V]; o [B, T, H, V].
    ``d = exp(w)``, the decay itself: computed beforehand by torch's vectorised exp (an exp here
    is scalar libm code: 1.75 -> 1.55 ms a call at the shipped model's shape)."""
    B, T, H, K = r.shape
    V = v.shape[3]
    for bh in prange(B * H):
        bi = bh // H
        h = bh % H
        S = S0[bi, h].copy()
        sa = np.empty(V, np.float32)
        acc = np.empty(V, np.float32)
        for t in range(T):
            sa[:] = 0.0
            for i in range(K):
                ai = a[bi, t, h, i]
                for j in range(V):
                    sa[j] += ai * S[i, j]
            acc[:] = 0.0
            for i in range(K):
                di = d[bi, t, h, i]
                bi_t = b[bi, t, h, i]
                ki = k[bi, t, h, i]
                ri = r[bi, t, h, i]
                for j in range(V):
                    s = di * S[i, j] + bi_t * sa[j] + ki * v[bi, t, h, j]
                    S[i, j] = s
                    acc[j] += ri * s
            for j in range(V):
                o[bi, t, h, j] = scale * acc[j]
        ST[bi, h] = S


# torch.compile cannot trace into Numba (it fails inside Numba's parfor lowering): a compiled
# model breaks its graph here and runs this call as it is
@torch.compiler.disable
def wkv7_cpu_recurrent(
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
    """Same contract as :func:`kernels.naive.wkv7_naive`, CPU tensors, not differentiable."""
    check_wkv7_inputs(r, w, k, v, a, b, initial_state)
    if r.device.type != "cpu":
        raise ValueError(f"wkv7_cpu_recurrent runs on CPU tensors, got {r.device}")
    B, T, H, K = r.shape
    V = v.shape[-1]
    d = torch.exp(w.detach().to(torch.float32))
    xs = [x.detach().to(torch.float32).contiguous().numpy() for x in (r, d, k, v, a, b)]
    S0 = (np.zeros((B, H, K, V), np.float32) if initial_state is None
          else initial_state.detach().to(torch.float32).contiguous().numpy())
    o = np.empty((B, T, H, V), np.float32)
    ST = np.empty((B, H, K, V), np.float32)
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    _recurrent_fwd(*xs, np.float32(scale), S0, o, ST)
    out = torch.from_numpy(o).to(r.dtype)
    return out, (torch.from_numpy(ST) if output_final_state else None)
