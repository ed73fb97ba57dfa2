"""Handing the C heap's free pages back to the operating system.

glibc's malloc keeps freed memory in its arenas for reuse. A recognizer that runs passes
of ever-changing shapes (utterances of every length, padded batches, rescoring trees of
every size) leaves that free memory scattered between live blocks, and the process's RSS
settles at the largest working set it ever needed, in steps. `malloc_trim(0)` returns the
free pages of every arena (not only the top of the main heap); it takes about 20 ms for a
2 GB server process, so long-running services call it when idle, every few seconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["release_free_heap", "can_release_free_heap"]


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (musl, macOS, Windows: nothing to call)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def can_release_free_heap() -> bool:
    return _malloc_trim() is not None


def release_free_heap() -> bool:
    """Return the heap's free pages to the OS; True when some were released."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
