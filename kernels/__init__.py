"""WKV-7 recurrence kernels. Knows nothing of ``dir7``; ``dir7`` calls :func:`wkv7` only."""

from .chunked import wkv7_chunked
from .dispatch import wkv7
from .naive import wkv7_naive

__all__ = ["wkv7", "wkv7_chunked", "wkv7_naive"]
