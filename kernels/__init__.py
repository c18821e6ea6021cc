"""WKV-7 recurrence kernels. Knows nothing of ``dir7``; ``dir7`` calls :func:`wkv7` only.

The Triton kernels (``wkv7_triton_recurrent``, ``wkv7_triton_chunk``) are imported on first
access, so this package imports without Triton or a GPU.
"""

from .chunked import wkv7_chunked
from .dispatch import wkv7
from .naive import wkv7_naive

_TRITON_NAMES = {
    "wkv7_triton_recurrent": "triton_recurrent",
    "wkv7_triton_chunk": "triton_chunk",
}


def __getattr__(name: str):
    if name in _TRITON_NAMES:
        import importlib

        return getattr(importlib.import_module(f".{_TRITON_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# the Triton names stay out of __all__ so that ``from kernels import *`` never imports Triton
__all__ = ["wkv7", "wkv7_chunked", "wkv7_naive"]
