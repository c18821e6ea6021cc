"""The entry points the model uses: ``wkv7`` (the recurrence), the time-mix layer's
element-wise work around it, ``time_mix_prepare`` and ``time_mix_readout``, and the blocks'
adaLN normalise-and-modulate, ``adaln_modulate``.

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
references (kernels/time_mix.py). ``adaln_modulate``: one Triton pass each way for CUDA tensors
(kernels/triton_adaln.py), the PyTorch reference (kernels/adaln.py) elsewhere. ``shifted_sum``
(the token shift after a time-mix layer's fused products): one Triton pass each way for CUDA
tensors (kernels/triton_token_shift.py), the reference (kernels/token_shift.py) elsewhere.

Triton and Numba are imported on first use only, so ``import kernels`` needs neither; on a machine
with a GPU the Triton kernels are imported with this module (a torch.compile'd model must not
meet an import, see ``_FOUND``).
"""

from __future__ import annotations

import importlib

import torch

from .adaln import adaln_modulate_reference
from .chunked import wkv7_chunked
from .time_mix import time_mix_prepare_reference, time_mix_readout_reference
from .token_shift import shifted_sum_reference

# Inference sequences up to this length use the fused-recurrent kernel. Measured on an H100
# (B=16, H=16, K=V=64, bf16; BENCHMARKS.md): recurrent 0.0059 ms vs chunk 0.0085 ms at T=1,
# 0.0156 vs 0.0128 at T=16; the crossover lies between (8 itself was not timed).
RECURRENT_MAX_T = 8


# module name -> the imported sibling module, or None where it cannot be imported. A plain dict,
# not functools.cache: torch.compile cannot trace a first import (importlib is skipped), and a
# cached function it meets breaks the graph at every call site (a fragmented compiled model: at
# 1024 tokens dir7-s's compiled forward measured 88.8 ms against 63.0 eager). A lookup of an
# entry already present traces as a constant.
_FOUND: dict[str, object | None] = {}
# the kernel modules CUDA tensors use: imported with this module where a GPU is present, so that
# no compiled model's first call meets an import
TRITON_MODULES = ("triton_recurrent", "triton_chunk", "triton_time_mix", "triton_adaln", "triton_token_shift")


def _optional(module: str, *names: str) -> tuple | None:
    """The named functions of a sibling module, or None where it cannot be imported (no Numba, no Triton)."""
    if module not in _FOUND:
        try:
            _FOUND[module] = importlib.import_module(f".{module}", __package__)
        except ImportError:
            _FOUND[module] = None
    found = _FOUND[module]
    return None if found is None else tuple(getattr(found, n) for n in names)


# one accessor per kernel family (the tests replace them to see which path ran)
def _cpu_kernel():
    """The Numba fused-recurrent forward, or None without Numba."""
    fns = _optional("cpu_recurrent", "wkv7_cpu_recurrent")
    return fns and fns[0]


def _cpu_time_mix():
    """The Numba ``(prepare, readout)``, or None without Numba."""
    return _optional("cpu_time_mix", "time_mix_prepare_cpu", "time_mix_readout_cpu")


def _compiled_cpu_inference(*tensors: torch.Tensor | None) -> bool:
    """True where the compiled CPU path applies: CPU tensors, no gradient wanted, no float64."""
    present = [t for t in tensors if t is not None]
    return (all(t.device.type == "cpu" for t in present) and not any(t.dtype == torch.float64 for t in present)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in present)))


def _triton_kernels():
    """``(recurrent, chunk)`` Triton entry points, or None without Triton."""
    recurrent = _optional("triton_recurrent", "wkv7_triton_recurrent")
    chunk = _optional("triton_chunk", "wkv7_triton_chunk")
    return (recurrent[0], chunk[0]) if recurrent and chunk else None


def _triton_time_mix():
    """The Triton ``(prepare, readout)``, or None without Triton."""
    return _optional("triton_time_mix", "time_mix_prepare_triton", "time_mix_readout_triton")


def _triton_adaln():
    """The Triton adaLN normalise-and-modulate, or None without Triton."""
    fns = _optional("triton_adaln", "adaln_modulate_triton")
    return fns and fns[0]


def _triton_token_shift():
    """The Triton shifted sum, or None without Triton."""
    fns = _optional("triton_token_shift", "shifted_sum_triton")
    return fns and fns[0]


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


def _time_mix_fns(*tensors: torch.Tensor | None) -> tuple | None:
    """The compiled ``(prepare, readout)`` for these tensors, or None for the references: the fused
    Triton kernels for CUDA tensors (training or not, no float64), Numba for CPU inference."""
    present = [t for t in tensors if t is not None]
    if all(t.is_cuda for t in present) and not any(t.dtype == torch.float64 for t in present):
        return _triton_time_mix()
    if _compiled_cpu_inference(*present):
        return _cpu_time_mix()
    return None


def time_mix_prepare(k, w_raw, a_raw, v, v_first, v_mix_raw, k_k, k_a, keep, n_heads, w_scale, dtype):
    """The projections' outputs -> the recurrence's inputs ``(w, k, v, a, b)``; see kernels/time_mix.py."""
    args = (k, w_raw, a_raw, v, v_first, v_mix_raw, k_k, k_a, keep, n_heads, w_scale, dtype)
    fns = _time_mix_fns(k, w_raw, a_raw, v, v_first, v_mix_raw, k_k, k_a)
    return (fns[0] if fns else time_mix_prepare_reference)(*args)


def time_mix_readout(o, r, k, v, g, ln_weight, ln_bias, r_k, eps):
    """The recurrence's output -> what the output projection reads; see kernels/time_mix.py."""
    args = (o, r, k, v, g, ln_weight, ln_bias, r_k, eps)
    fns = _time_mix_fns(o, r, k, v, g, ln_weight, ln_bias, r_k)
    return (fns[1] if fns else time_mix_readout_reference)(*args)


def adaln_modulate(x, shift, scale, eps):
    """``LayerNorm(x) * (1 + scale) + shift`` in ``shift``'s dtype; see kernels/adaln.py. One
    Triton pass for CUDA tensors (no float64), the PyTorch reference elsewhere (the CPU's
    LayerNorm and addcmul are already one pass each there)."""
    if x.is_cuda and shift.is_cuda and scale.is_cuda and x.dtype != torch.float64 and not torch.compiler.is_compiling():
        fn = _triton_adaln()
        if fn is not None:
            return fn(x, shift, scale, eps)
    return adaln_modulate_reference(x, shift, scale, eps)


def shifted_sum(y, n):
    """``y[..., :n] + token_shift(y[..., n:])`` for ``y [B, T, 2n]``; see kernels/token_shift.py.
    One Triton pass each way for CUDA tensors (no float64), the PyTorch reference elsewhere."""
    if y.is_cuda and y.dtype != torch.float64 and not torch.compiler.is_compiling():
        fn = _triton_token_shift()
        if fn is not None:
            return fn(y, n)
    return shifted_sum_reference(y, n)


if torch.cuda.is_available():  # see _FOUND
    for _module in TRITON_MODULES:
        try:
            _optional(_module)
        except Exception:  # a broken Triton install: import dir7 still works, the first CUDA call raises
            _FOUND.pop(_module, None)
