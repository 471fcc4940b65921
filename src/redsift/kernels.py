"""Compiled CPU kernels for the hot paths no library does without copies (numba, optional: ``pip install
redsift[fast]``).

Each kernel has a pure numpy/torch twin that runs without numba (``REDSIFT_NO_NUMBA=1``, or numba missing,
or a GPU, or a batch under :data:`MIN_PIXELS`); :data:`AVAILABLE` says whether numba can run. numba is
imported, and each kernel compiled (or loaded from numba's cache), at the kernel's first call. The eigen scan's native stage is in
:mod:`redsift.models.eigen_kernels`; the QuasarNET binning of spectra sharing one wavelength array is here
(:func:`bin_shared`), the flux-conserving rebin of spectra sharing one wavelength array (:func:`rebin_shared`),
the checks every batch of spectra gets on construction (:func:`check_values`) and the
merge of camera arms (:func:`merge_arms`, DESI).
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

__all__ = ["AVAILABLE", "MIN_PIXELS", "loaded", "njit", "bin_shared", "rebin_shared", "check_values", "merge_arms"]

#: Batches smaller than this (spectra x pixels) keep the numpy paths: numba's import and first call cost ~1 s
#: of start-up once per process, ~30 ms per 1,000 spectra saved (a spPlate has 4.6 million pixels)
MIN_PIXELS = 1_000_000

AVAILABLE = not os.environ.get("REDSIFT_NO_NUMBA") and importlib.util.find_spec("numba") is not None


def loaded() -> bool:
    """Whether numba is already imported in this process (its import and first call cost ~1 s)."""
    return AVAILABLE and "numba" in sys.modules


def njit(**options):
    """numba's ``njit``, applied at the function's first call (so that importing redsift never imports numba)."""
    def wrap(fn):
        compiled = []

        def call(*args):
            if not compiled:
                from numba import njit as _njit

                compiled.append(_njit(**options)(fn))
            return compiled[0](*args)

        call.__name__ = call.__qualname__ = fn.__name__
        return call
    return wrap


@njit(cache=True, nogil=True)  # no fastmath: the sums must be the general path's, in its order
def _bin_shared(flux, ivar, mask, idx, nbin, flux_out, ivar_out):  # pragma: no cover - compiled
    nspec, npix = flux.shape
    for i in range(nspec):
        cur = -1
        sw = 0.0
        swf = 0.0
        for p in range(npix + 1):  # idx is non-decreasing: a bin's pixels are consecutive (one more step flushes)
            b = idx[p] if p < npix else -2
            if b != cur:
                if cur >= 0 and cur < nbin and sw > 0:
                    flux_out[i, cur] = swf / sw
                    ivar_out[i, cur] = sw
                cur = b
                sw = 0.0
                swf = 0.0
            if p == npix or b < 0 or b >= nbin or mask[i, p]:
                continue
            w = np.float64(ivar[i, p])
            if w > 0:
                sw += w
                swf += w * np.float64(flux[i, p])


def bin_shared(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, idx: np.ndarray, nbin: int):
    """QuasarNET's binning (:func:`redsift.preprocess.bin_quasarnet`) of spectra sharing one wavelength
    array: native pixel ``p`` with weight ``ivar * ~mask > 0`` goes to bin ``idx[p]`` (non-decreasing;
    dropped outside ``0 .. nbin - 1``); per bin the float64 sums of ``w`` and ``w f`` in pixel order, as ``numpy.bincount``
    adds them in the general path (so the same bits), then ``sum w f / sum w`` and ``sum w`` in float32.

    One pass over each spectrum's pixels, the weights formed on the fly: a 1,000-fibre spPlate in ~10 ms on
    one core, where the general path's float64 copies of the weights and ``w f`` and the sparse product took
    ~0.1 s (``docs/benchmarks.md``)."""
    nspec = flux.shape[0]
    if np.any(np.diff(idx) < 0):
        raise ValueError("bin_shared needs non-decreasing bin indices")
    flux_out = np.zeros((nspec, nbin), np.float32)
    ivar_out = np.zeros((nspec, nbin), np.float32)
    if nspec:
        _bin_shared(np.ascontiguousarray(flux), np.ascontiguousarray(ivar), np.ascontiguousarray(mask, bool),
                    np.ascontiguousarray(idx, np.int64), int(nbin), flux_out, ivar_out)
    return flux_out, ivar_out


@njit(cache=True, nogil=True)
def _check_values(flux, ivar, mask, bad_rows, data_rows):  # pragma: no cover - compiled
    nspec, npix = flux.shape
    for i in range(nspec):
        bad = False
        data = False
        for p in range(npix):
            f = flux[i, p]
            w = ivar[i, p]
            if not (np.isfinite(f) and np.isfinite(w) and w >= 0):
                bad = True
            elif w > 0 and not mask[i, p]:
                data = True
        bad_rows[i] = bad
        data_rows[i] = data


def check_values(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray):
    """Per spectrum: whether any pixel has a non-finite flux or ivar or a negative ivar, and whether any
    pixel has data (``ivar > 0``, unmasked, finite): the checks of :class:`redsift.Spectra`'s construction in
    one pass without temporaries (a 1,000-fibre spPlate: the numpy expressions wrote ~6 arrays of its size)."""
    nspec = flux.shape[0]
    bad_rows = np.zeros(nspec, bool)
    data_rows = np.zeros(nspec, bool)
    if nspec:
        _check_values(flux, ivar, mask, bad_rows, data_rows)
    return bad_rows, data_rows


@njit(cache=True, nogil=True)
def _merge_arm(f, iv, m, has_mask, place, shared_idx, flux, den, num, sw, raw):  # pragma: no cover - compiled
    nspec, npix = f.shape
    for i in range(nspec):
        for p in range(npix):
            x = f[i, p]
            w = iv[i, p]
            if not np.isfinite(x):
                x = np.float32(0)
            if not (np.isfinite(w) and w > 0):
                w = np.float32(0)
            if has_mask and m[i, p]:
                w = np.float32(0)
            q = place[p]
            j = shared_idx[q]
            if j >= 0:
                num[i, j] += np.float64(w) * np.float64(x)
                sw[i, j] += np.float64(w)
                raw[i, j] += np.float64(x)
            else:
                flux[i, q] = x + np.float32(0)  # -0.0 becomes +0.0, as the numpy path's sum gives it
                den[i, q] = w


@njit(cache=True, nogil=True)
def _merge_shared(shared, cnt, num, sw, raw, flux, den):  # pragma: no cover - compiled
    nspec, ns = num.shape
    for i in range(nspec):
        for j in range(ns):
            q = shared[j]
            if sw[i, j] > 0:
                flux[i, q] = np.float32(num[i, j] / sw[i, j])
            else:
                flux[i, q] = np.float32(raw[i, j] / cnt[q])
            den[i, q] = np.float32(sw[i, j])


def merge_arms(fluxes, ivars, masks, places, cnt, nwave):
    """The merge of :func:`redsift.io.desi.merge_arms` for float32 arms (native byte order): each arm's
    pixels cleaned (non-finite flux -> 0; non-finite, non-positive or masked ivar -> 0) and either copied
    (pixels one arm sees) or summed in float64 in arm order (pixels several see), one pass per arm; the same
    bits as the numpy path (``tests/test_readers.py``). Returns ``flux, ivar`` (nspec, nwave) float32."""
    nspec = fluxes[0].shape[0]
    shared = np.flatnonzero(cnt > 1)
    shared_idx = np.full(nwave, -1, np.int64)
    shared_idx[shared] = np.arange(shared.size)
    flux = np.zeros((nspec, nwave), np.float32)
    den = np.zeros((nspec, nwave), np.float32)
    num = np.zeros((nspec, shared.size))
    sw = np.zeros((nspec, shared.size))
    raw = np.zeros((nspec, shared.size))
    for f, iv, m, idx in zip(fluxes, ivars, masks, places):
        has = m is not None
        _merge_arm(np.ascontiguousarray(f), np.ascontiguousarray(iv),
                   np.ascontiguousarray(m, bool) if has else np.zeros((1, 1), bool), has,
                   np.ascontiguousarray(idx, np.int64), shared_idx, flux, den, num, sw, raw)
    if shared.size:
        _merge_shared(shared, np.asarray(cnt, np.int64), num, sw, raw, flux, den)
    return flux, den


@njit(cache=True, nogil=True)  # no fastmath: scipy's CSR product's operations, in its order
def _rebin_shared(flux, ivar, mask, indptr, indices, data, flux_out, ivar_out):  # pragma: no cover - compiled
    nspec = flux.shape[0]
    nbin = indptr.size - 1
    for i in range(nspec):
        for b in range(nbin):
            sw = 0.0
            swf = 0.0
            sw2 = 0.0
            for jj in range(indptr[b], indptr[b + 1]):
                p = indices[jj]
                a = data[jj]
                w = 0.0 if mask[i, p] else np.float64(ivar[i, p])
                sw += a * w
                swf += a * (w * np.float64(flux[i, p]))
                sw2 += (a * a) * w
            if sw > 0:
                flux_out[i, b] = swf / sw
                ivar_out[i, b] = (sw * sw) / sw2


def rebin_shared(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, W):
    """The flux-conserving rebin (:func:`redsift.preprocess.rebin`) of spectra sharing one wavelength array,
    ``W`` the (bins x pixels) overlap matrix in canonical CSR form: per bin the sums of ``a w``, ``a w f`` and
    ``a^2 w`` over its pixels in the matrix's order, the operations of SciPy's CSR products on the weights
    (so the same bits, ``tests/test_preprocess.py``), without their transposed float64 copies (which took
    most of the default model's gridding: 2 s of 4.3 s for 4,000 DESI spectra)."""
    if not W.has_canonical_format:
        raise ValueError("rebin_shared needs a canonical CSR matrix")
    nspec, nbin = flux.shape[0], W.shape[0]
    flux_out = np.zeros((nspec, nbin), np.float32)
    ivar_out = np.zeros((nspec, nbin), np.float32)
    if nspec:
        _rebin_shared(np.ascontiguousarray(flux), np.ascontiguousarray(ivar), np.ascontiguousarray(mask, bool),
                      W.indptr.astype(np.int64), W.indices.astype(np.int64), np.ascontiguousarray(W.data, np.float64),
                      flux_out, ivar_out)
    return flux_out, ivar_out
