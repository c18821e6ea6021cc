"""The one entry point the model uses for the WKV recurrence: ``wkv7``.

CPU tensors go to the chunked PyTorch implementation. CUDA tensors go to the Triton
kernels when Triton is importable (else to the same PyTorch code, which also runs on GPU):

- gradient needed (training): the chunked Triton forward + backward (autograd Function);
- inference with T <= ``RECURRENT_MAX_T``: the fused-recurrent Triton forward;
- longer inference: the fused chunked Triton forward alone (no states stored), or from
  ``TWO_PASS_MIN_T`` on (when set) the two-pass one (parallel per-chunk prep, then a lean scan).

The threshold and the kernels' launch defaults come from benchmarks/wkv7.py on an H100.
Triton is imported on first use only, so ``import kernels`` needs neither Triton nor a GPU.
"""

from __future__ import annotations

import functools

import torch

from .chunked import wkv7_chunked

# Inference sequences up to this length use the fused-recurrent kernel. Measured on an H100
# (B=16, H=16, K=V=64, bf16; BENCHMARKS.md): recurrent 0.0059 ms vs chunk 0.0085 ms at T=1,
# 0.0156 vs 0.0128 at T=16; the crossover lies between (8 itself was not timed).
RECURRENT_MAX_T = 8

# Inference sequences from this length on would use the two-pass chunked forward. None: never,
# because on an H100 it measured slower than the fused kernel at every length tried
# (B=16, H=16, K=64, bf16: 0.161 vs 0.109 ms at T=256, 0.485 vs 0.419 at 1024, 1.872 vs 1.628
# at 4096; BENCHMARKS.md). It stays available as wkv7_triton_chunk_fwd(..., two_pass=True).
TWO_PASS_MIN_T: int | None = None

# Inference sequences from this length on use the look-ahead chunked forward (None: never).
LOOKAHEAD_MIN_T: int | None = None


@functools.lru_cache(maxsize=1)
def _triton_kernels():
    """``(recurrent, chunk, chunk_fwd)`` Triton entry points, or None without Triton."""
    try:
        from .triton_chunk import wkv7_triton_chunk, wkv7_triton_chunk_fwd
        from .triton_recurrent import wkv7_triton_recurrent
    except ImportError:
        return None
    return wkv7_triton_recurrent, wkv7_triton_chunk, wkv7_triton_chunk_fwd


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
    if r.is_cuda:
        triton_kernels = _triton_kernels()
        if triton_kernels is not None:
            recurrent, chunk, chunk_fwd = triton_kernels
            needs_grad = torch.is_grad_enabled() and any(
                x is not None and x.requires_grad for x in (r, w, k, v, a, b, initial_state)
            )
            if not needs_grad and r.shape[1] <= RECURRENT_MAX_T:
                return recurrent(r, w, k, v, a, b, scale, initial_state, output_final_state)
            if not needs_grad and TWO_PASS_MIN_T is not None and r.shape[1] >= TWO_PASS_MIN_T:
                return chunk_fwd(r, w, k, v, a, b, scale, initial_state, output_final_state, two_pass=True)
            if not needs_grad and LOOKAHEAD_MIN_T is not None and r.shape[1] >= LOOKAHEAD_MIN_T:
                return chunk_fwd(r, w, k, v, a, b, scale, initial_state, output_final_state, lookahead=True)
            return chunk(r, w, k, v, a, b, scale, initial_state, output_final_state)
    return wkv7_chunked(r, w, k, v, a, b, scale, initial_state, output_final_state)
