"""Worker processes made by fork, safely.

A forked child inherits every object of its parent, including objects only the garbage collector still
holds (a model no longer used, with its ONNX Runtime session). If the child's collector frees such a
session, the session's thread pool waits on locks held by threads that do not exist in the child: the
worker hangs for ever (seen in the test suite: ``ingest -j 2`` after a prediction in the same process).
Collecting the parent's garbage just before the fork leaves the child nothing of that kind to free.
"""

from __future__ import annotations

import gc
import multiprocessing as mp

__all__ = ["fork_context"]


def fork_context():
    """The fork start method, this process's unreachable objects freed first (see the module docstring);
    None where the platform has no fork. Every pool of worker processes in redsift is made from it."""
    try:
        ctx = mp.get_context("fork")
    except ValueError:
        return None
    gc.collect()
    return ctx
