"""Worker processes made by fork, safely.

A forked child inherits every object of its parent, including objects only the garbage collector still
holds (a model no longer used, with its ONNX Runtime session). If the child's collector frees such a
session, the session's thread pool waits on locks held by threads that do not exist in the child: the
worker hangs for ever (seen in the test suite: ``ingest -j 2`` after a prediction in the same process).
Collecting the parent's garbage just before the fork leaves the child nothing of that kind to free.
"""

from __future__ import annotations

import gc

__all__ = ["before_fork"]


def before_fork() -> None:
    """Free this process's unreachable objects now, before worker processes are forked from it."""
    gc.collect()
