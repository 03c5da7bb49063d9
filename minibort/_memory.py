"""Keep freed memory for reuse, so a forward pass does not pay for fresh pages every time.

NumPy takes every array from malloc. glibc serves large requests (above a threshold that grows to
at most 32 MB) with fresh pages from the operating system and hands pages back when the heap's top
is freed. A Bort forward at 8 x 128 allocates and frees about 60 MB of temporaries, so each call
pays ~15,000 page faults (measured: 364 ms with them, 317 ms without, on the benchmark machine).
Raising glibc's mmap and trim thresholds keeps those pages in the process for the next call. The
cost: the process's resident memory stays near its peak instead of shrinking between calls.

Only on Linux with glibc; elsewhere, or with MINIBORT_MALLOC_TUNING=0 in the environment, nothing
is changed. Called once, when the first model is built.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1           # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory() -> bool:
    """Set glibc's thresholds so freed blocks are reused rather than unmapped. True if applied."""
    global _done
    if _done:
        return True
    if os.environ.get("MINIBORT_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):          # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1
    _done = ok
    return ok
