"""Process memory: let glibc keep freed memory for reuse instead of returning it to the OS at once.

glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh mmap and unmaps it on
free, so a tensor of that size allocated anew each training step (VGG11's 411 MB fully connected weight
gradient, each large activation) is page-faulted and zeroed by the kernel every step: at the demo's 64 px
that is 120k page faults and a quarter of VGG11's step time in the kernel. Served from the heap and kept
there, it is reused without faults (docs/speed.md: 1.06-1.22x faster training steps, the same numbers). The
price: glibc's aligned allocations need a few bytes more than the block just freed, so the heap may grow by
one or two blocks of the largest size before it settles (tests/test_core_memory.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# Give the top of the heap back only beyond 2 GB free (mallopt's int maximum): a process that needed the
# memory once needs it again next step.
TRIM_ABOVE = 2**31 - 1


def reuse_freed_memory() -> bool:
    """Serve large allocations from the heap and trim it only beyond TRIM_ABOVE (mallopt M_MMAP_MAX=0,
    M_TRIM_THRESHOLD).

    For the rest of the process: the memory it holds stays near its peak. Returns whether it applied:
    False where the C library is not glibc (macOS, musl), which keeps its own behaviour.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE))
