"""How many threads minibort computes with, and a small pool that runs blocks of work on them.

NumPy runs its elementwise operations (exp, max, sum, ...) on one core; only the BLAS products
(OpenBLAS in NumPy's wheels) use more. OpenBLAS splits each product statically between its threads,
which then wait for each other at a barrier: when another process holds one of the cores, every
product waits for the descheduled thread, and a model made of many small products slows 5-20x.

So minibort cuts its work into independent blocks and hands them to its own threads: the blocks of
attention (`layers.attention`) and bands of rows of LayerNorm and GELU (`run_rows`). (Not the linear
layers' large products: NumPy's OpenBLAS runs concurrent calls one after another, so bands of a
product on two threads measured no faster than one thread, and half as fast as OpenBLAS's own two.) Each thread takes the next block when it is free (a slow or
descheduled thread simply takes fewer), and BLAS is held to one thread meanwhile so the two kinds of
threads do not compete. NumPy releases Python's GIL inside its loops and BLAS calls, so the threads
do run at the same time, and the elementwise work, which NumPy runs on one core, gets them all.

The knob: MINIBORT_NUM_THREADS=n in the environment (applied when minibort.layers is imported), or
`set_num_threads(n)` at any time, sets both minibort's thread count and BLAS's. Without it, minibort
uses as many threads as BLAS does (so OPENBLAS_NUM_THREADS=1 holds minibort to one thread too; with
neither set, OpenBLAS and minibort use every core the process may run on). On a machine shared with
other busy processes, MINIBORT_NUM_THREADS=1 avoids the waiting altogether.

BLAS is reached through NumPy's own OpenBLAS (found among the loaded libraries, called with ctypes),
or through threadpoolctl when that is installed and the BLAS is another one; with neither, the BLAS
thread count is left alone. Nothing here changes OPENBLAS_CORETYPE or other OpenBLAS settings.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy  # noqa: F401  (loads the BLAS that _find_blas looks for among the libraries)

ENV = "MINIBORT_NUM_THREADS"

_lock = threading.Lock()
_state: dict = {"threads": None, "pool": None, "pool_pid": None, "pool_workers": 0, "blas": None,
                "blas_holders": 0, "blas_before": None}


# ------------------------------------------------------------------------------------ BLAS threads


def _find_blas():
    """(get, set) functions for the BLAS thread count, or None when no way to reach it is found."""
    names = [("openblas_get_num_threads", "openblas_set_num_threads"),
             ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
             ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
             ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads")]
    paths = []
    try:
        with open("/proc/self/maps") as f:                     # Linux: the shared libraries loaded
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:
        pass
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in names:
            if hasattr(lib, get_name) and hasattr(lib, set_name):
                get, put = getattr(lib, get_name), getattr(lib, set_name)
                get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                return get, put
    try:                                                       # another BLAS, or no /proc
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    ctls = ThreadpoolController().select(user_api="blas").lib_controllers
    if not ctls:
        return None
    c = ctls[0]
    return (lambda: c.get_num_threads()), c.set_num_threads


def _blas():
    if _state["blas"] is None:
        _state["blas"] = _find_blas() or False
    return _state["blas"]


def blas_threads() -> int | None:
    """BLAS's current thread count, or None if it cannot be read."""
    b = _blas()
    return int(b[0]()) if b else None


def set_blas_threads(n: int) -> bool:
    """Set BLAS's thread count; False if there is no way to (then nothing is changed)."""
    b = _blas()
    if b:
        b[1](int(n))
    return bool(b)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread inside the block, as it was afterwards. Several threads of the caller's
    may be inside at once (a Dask worker's, say): the first one in sets 1, the last one out restores."""
    with _lock:
        if _state["blas_holders"] == 0:
            _state["blas_before"] = blas_threads()
            if _state["blas_before"] not in (None, 1):
                set_blas_threads(1)
        _state["blas_holders"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["blas_holders"] -= 1
            if _state["blas_holders"] == 0 and _state["blas_before"] not in (None, 1):
                set_blas_threads(_state["blas_before"])


# ------------------------------------------------------------------------------------ minibort's threads


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):                          # not Linux
        return os.cpu_count() or 1


def _parse_env() -> int | None:
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        # A warning, not an error: this runs inside any model call, deep in other programs, where an
        # exception would surface as a traceback far from the setting that caused it.
        warnings.warn(f"{ENV}={raw!r} is not a thread count, so it is ignored; set it to a whole number "
                      f">= 1 (e.g. {ENV}=1 on a machine shared with other busy processes)", stacklevel=3)
        return None
    return n


def num_threads() -> int:
    """The threads minibort uses: set_num_threads(n), else MINIBORT_NUM_THREADS, else BLAS's thread
    count, else the CPUs the process may run on."""
    if _state["threads"] is None:
        with _lock:
            if _state["threads"] is None:
                n = _parse_env()
                if n is not None:
                    set_blas_threads(n)
                _state["threads"] = n or blas_threads() or _available_cpus()
    return _state["threads"]


def set_num_threads(n: int) -> None:
    """Use n threads from now on, for minibort's blocks and for BLAS (as MINIBORT_NUM_THREADS=n does)."""
    if int(n) < 1:
        raise ValueError(f"the thread count must be >= 1, got {n}")
    with _lock:
        _state["threads"] = int(n)
        set_blas_threads(int(n))


def _pool(workers: int) -> ThreadPoolExecutor:
    """The shared pool (recreated after a fork, or when the thread count grew)."""
    with _lock:
        pool = _state["pool"]
        if pool is None or _state["pool_pid"] != os.getpid() or _state["pool_workers"] < workers:
            pool = _state["pool"] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="minibort")
            _state["pool_pid"], _state["pool_workers"] = os.getpid(), workers
        return pool


def run_blocks(work: Callable[[object], None], blocks: Sequence, threads: int | None = None,
               blas_inside: bool = True) -> None:
    """Call work(block) for every block, on `threads` threads (default num_threads()).

    Each thread takes the next block when it is free, so the blocks run in no particular order:
    `work` must write only what its own block owns. When the work calls BLAS (`blas_inside`), BLAS
    is held to one thread meanwhile.
    """
    threads = min(num_threads() if threads is None else threads, len(blocks))
    if threads <= 1 or threading.current_thread().name.startswith("minibort"):   # inside a block: in turn
        for block in blocks:
            work(block)
        return
    counter = itertools.count()                                # next() on it is atomic under the GIL

    def worker() -> None:
        while (i := next(counter)) < len(blocks):
            work(blocks[i])
    with single_threaded_blas() if blas_inside else contextlib.nullcontext():
        futures = [_pool(threads - 1).submit(worker) for _ in range(threads - 1)]
        try:
            worker()                                           # this thread works too
        finally:
            for f in futures:
                f.result()


ROW_CHUNK_BYTES = 1 << 17          # a band of rows per array: 128 KB, so a layer's few arrays fit in L2


def run_rows(work: Callable[[slice], None], n_rows: int, row_bytes: int, threads: int | None = None,
             chunk_bytes: int = ROW_CHUNK_BYTES) -> None:
    """Call work(rows) for bands of rows (slices) covering range(n_rows), each about `chunk_bytes`,
    on minibort's threads; on one thread when there are fewer than four bands' worth of work. The
    work must not call BLAS (BLAS keeps its threads here).

    For elementwise and row-wise layers: an element's arithmetic does not depend on the band it is
    in, so the result is the one a single pass over all rows gives, bit for bit.
    """
    step = max(1, chunk_bytes // max(1, row_bytes))
    bands = [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]
    if threads is None and n_rows * row_bytes < 4 * chunk_bytes:
        threads = 1
    run_blocks(work, bands, threads, blas_inside=False)


if os.environ.get(ENV):            # the knob holds from import on, for BLAS's products too
    try:
        num_threads()
    except ValueError:             # raised again, with its fix, where minibort first computes in parallel
        _state["threads"] = None
