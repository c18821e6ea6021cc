"""WKV-7 recurrence kernels. Knows nothing of ``dir7``; ``dir7`` reaches it through ``dir7.ops``.

Installed, this folder is the package ``dir7_kernels`` (``kernels`` is Hugging Face's).
The Triton kernels (``wkv7_triton_recurrent``, ``wkv7_triton_chunk``, the fused time-mix
``time_mix_*_triton``, ``adaln_modulate_triton``, ``shifted_sum_triton``) and the Numba CPU kernels
(``wkv7_cpu_recurrent``, ``time_mix_*_cpu``) are imported on first access, so this package
imports without Triton, Numba or a GPU.
"""

from .chunked import wkv7_chunked
from .dispatch import adaln_modulate, shifted_sum, time_mix_prepare, time_mix_readout, wkv7
from .naive import wkv7_naive

_LAZY_NAMES = {
    "wkv7_triton_recurrent": "triton_recurrent",
    "wkv7_triton_chunk": "triton_chunk",
    "wkv7_cpu_recurrent": "cpu_recurrent",
    "time_mix_prepare_cpu": "cpu_time_mix",
    "time_mix_readout_cpu": "cpu_time_mix",
    "time_mix_prepare_triton": "triton_time_mix",
    "time_mix_readout_triton": "triton_time_mix",
    "adaln_modulate_triton": "triton_adaln",
    "shifted_sum_triton": "triton_token_shift",
}


def __getattr__(name: str):
    if name in _LAZY_NAMES:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# the lazy names stay out of __all__ so that ``import *`` never imports Triton or Numba
__all__ = ["adaln_modulate", "shifted_sum", "time_mix_prepare", "time_mix_readout", "wkv7", "wkv7_chunked",
           "wkv7_naive"]
