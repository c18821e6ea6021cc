"""The one place ``dir7`` reaches the repository's ``kernels/`` folder (the WKV-7 kernels).

``kernels/`` knows nothing of ``dir7``. Installed (``pip install .``) it is the top-level
package ``dir7_kernels``: the name ``kernels`` belongs to Hugging Face's ``kernels`` package
(pulled in by transformers' extras), which would overwrite ours on install. A source checkout
installs nothing, so there the folder beside this package is loaded under that same name;
either way the rest of ``dir7`` (and the tests) see one module, ``dir7_kernels``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

PACKAGE = "dir7_kernels"


def _load_kernels():
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    root = Path(__file__).resolve().parent.parent
    source = root / "kernels" / "__init__.py"
    # a checkout has its pyproject.toml beside the two folders; site-packages has none, and its
    # kernels/ (if any) is somebody else's package
    if (root / "pyproject.toml").is_file() and source.is_file():
        spec = importlib.util.spec_from_file_location(PACKAGE, source, submodule_search_locations=[str(source.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[PACKAGE]
            raise
        return module
    return importlib.import_module(PACKAGE)


kernels = _load_kernels()
wkv7 = kernels.wkv7                  # dispatching: Numba loop / chunked PyTorch on CPU, Triton on CUDA
wkv7_chunked = kernels.wkv7_chunked  # the chunked PyTorch implementation (any device)
wkv7_naive = kernels.wkv7_naive      # the sequential reference every implementation is tested against
time_mix_prepare = kernels.time_mix_prepare  # a time-mix layer's element-wise work before the recurrence
time_mix_readout = kernels.time_mix_readout  # ... and after it
adaln_modulate = kernels.adaln_modulate      # a block's LayerNorm + adaLN modulation, one pass on CUDA
shifted_sum = kernels.shifted_sum            # the token shift after a time-mix layer's fused products

__all__ = ["adaln_modulate", "kernels", "shifted_sum", "time_mix_prepare", "time_mix_readout", "wkv7", "wkv7_chunked",
           "wkv7_naive"]
