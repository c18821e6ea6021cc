"""The time-mix layer's element-wise work in one compiled pass each, on the CPU (inference).

Same arithmetic as :mod:`kernels.time_mix` (read the equations there), which is their reference
and the path for training. In PyTorch these are ~20 (prepare) and ~7 (readout) element-wise
operations, each a pass over ``[B, T, D]`` with its own dispatch overhead; on a CPU at the demo's
sizes that overhead is most of their cost (docs/performance.md). Here one program per token
does all of it with the token's values in cache. Not differentiable; float32 arithmetic.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit, prange

# fastmath without "nnan"/"ninf": a NaN or inf in the input must reach the output
FASTMATH = {"contract", "reassoc", "arcp", "afn", "nsz"}


@njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def _prepare(k, w_sig, eta_in, v, v_first, v_mix, k_k, k_a, keep, H, w_scale, has_v_first, has_keep,
             w_out, k_out, v_out, a_out, b_out):  # pragma: no cover - compiled by Numba
    """[B, T, D] inputs, keep [B, T] uint8 (or a dummy), outputs [B, T, H, K]. The three sigmoids
    arrive computed (``w_sig``, ``eta_in``, ``v_mix``): torch's are vectorised, an exp here is
    scalar libm code, slower than the whole PyTorch version."""
    B, T, D = k.shape
    K = D // H
    for bt in prange(B * T):
        bi = bt // T
        t = bt % T
        m = 1.0
        if has_keep:
            m = float(keep[bi, t])
        for h in range(H):
            c0 = h * K
            ss = 0.0
            for i in range(K):
                x = k[bi, t, c0 + i] * k_k[c0 + i]
                ss += x * x
            inv = 1.0 / max(math.sqrt(ss), 1e-12)  # F.normalize: x / max(||x||, eps)
            for i in range(K):
                c = c0 + i
                kc = k[bi, t, c]
                eta = eta_in[bi, t, c]
                kk = kc * k_k[c] * inv * m
                w_out[bi, t, h, i] = w_scale * w_sig[bi, t, c] * m
                k_out[bi, t, h, i] = kc * (1.0 + (eta - 1.0) * k_a[c]) * m
                vc = v[bi, t, c]
                if has_v_first:
                    vc = vc + v_mix[bi, t, c] * (v_first[bi, t, c] - vc)
                v_out[bi, t, h, i] = vc
                a_out[bi, t, h, i] = -kk
                b_out[bi, t, h, i] = kk * eta


@njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def _readout(o, r, k, v, g, ln_w, ln_b, r_k, eps, out):  # pragma: no cover - compiled by Numba
    """o, r, k, v [B, T, H, K]; g [B, T, D]; out [B, T, D]."""
    B, T, H, K = o.shape
    for bt in prange(B * T):
        bi = bt // T
        t = bt % T
        for h in range(H):
            mean = 0.0
            bonus = 0.0
            for i in range(K):
                mean += o[bi, t, h, i]
                bonus += r[bi, t, h, i] * k[bi, t, h, i] * r_k[h, i]
            mean /= K
            var = 0.0
            for i in range(K):
                d = o[bi, t, h, i] - mean
                var += d * d
            inv = 1.0 / math.sqrt(var / K + eps)  # layer norm: biased variance, eps inside the root
            for i in range(K):
                c = h * K + i
                y = (o[bi, t, h, i] - mean) * inv * ln_w[c] + ln_b[c] + bonus * v[bi, t, h, i]
                out[bi, t, c] = y * g[bi, t, c]


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().to(torch.float32).contiguous().numpy()


def _threads() -> None:
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


# torch.compile cannot trace into Numba: a compiled model breaks its graph at these two calls
@torch.compiler.disable
def time_mix_prepare_cpu(k, w_raw, a_raw, v, v_first, v_mix_raw, k_k, k_a, keep, n_heads, w_scale, dtype):
    """Same contract as :func:`kernels.time_mix.time_mix_prepare_reference` (CPU tensors)."""
    B, T, D = k.shape
    K = D // n_heads
    has_v_first, has_keep = v_first is not None, keep is not None
    vk = _np(k)
    dummy = np.zeros((1, 1, 1), np.float32)
    keep_np = keep.detach().to(torch.uint8).contiguous().numpy() if has_keep else np.zeros((1, 1), np.uint8)
    outs = [np.empty((B, T, n_heads, K), np.float32) for _ in range(5)]
    _threads()
    _prepare(vk, _np(torch.sigmoid(w_raw)), _np(torch.sigmoid(a_raw)), _np(v), _np(v_first) if has_v_first else dummy,
             _np(torch.sigmoid(v_mix_raw)) if has_v_first else dummy, _np(k_k), _np(k_a), keep_np, n_heads,
             np.float32(w_scale), has_v_first, has_keep, *outs)
    return tuple(torch.from_numpy(x).to(dtype) for x in outs)


@torch.compiler.disable
def time_mix_readout_cpu(o, r, k, v, g, ln_weight, ln_bias, r_k, eps):
    """Same contract as :func:`kernels.time_mix.time_mix_readout_reference` (CPU tensors)."""
    B, T, H, K = o.shape
    out = np.empty((B, T, H * K), np.float32)
    _threads()
    _readout(_np(o), _np(r), _np(k), _np(v), _np(g), _np(ln_weight), _np(ln_bias), _np(r_k), np.float32(eps), out)
    return torch.from_numpy(out).to(o.dtype)
