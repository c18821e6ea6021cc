"""The entry points the model uses: ``wkv7`` (the recurrence) and the time-mix layer's
element-wise work around it, ``time_mix_prepare`` and ``time_mix_readout``.

CPU tensors: inference (no gradient needed, float32 or half inputs) runs the Numba-compiled
fused-recurrent loop when Numba is importable; training, float64 and machines without Numba run
the chunked PyTorch implementation. CUDA tensors go to the Triton kernels when Triton is
importable (else to the same PyTorch code, which also runs on GPU):

- gradient needed (training): the chunked Triton forward + backward (autograd Function);
- inference with T <= ``RECURRENT_MAX_T``: the fused-recurrent Triton forward;
- longer inference: the fused chunked Triton forward alone (no states stored).

The threshold and the kernels' launch defaults come from ``python -m benchmarks.wkv7`` on an H100.
``time_mix_prepare`` / ``time_mix_readout``: CUDA tensors (training or not) run the fused Triton
kernels (kernels/triton_time_mix.py: one pass forward, one backward); CPU inference runs their
Numba versions (one pass each); the rest (CPU training, float64) runs the plain-PyTorch
references (kernels/time_mix.py).

Triton and Numba are imported on first use only, so ``import kernels`` needs neither.
"""

from __future__ import annotations

import functools

import torch

from .chunked import wkv7_chunked
from .time_mix import time_mix_prepare_reference, time_mix_readout_reference

# Inference sequences up to this length use the fused-recurrent kernel. Measured on an H100
# (B=16, H=16, K=V=64, bf16; BENCHMARKS.md): recurrent 0.0059 ms vs chunk 0.0085 ms at T=1,
# 0.0156 vs 0.0128 at T=16; the crossover lies between (8 itself was not timed).
RECURRENT_MAX_T = 8


@functools.lru_cache(maxsize=1)
def _cpu_kernel():
    """The Numba fused-recurrent forward, or None without Numba."""
    try:
        from .cpu_recurrent import wkv7_cpu_recurrent
    except ImportError:
        return None
    return wkv7_cpu_recurrent


@functools.lru_cache(maxsize=1)
def _cpu_time_mix():
    """The Numba ``(prepare, readout)``, or None without Numba."""
    try:
        from .cpu_time_mix import time_mix_prepare_cpu, time_mix_readout_cpu
    except ImportError:
        return None
    return time_mix_prepare_cpu, time_mix_readout_cpu


def _compiled_cpu_inference(*tensors: torch.Tensor | None) -> bool:
    """True where the compiled CPU path applies: CPU tensors, no gradient wanted, no float64."""
    present = [t for t in tensors if t is not None]
    return (all(t.device.type == "cpu" for t in present) and not any(t.dtype == torch.float64 for t in present)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in present)))


@functools.lru_cache(maxsize=1)
def _triton_kernels():
    """``(recurrent, chunk)`` Triton entry points, or None without Triton."""
    try:
        from .triton_chunk import wkv7_triton_chunk
        from .triton_recurrent import wkv7_triton_recurrent
    except ImportError:
        return None
    return wkv7_triton_recurrent, wkv7_triton_chunk


def wkv7(
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
    """WKV-7 with fla's ``chunk_rwkv7`` contract: ``[B, T, H, K]`` in, ``(o, S_T)`` out.

    ``w`` is the log-decay (<= 0), ``a = -kk`` and ``b = kk * eta`` for RWKV-7, the state is
    float32 ``[B, H, K, V]``. ``scale`` defaults to 1.0 (fla's fused kernel defaults to
    1/sqrt(K) when given None: do not rely on that).
    """
    needs_grad = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (r, w, k, v, a, b, initial_state)
    )
    if r.device.type == "cpu" and not needs_grad and r.dtype != torch.float64:
        cpu_kernel = _cpu_kernel()
        if cpu_kernel is not None:
            return cpu_kernel(r, w, k, v, a, b, scale, initial_state, output_final_state)
    if r.is_cuda:
        triton_kernels = _triton_kernels()
        if triton_kernels is not None:
            recurrent, chunk = triton_kernels
            if not needs_grad and r.shape[1] <= RECURRENT_MAX_T:
                return recurrent(r, w, k, v, a, b, scale, initial_state, output_final_state)
            return chunk(r, w, k, v, a, b, scale, initial_state, output_final_state)
    return wkv7_chunked(r, w, k, v, a, b, scale, initial_state, output_final_state)


@functools.lru_cache(maxsize=1)
def _triton_time_mix():
    """The Triton ``(prepare, readout)``, or None without Triton."""
    try:
        from .triton_time_mix import time_mix_prepare_triton, time_mix_readout_triton
    except ImportError:
        return None
    return time_mix_prepare_triton, time_mix_readout_triton


def _fused_cuda(*tensors: torch.Tensor | None):
    """The Triton ``(prepare, readout)`` where they apply (CUDA tensors, no float64), else None."""
    present = [t for t in tensors if t is not None]
    if all(t.is_cuda for t in present) and not any(t.dtype == torch.float64 for t in present):
        return _triton_time_mix()
    return None


def time_mix_prepare(k, w_raw, a_raw, v, v_first, v_mix_raw, k_k, k_a, keep, n_heads, w_scale, dtype):
    """The projections' outputs -> the recurrence's inputs ``(w, k, v, a, b)``; see kernels/time_mix.py."""
    args = (k, w_raw, a_raw, v, v_first, v_mix_raw, k_k, k_a, keep, n_heads, w_scale, dtype)
    fused = _fused_cuda(k, w_raw, a_raw, v, v_first, v_mix_raw, k_k, k_a)
    if fused is not None:
        return fused[0](*args)
    if _compiled_cpu_inference(k, w_raw, a_raw, v, v_first, v_mix_raw, k_k, k_a):
        fns = _cpu_time_mix()
        if fns is not None:
            return fns[0](*args)
    return time_mix_prepare_reference(*args)


def time_mix_readout(o, r, k, v, g, ln_weight, ln_bias, r_k, eps):
    """The recurrence's output -> what the output projection reads; see kernels/time_mix.py."""
    args = (o, r, k, v, g, ln_weight, ln_bias, r_k, eps)
    fused = _fused_cuda(o, r, k, v, g, ln_weight, ln_bias, r_k)
    if fused is not None:
        return fused[1](*args)
    if _compiled_cpu_inference(o, r, k, v, g, ln_weight, ln_bias, r_k):
        fns = _cpu_time_mix()
        if fns is not None:
            return fns[1](*args)
    return time_mix_readout_reference(*args)
