"""The C allocator, asked from Python: glibc's, through ctypes (elsewhere every call here is a no-op).

glibc serves arrays over its mmap threshold (128 KB at start) from their own mappings, returned when freed; but
freeing such an array raises the threshold to its size (glibc's "dynamic threshold", up to 32 MB), so the arrays of
that size made next come from the heap, and heap pages below its top that are free again stay in the process.
Two uses: :func:`release_freed` (``malloc_trim(0)``: every free page of the heap given back, glibc >= 2.8 also
those below the top) after a phase of a long run, and the prediction pipeline's allocator setting
(:func:`redsift.predict.pipeline.reuse_freed_memory`, through :func:`libc`).
"""

from __future__ import annotations

import ctypes
import functools
import sys

__all__ = ["libc", "release_freed"]


@functools.lru_cache(maxsize=1)
def libc():
    """glibc through ctypes (with ``malloc_trim`` and ``mallopt``), or None (another platform or C library)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        lib = ctypes.CDLL("libc.so.6")
        lib.malloc_trim.argtypes, lib.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        lib.mallopt.argtypes, lib.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):  # musl and others
        return None
    return lib


def release_freed() -> bool:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim(0)``, ~1 ms); True where something
    was released. Call it once a phase's temporaries are gone (after a catalog join, after each chunk of a long
    run), not per array."""
    lib = libc()
    return bool(lib.malloc_trim(0)) if lib is not None else False
