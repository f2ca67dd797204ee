"""What this process runs with: its cores, its event loop, and the garbage collector's
thresholds during runs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
from collections.abc import Callable, Iterator

__all__ = ["cores", "loop_factory", "relaxed_gc"]


def cores() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None
# Rows are young container objects by the hundred thousand (records, tuples, dicts): with the
# default thresholds (700, 10, 10) the cyclic collector ran so often that it took a quarter
# of the row path's CPU, walking batches that reference counting frees anyway. While a run is
# active, collections happen every 100,000 allocations instead; cycles are still collected.
_GC_THRESHOLDS = (100_000, 50, 100)


@contextlib.contextmanager
def relaxed_gc() -> Iterator[None]:
    """Raise the garbage collector's thresholds while at least one run is active."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(*(max(a, b) for a, b in zip(_gc_saved, _GC_THRESHOLDS, strict=True)))
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
                _gc_saved = None


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (it is on Linux and macOS), else asyncio's."""
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.new_event_loop
    return None
