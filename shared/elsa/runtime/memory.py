"""Keeping freed activation memory from piling up in the C heap of a simulation process.

glibc keeps freed blocks below its mmap threshold in the heap; a simulation that trains many
devices in turn then holds roughly one model's worth of activation memory per device
(measured: ~86 MiB RSS per extra simulated MiniLM device, against ~6 MiB of live adapter,
gradient and optimizer state). Lowering the threshold makes large activation buffers come
from mmap and go straight back to the OS.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h


def limit_heap_retention(threshold_bytes: int = 128 * 1024) -> bool:
    """Serve allocations >= ``threshold_bytes`` from mmap (glibc only). Returns whether it applied.

    Process-wide and idempotent; a no-op returning False where glibc's ``mallopt`` is absent.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
