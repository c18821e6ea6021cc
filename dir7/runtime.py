"""Runtime helpers: process-wide settings for CPU inference that an application opts into
(``python app.py`` does: the library never changes them on import, they affect every allocation of
the process), and host-to-GPU copies that do not stall the host.
"""

from __future__ import annotations

import ctypes
import sys

import torch

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); a forward's largest
# temporaries (the [6, B, T, D] lerps: 2.4 MB at the demo's shapes) are far below it
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks for reuse instead of handing them back to the OS.

    A CPU forward allocates and frees hundreds of activations of 0.1-2.4 MB. By default glibc
    serves blocks above its mmap threshold (128 KiB at first) with fresh mmaps and trims the
    heap top beyond 128 KiB, so those pages go back to the kernel and every reuse page-faults
    them in again, zeroed. Raising both thresholds keeps them in the heap. On two cores the
    shipped model's guided forward took 307 / 252 ms with it against 313 / 296 ms without, and an
    image 5.36 / 5.42 s against 5.88 / 6.32 s (two alternating runs each of ``python -m
    benchmarks.model_vs_dit --device cpu`` with ``--allocator app`` and ``--allocator default``;
    results/benchmarks/allocator/): a gain of about 10%, near that machine's run-to-run noise.
    The cost: the process keeps its peak heap (tens of MB here) instead of returning it between
    requests.

    Returns whether the settings were applied: False where the C library is not glibc (macOS,
    Windows, musl), which is then left as it is.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):  # no mallopt: not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; setting the mmap threshold also ends glibc's dynamic resizing of it
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def to_device(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``x`` on ``device``; to a GPU from pinned host memory, so that the copy is asynchronous.

    Numerical trap (speed): a CUDA copy from pageable host memory first synchronises the stream,
    so the host waits until all queued GPU work is done and cannot queue the next training step
    meanwhile; each step's CPU work (tokenising, drawing timesteps and noise, launching kernels)
    then leaves the GPU idle. From pinned memory the copy is queued like a kernel. (PyTorch's
    pinned-memory cache keeps the pinned block until the copy has run.)
    """
    device = torch.device(device)
    if device.type != "cuda" or x.device.type == "cuda":
        return x.to(device)
    # contiguous first: a strided source (a data-parallel rank's slice of the batch) would be
    # pinned whole and then copied through a pageable contiguous temporary
    x = x.contiguous()
    return (x if x.is_pinned() else x.pin_memory()).to(device, non_blocking=True)
