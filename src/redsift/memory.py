"""Freed memory handed back to the system between the phases of a long run.

glibc's allocator serves arrays over its mmap threshold (128 KB at start) from their own mappings, returned when
freed; but freeing such an array raises the threshold to its size (glibc's "dynamic threshold", up to 32 MB), so
the arrays of that size made next come from the heap, and heap pages below its top that are free again stay in
the process. ``malloc_trim(0)`` gives every free page of the heap back (glibc >= 2.8 also releases pages below the
top). Elsewhere (musl, macOS, Windows) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["release_freed"]


@functools.lru_cache(maxsize=1)
def _trim():
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_freed() -> bool:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim(0)``, ~1 ms); True where something
    was released. Call it after a phase whose temporaries are gone, not in a loop."""
    fn = _trim()
    return bool(fn(0)) if fn is not None else False
