"""Running a model on prepared inputs: torch, or ONNX Runtime for families with an ``export`` hook."""

from __future__ import annotations

import logging

import numpy as np

from ..errors import RedsiftError
from ..models.registry import get_family

__all__ = ["infer", "onnx_session"]

log = logging.getLogger(__name__)

#: Spectra per model call in the predict pipeline (and rows per dataset read; ``predict.pipeline.BATCH_ROWS``).
#: Smaller batches were faster and lighter for every family (2-core VM, 8,192 simulated BOSS spectra from a
#: dataset: the default 47-50 s and 3.4 GB peak at 4,096 rows, 31 s and 1.1 GB at 512; QuasarNET 12.5 -> 9.3 s;
#: the same catalog): the eigen scans' and the gridding's temporaries stay in cache and are not fresh pages;
#: docs/benchmarks.md "Memory and time, 1k to 100k".
BATCH_ROWS = 512
#: rows of the two calls that fill a new ONNX Runtime session's arena: the pipeline's batch
WARM_ROWS = BATCH_ROWS


def onnx_session(model, threads: int | None = None, form: str = "inference"):
    """An ONNX Runtime session running ``model`` (exported once and cached on the model), or None when
    onnxruntime/onnx are not installed (``pip install 'redsift[fast]'``) or the family has no export hook.

    ``form="inference"`` exports what the family's ``export`` hook gives (QuasarNET: batch norm folded,
    2-D convolutions: the fast form); ``form="plain"`` exports the module as it is (kept for the
    benchmark's side-by-side comparison)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    fam = get_family(model)
    if fam.export is None and form == "inference":
        return None
    key = ("_onnx_session", threads, form)
    cached = getattr(model, "_onnx_cache", {})
    if key in cached:
        return cached[key]
    import io
    import warnings

    import torch

    buf = io.BytesIO()
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            export = fam.export(model) if form == "inference" else model
            torch.onnx.export(export, (torch.zeros(2, fam.grid(model).npix),), buf, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                              opset_version=17, dynamo=False)
        except Exception as exc:  # exporter unavailable in this torch: fall back to torch
            log.info("ONNX export failed (%s); using torch", exc)
            return None
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
    # ONNX Runtime's CPU arena grows on the first two calls of a batch's shape and keeps its high-water mark (kept
    # for speed: without it the model runs 15-19% slower); filling it now makes a short run's peak memory a long
    # run's (a 1,000-spectrum trial then sizes a survey's job: a batch scheduler kills a job past its request).
    # Two calls of WARM_ROWS rows: ~0.25 s for QuasarNET (docs/benchmarks.md "Memory and time, 1k to 100k")
    x = np.zeros((WARM_ROWS, fam.grid(model).npix), np.float32)
    try:
        for _ in range(2):
            sess.run(None, {"x": x})
    except Exception as exc:  # a session that cannot run: fall back to torch, as for a failed export
        log.info("ONNX Runtime session failed its first run (%s); using torch", exc)
        return None
    cached[key] = sess
    model._onnx_cache = cached
    return sess


def infer(model, X: np.ndarray, batch_size: int = 1024, backend: str = "auto"):
    """Raw outputs of ``model`` for prepared inputs ``X``.

    ``backend``: ``"torch"`` (the family's own :meth:`~redsift.models.family.Family.infer`, any device),
    ``"onnx"`` (ONNX Runtime on the CPU, ~2x faster here for QuasarNET, see docs/benchmarks.md) or
    ``"auto"`` (ONNX Runtime when installed, the family can export and the model is on the CPU). Both
    give the same numbers to float32 round-off.
    """
    fam = get_family(model)
    X = np.ascontiguousarray(X, np.float32)
    params = list(model.parameters()) if hasattr(model, "parameters") else []
    on_cpu = not params or params[0].device.type == "cpu"
    if getattr(fam, "container", False):  # a family of several models (combined): each part chooses
        return fam.infer(model, X, batch_size=batch_size, backend=backend)
    sess = onnx_session(model) if backend in ("auto", "onnx") and on_cpu and params else None
    if backend == "onnx" and sess is None:
        raise RedsiftError("the onnx backend needs onnxruntime and onnx (pip install 'redsift[fast]') and a "
                           "family with an export hook")
    if sess is not None and len(X):
        return np.concatenate([sess.run(None, {"x": X[s:s + batch_size]})[0] for s in range(0, len(X), batch_size)])
    return fam.infer(model, X, batch_size=batch_size)
