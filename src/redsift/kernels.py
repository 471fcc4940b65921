"""Compiled CPU kernels for the hot paths no library does without copies (numba, optional: ``pip install
redsift[fast]``).

Each kernel has a pure numpy/torch twin that runs without numba (``REDSIFT_NO_NUMBA=1``, or numba missing,
or a GPU, or a batch under :data:`MIN_PIXELS`); :data:`AVAILABLE` says whether numba can run. numba is
imported, and each kernel compiled (or loaded from numba's cache), at the kernel's first call. The eigen scan's native stage is in
:mod:`redsift.models.eigen_kernels`; the QuasarNET binning of spectra sharing one wavelength array is here
(:func:`bin_shared`), the flux-conserving rebin of spectra sharing one wavelength array (:func:`rebin_shared`),
the checks every batch of spectra gets on construction (:func:`check_values`) and the
merge of camera arms (:func:`merge_arms_alone`, DESI).
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

__all__ = ["AVAILABLE", "MIN_PIXELS", "loaded", "njit", "bin_shared", "rebin_shared", "check_values", "merge_arms_alone"]

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
def _bin_shared(flux, ivar, mask, start, stop, flux_out, ivar_out):  # pragma: no cover - compiled
    nspec = flux.shape[0]
    for i in range(nspec):
        fr, wr, mr = flux[i], ivar[i], mask[i]
        for b in range(start.size):  # bin b's pixels: start[b] .. stop[b] - 1 (consecutive)
            sw = 0.0
            swf = 0.0
            for p in range(start[b], stop[b]):
                # branch-free: a pixel without weight adds +0.0 to sums that start at +0.0 and never become
                # -0.0, so the same bits as adding only the pixels with weight (the general path's bincount)
                w = np.float64(wr[p])
                keep = (w > 0) & (not mr[p])
                sw += w if keep else 0.0
                swf += w * np.float64(fr[p]) if keep else 0.0
            if sw > 0:
                flux_out[i, b] = swf / sw
                ivar_out[i, b] = sw


def bin_shared(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, idx: np.ndarray, nbin: int):
    """QuasarNET's binning (:func:`redsift.preprocess.bin_quasarnet`) of spectra sharing one wavelength
    array: native pixel ``p`` with weight ``ivar * ~mask > 0`` goes to bin ``idx[p]`` (non-decreasing;
    dropped outside ``0 .. nbin - 1``); per bin the float64 sums of ``w`` and ``w f`` in pixel order, as ``numpy.bincount``
    adds them in the general path (so the same bits), then ``sum w f / sum w`` and ``sum w`` in float32.

    One pass over each spectrum's pixels, bin by bin, the weights formed on the fly and without branches
    (DESI's 500 x 7,781 pixels: 9.4 -> 6.3 ms against the branching loop; a 1,000-fibre spPlate in ~10 ms on
    one core, where the general path's float64 copies and sparse product took ~0.1 s, docs/benchmarks.md)."""
    nspec = flux.shape[0]
    if np.any(np.diff(idx) < 0):
        raise ValueError("bin_shared needs non-decreasing bin indices")
    flux_out = np.zeros((nspec, nbin), np.float32)
    ivar_out = np.zeros((nspec, nbin), np.float32)
    if nspec:
        bins = np.arange(int(nbin))
        start, stop = np.searchsorted(idx, bins, "left"), np.searchsorted(idx, bins, "right")
        _bin_shared(np.ascontiguousarray(flux), np.ascontiguousarray(ivar), np.ascontiguousarray(mask, bool),
                    start.astype(np.int64), stop.astype(np.int64), flux_out, ivar_out)
    return flux_out, ivar_out


@njit(cache=True, nogil=True)
def _check_values(flux, ivar, mask, bad_rows, data_rows):  # pragma: no cover - compiled
    nspec, npix = flux.shape
    for i in range(nspec):
        fr, wr, mr = flux[i], ivar[i], mask[i]
        bad = False
        data = False
        for p in range(npix):  # branch-free, so that it vectorises (the branching loop was 3x slower)
            x = fr[p]
            w = wr[p]
            ok = (x - x == 0) & (w - w == 0) & (w >= 0)  # x - x is 0 for finite values only (NaN otherwise)
            bad |= not ok
            data |= ok & (w > 0) & (not mr[p])
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
def _merge_runs(f, iv, m, has_mask, swap, runs, flux, den):  # pragma: no cover - compiled
    """Copy runs of pixels that one arm alone sees, cleaned, working on the float32 values' bits (no float
    is formed, so FITS's big-endian words are swapped here rather than copied to native order first). Flux:
    NaN or +-inf (exponent bits all set) -> 0, -0.0 -> +0.0 (what x + 0 gives); ivar kept only where finite
    and > 0 (1 <= bits <= 0x7F7FFFFF) and unmasked. Branch-free loops over row slices, one per case, so that
    they vectorise (a loop with branches was 6x slower)."""
    nspec = f.shape[0]
    expo = np.uint32(0x7F800000)
    negz = np.uint32(0x80000000)
    zero = np.uint32(0)
    one = np.uint32(1)
    top = np.uint32(0x7F7FFFFF)
    for i in range(nspec):
        for r in range(runs.shape[0]):
            src, dst, n = runs[r, 0], runs[r, 1], runs[r, 2]
            fr, wr = f[i, src:src + n], iv[i, src:src + n]
            fo, wo = flux[i, dst:dst + n], den[i, dst:dst + n]
            if swap:
                for k in range(n):
                    x = fr[k]  # bytes reversed (numba widens shifts: the cast keeps 32 bits)
                    x = np.uint32(((x & np.uint32(0xFF)) << np.uint32(24)) | ((x & np.uint32(0xFF00)) << np.uint32(8))
                                  | ((x >> np.uint32(8)) & np.uint32(0xFF00)) | (x >> np.uint32(24)))
                    fo[k] = zero if ((x & expo) == expo) | (x == negz) else x
                    w = wr[k]
                    w = np.uint32(((w & np.uint32(0xFF)) << np.uint32(24)) | ((w & np.uint32(0xFF00)) << np.uint32(8))
                                  | ((w >> np.uint32(8)) & np.uint32(0xFF00)) | (w >> np.uint32(24)))
                    wo[k] = zero if (w - one) >= top else w
            else:
                for k in range(n):
                    x = fr[k]
                    fo[k] = zero if ((x & expo) == expo) | (x == negz) else x
                    w = wr[k]
                    wo[k] = zero if (w - one) >= top else w
            if has_mask:
                mr = m[i, src:src + n]
                for k in range(n):
                    wo[k] = zero if mr[k] != 0 else wo[k]


def _runs(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``(start_src, start_dst, length)`` rows of the maximal runs where both indices step by one."""
    if not src.size:
        return np.zeros((0, 3), np.int64)
    brk = np.flatnonzero((np.diff(src) != 1) | (np.diff(dst) != 1)) + 1
    starts = np.concatenate(([0], brk))
    lengths = np.diff(np.concatenate((starts, [src.size])))
    return np.stack([src[starts], dst[starts], lengths], axis=1).astype(np.int64)


def _bits(a: np.ndarray):
    """A float32 or integer array's words as native unsigned integers (a view, no copy) and whether their
    bytes need swapping, or None where the array is not one of those."""
    a = np.asarray(a)
    if a.ndim != 2 or not a.flags.c_contiguous or a.dtype.kind not in "fiub" \
            or (a.dtype.kind == "f" and a.dtype.itemsize != 4):
        return None
    swap = a.dtype.byteorder == (">" if sys.byteorder == "little" else "<")
    return a.view(f"u{a.dtype.itemsize}"), swap


def merge_arms_alone(fluxes, ivars, masks, places, alone, nwave):
    """The pixels that one arm alone sees (``alone[k]``: a boolean per pixel of arm ``k``), merged as
    :func:`redsift.io.desi.merge_arms` merges them (the arm's value, cleaned: non-finite flux -> 0,
    non-finite, non-positive or masked ivar -> 0), in one compiled pass per arm over the float32 values'
    bits: FITS's big-endian arrays are read where they lie (a view of the file) with no native-order copy,
    and masks of any integer type are tested for non-zero as they are. Returns ``flux, ivar`` (nspec, nwave)
    float32, **unset** at the pixels no arm sees alone (the caller writes them), or None where an array is not
    float32 (the numpy path takes it).

    The same bits as the numpy path (``tests/test_readers.py``): a DESI coadd of 500 spectra in ~8 ms
    against ~35 ms for the byte-swapping copies and the float pass."""
    views = [_bits(a) for a in (*fluxes, *ivars)]
    if any(v is None or v[0].dtype != np.uint32 for v in views):
        return None
    nspec = fluxes[0].shape[0]
    # every pixel of the union is seen by one arm (written here) or by several (written by the caller): no
    # zeroing pass over the ~31 MB of a 500-spectrum coadd
    flux = np.empty((nspec, nwave), np.float32)
    den = np.empty((nspec, nwave), np.float32)
    fb, db = flux.view(np.uint32), den.view(np.uint32)
    narm = len(fluxes)
    for k in range(narm):
        (f, sf), (iv, si) = views[k], views[narm + k]
        m = masks[k]
        mv = None
        if m is not None:  # integer or boolean words tested for non-zero as they lie; anything else as booleans
            mv = _bits(m) if np.asarray(m).dtype.kind in "iub" else None
            mv = mv if mv is not None else (np.ascontiguousarray(np.asarray(m) != 0).view(np.uint8), False)
        if sf != si:  # one arm's flux and ivar in different byte orders: rare, made alike
            iv = iv.byteswap()
        cols = np.flatnonzero(alone[k])
        runs = _runs(cols, np.asarray(places[k])[cols])
        _merge_runs(f, iv, mv[0] if mv is not None else np.zeros((1, 1), np.uint8), mv is not None, sf, runs,
                    fb, db)
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
