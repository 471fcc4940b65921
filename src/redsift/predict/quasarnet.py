"""QuasarNET prediction: one catalog row per input spectrum, in the redrock/DESI convention.

Columns: ``TARGETID, Z, ZERR, ZWARN, SPECTYPE, SUBTYPE``, the survey ids,
``SOURCE, INDEX``, then ``IS_QSO, IS_BAL, C_LYA ... C_HALPHA, C_BAL,
Z_LYA ... Z_HALPHA, Z_BAL``. ``SPECTYPE`` is ``QSO`` for quasars and
``NONQSO`` otherwise (finer classes come with the classifier); ``SUBTYPE`` is
``BAL`` for BAL quasars. ``Z`` is the model's redshift for quasars (the most
confident line, or the weighted mean of the agreeing lines: the model's
``z_method``) and NaN otherwise. ``ZERR`` comes from the model's validation-
calibrated error table (S/N on the model grid x number of agreeing lines; see
:func:`redsift.models.quasarnet.calibrate_zerr`) and is NaN for models without
one (the imported QuasarNET models) and for non-quasars.

ZWARN: the input's bits (``NODATA``/``BAD_INPUT`` for unreadable files,
``BAD_VALUES``), ``LITTLE_COVERAGE`` (< 50% of the grid with data), and
``LOW_CONFIDENCE`` when the best line's confidence lies near the threshold on
either side: within a factor e in odds (|logit(c) - logit(c_th)| < 1; for
c_th = 0.4 that is 0.20-0.64, for c_th = 0.95 it is 0.87-0.98).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from astropy.table import Table
from scipy.special import logit

from ..preprocess import bin_quasarnet, coverage_zwarn, normalize_mean_rms, snr_median
from ..spectra import Spectra
from ..zwarning import ZWarningMask

__all__ = ["predict_arrays", "predict_spectra", "predict_catalog", "catalog_provenance"]

log = logging.getLogger(__name__)


def onnx_session(model, threads: int | None = None, form: str = "inference"):
    """An ONNX Runtime session running ``model`` (exported once and cached on the model), or None
    when onnxruntime/onnx are not installed (``pip install 'redsift[fast]'``).

    ``form="inference"`` exports :class:`~redsift.models.quasarnet.QuasarNetInference` (the fast form,
    used by :func:`predict_arrays`); ``form="plain"`` exports the training module as it is (kept for
    the benchmark's side-by-side comparison)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    key = ("_onnx_session", threads, form)
    cached = getattr(model, "_onnx_cache", {})
    if key in cached:
        return cached[key]
    import io
    import warnings

    from ..models.quasarnet import QuasarNetInference

    buf = io.BytesIO()
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            export = QuasarNetInference(model) if form == "inference" and model.family == "quasarnet" else model
            torch.onnx.export(export, (torch.zeros(2, model.config.logrid.npix),), buf, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                              opset_version=17, dynamo=False)
        except Exception as exc:  # exporter unavailable in this torch: fall back to torch
            log.info("ONNX export failed (%s); using torch", exc)
            return None
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
    cached[key] = sess
    model._onnx_cache = cached
    return sess


def predict_arrays(model, X: np.ndarray, batch_size: int = 1024, backend: str = "auto") -> np.ndarray:
    """Raw finder outputs ``(n, nfinders, 2*nboxes)`` for normalised inputs ``X`` (n, npix).

    ``backend``: ``"torch"`` (eager, inference mode, any device), ``"onnx"`` (ONNX Runtime on the CPU,
    ~2x faster here, see docs/benchmarks.md) or ``"auto"`` (ONNX Runtime when installed and the model
    is on the CPU). Both give the same numbers to float32 round-off.
    """
    nf, nb2 = model.config.nfinders, 2 * model.config.nboxes
    if len(X) == 0:
        return np.zeros((0, nf, nb2), np.float32)
    X = np.ascontiguousarray(X, np.float32)
    on_cpu = next(model.parameters()).device.type == "cpu"
    sess = onnx_session(model) if backend in ("auto", "onnx") and on_cpu else None
    if backend == "onnx" and sess is None:
        from ..errors import RedsiftError

        raise RedsiftError("the onnx backend needs onnxruntime and onnx (pip install 'redsift[fast]')")
    if sess is not None:
        return np.concatenate([sess.run(None, {"x": X[s:s + batch_size]})[0] for s in range(0, len(X), batch_size)])
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for s in range(0, len(X), batch_size):
            out.append(model(torch.from_numpy(X[s:s + batch_size]).to(device)).cpu().numpy())
    return np.concatenate(out)


def catalog_provenance(model, name: str, command: str) -> dict:
    """The header record of a catalog made by ``model``: what made it and its decision rule."""
    from ..io.output import provenance

    return provenance(model=f"{model.family}:{name}", weights_sha256=getattr(model, "weights_sha256", ""),
                      grid=model.config.logrid, command=command, **getattr(model.config, "decisions", dict)())


def _snr(model, flux, ivar):
    """S/N on the model grid, needed only by models with a redshift-error table."""
    return snr_median(flux, ivar) if model.config.zerr_table else None


def _catalog(model, raw, zwarn, meta, snr=None) -> Table:
    from ..models.quasarnet import decode, redshift_error

    cfg = model.config
    d = decode(raw, cfg)
    n = len(meta)
    nodata = (zwarn & int(ZWarningMask.NODATA)) > 0
    is_qso = d["is_qso"] & ~nodata
    is_bal = d.get("is_bal", np.zeros(n, bool)) & ~nodata
    best_c = d["c_line"].max(axis=1) if n else np.zeros(0)
    low = (np.abs(logit(np.clip(best_c, 1e-7, 1 - 1e-7)) - logit(cfg.c_th)) < 1.0) & ~nodata
    zwarn = zwarn | np.where(low, int(ZWarningMask.LOW_CONFIDENCE), 0)
    t = Table()
    t["TARGETID"] = np.asarray(meta["TARGETID"], np.int64)
    t["Z"] = np.where(is_qso, d["zbest"], np.nan)
    snr = np.full(n, np.nan) if snr is None else snr
    t["ZERR"] = np.where(is_qso, redshift_error(d["zbest"], snr, d["n_agree"], cfg), np.nan)
    t["ZWARN"] = zwarn.astype(np.int64)
    t["SPECTYPE"] = np.where(is_qso, "QSO", "NONQSO")
    t["SUBTYPE"] = np.where(is_bal, "BAL", "")
    for c in ("SURVEY", "PLATE", "MJD", "FIBERID", "OBSID", "THING_ID", "RA", "DEC", "SOURCE", "INDEX"):
        if c in meta.colnames:
            t[c] = meta[c]
    t["IS_QSO"] = is_qso
    t["IS_BAL"] = is_bal
    names = [name for name, _ in cfg.lines]
    for k, name in enumerate(names):
        t[f"C_{name}"] = np.where(nodata, np.nan, d["c_line"][:, k]).astype(np.float32)
    if cfg.bal_line:
        t["C_BAL"] = np.where(nodata, np.nan, d["c_bal"]).astype(np.float32)
    for k, name in enumerate(names):
        t[f"Z_{name}"] = np.where(nodata, np.nan, d["z_line"][:, k])
    if cfg.bal_line:
        t["Z_BAL"] = np.where(nodata, np.nan, d["z_bal"])
    if "ERROR" in meta.colnames:
        t["ERROR"] = meta["ERROR"]
    return t


def predict_spectra(model, spectra: Spectra, batch_size: int = 1024) -> Table:
    """Catalog rows for a batch of spectra (any format, any grid: binned onto the model's grid)."""
    grid = model.config.logrid
    b = bin_quasarnet(spectra, grid)
    X = normalize_mean_rms(b.flux, b.ivar)
    zwarn = np.asarray(spectra.meta["ZWARN"], np.int64) | coverage_zwarn(b.ivar)
    return _catalog(model, predict_arrays(model, X, batch_size), zwarn, spectra.meta, _snr(model, b.flux, b.ivar))


def predict_catalog(model, inputs, batch_files: int = 256, progress: bool = True) -> Table:
    """Predict for files (any format ``redsift.read`` knows, bad files flagged) and/or dataset directories."""
    import os

    from astropy.table import vstack
    from tqdm.auto import tqdm

    from ..data.store import INDEX_NAME, Dataset
    from ..errors import RedsiftError
    from ..io.registry import expand_paths, iter_read

    parts = []
    files = []
    for item in inputs:
        if os.path.isdir(item) and os.path.exists(os.path.join(item, INDEX_NAME)):
            ds = Dataset(item)
            if ds.grid != model.config.logrid:
                raise RedsiftError(f"{item}: dataset grid ({ds.grid.describe()}) differs from the model's "
                                   f"({model.config.logrid.describe()})")
            meta = ds.meta
            for s in tqdm(range(0, len(ds), 8192), desc="predict", disable=not progress):
                idx = np.arange(s, min(s + 8192, len(ds)))
                flux, ivar, _ = ds.read(idx)
                X = normalize_mean_rms(flux, ivar)
                m = meta[idx]
                zwarn = (np.asarray(m["ZWARN"], np.int64) if "ZWARN" in m.colnames else 0) | coverage_zwarn(ivar)
                if "SOURCE" not in m.colnames:
                    m["SOURCE"] = [item] * len(m)
                parts.append(_catalog(model, predict_arrays(model, X), zwarn, m, _snr(model, flux, ivar)))
        else:
            files.extend(expand_paths([item]))
    batch = []
    bar = tqdm(total=len(files), desc="predict", unit="file", disable=not progress or not files)
    for _, s in iter_read(files, errors="flag"):
        batch.append(s)
        bar.update()
        if len(batch) >= batch_files:
            parts.append(predict_spectra(model, Spectra.concatenate(batch)))
            batch = []
    if batch:
        parts.append(predict_spectra(model, Spectra.concatenate(batch)))
    bar.close()
    if not parts:
        raise RedsiftError("no input spectra")
    from ..spectra import stack_meta

    return stack_meta(parts) if len(parts) > 1 else parts[0]
