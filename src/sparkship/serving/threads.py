"""Split a large batch's rows over a thread pool sized to the cores; small batches stay on the calling thread.

The work handed out (the compiled tree kernel, numpy's gathers) releases the GIL, so the threads run in
parallel. Each block writes its own rows of one output array, so the result is the single-threaded one.
``SPARKSHIP_THREADS`` caps the threads (``1``: never split); by default every core counts.

    >>> out = np.zeros(5)
    >>> def work(lo, hi): out[lo:hi] = np.arange(lo, hi)
    >>> split_rows(5, work)
    >>> out.tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0]
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sparkship.errors import UsageError

ENV = "SPARKSHIP_THREADS"
MIN_BLOCK = 8192  # rows: a batch splits only into blocks at least this large (a thread hand-off costs ~50 us)

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def num_threads() -> int:
    """Threads a large batch is split over: ``SPARKSHIP_THREADS`` if set, else the cores this process may use."""
    raw = os.environ.get(ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise UsageError(f"{ENV}={raw!r} is not a positive number of threads")
        return int(raw)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _executor(threads: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < threads:  # grown when SPARKSHIP_THREADS asks for more
            _pool, _pool_size = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sparkship-rows"), threads
        return _pool


def split_rows(n: int, work: Callable[[int, int], None], threads: int | None = None) -> None:
    """Run ``work(lo, hi)`` over the rows ``0..n`` in blocks: one block on the calling thread when ``n`` is under
    two blocks of :data:`MIN_BLOCK` rows or one thread is wanted, else one block per thread in the pool.

    ``work`` must write only its own rows. The first exception raised by a block is raised here.
    """
    threads = min(threads or num_threads(), n // MIN_BLOCK)
    if threads < 2:
        work(0, n)
        return
    bounds = np.linspace(0, n, threads + 1).astype(int).tolist()
    pool = _executor(threads)
    futures = [pool.submit(work, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    errors: list[BaseException] = []
    try:
        work(bounds[0], bounds[1])  # the calling thread takes the first block
    except BaseException as exc:  # noqa: BLE001  re-raised below, once every block has finished
        errors.append(exc)
    for f in futures:
        failure = f.exception()
        if failure is not None:
            errors.append(failure)
    if errors:
        raise errors[0]
