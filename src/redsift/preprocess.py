"""Preprocessing: rebinning onto model grids, normalisation, masking, S/N.

Everything here works on whole batches at once (no Python loop over spectra).

Two rebinning operations exist and are not interchangeable:

* :func:`rebin` — inverse-variance-weighted, *flux-conserving* resampling
  onto arbitrary bin edges: each native pixel contributes in proportion to its
  overlap (in Angstrom) with each new bin, as in SpectRes (Carnall 2017,
  arXiv:1705.05165) with ivar weights. The general-purpose operation.
* :func:`bin_quasarnet` — QuasarNET's own binning (Busca & Balland 2018,
  arXiv:1808.09955, sect. 2; as stored in desihub/QuasarNP): each native
  pixel goes whole into bin ``floor((loglam - loglam0) / dloglam)`` of a
  left-edge log grid; per bin the ivar-weighted mean flux and the summed ivar.
  Models trained with QuasarNET's preprocessing must use this one.

Normalisations: :func:`normalize_mean_rms` (QuasarNET: subtract the
ivar-weighted mean, divide by the ivar-weighted rms) and :func:`normalize_max`
(the SDSS 12-class CNN: divide by the maximum absolute flux).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import LogGrid, pixel_edges
from .spectra import Spectra
from .zwarning import ZWarningMask

__all__ = ["Binned", "BINNINGS", "to_grid", "rebin", "bin_quasarnet", "normalize_mean_rms", "normalize_max", "mask_sky_lines",
           "snr_median", "coverage", "coverage_zwarn", "SKY_LINES", "prepare"]

#: Bright night-sky emission lines (vacuum Angstrom): [OI] 5577, Na D, [OI] 6300/6364,
#: the OH bands' brightest lines and Hg I street-light lines. Air values from Osterbrock &
#: Martel (1992) and the SDSS skylines.dat list, converted to vacuum.
SKY_LINES = np.array([4047.7, 4359.6, 5462.3, 5578.9, 5891.6, 5897.6, 6302.0, 6365.5, 6865.0, 7246.0,
                      7278.2, 7316.3, 7342.9, 7371.5, 7794.1, 7823.9, 7860.0, 7966.2, 7995.6,
                      8346.9, 8401.5, 8432.7, 8467.5, 8829.6, 8888.2, 8921.6, 8945.8, 9378.0, 9442.4])


@dataclass
class Binned:
    """Spectra on a model grid: ``flux``, ``ivar`` ``(nspec, npix)`` float32 and the grid."""

    grid: LogGrid
    flux: np.ndarray
    ivar: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.ivar <= 0


def _native_edges(spectra: Spectra) -> np.ndarray:
    return pixel_edges(spectra.wave)


def rebin(spectra: Spectra, edges, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Ivar-weighted flux-conserving rebin onto new bin ``edges`` (Angstrom).

    For new bin ``j`` and native pixel ``i`` overlapping it by ``w_ij``
    Angstrom::

        flux_j = sum_i w_ij ivar_i flux_i / sum_i w_ij ivar_i
        ivar_j = (sum_i w_ij ivar_i)**2 / sum_i w_ij**2 ivar_i

    With uniform ivar this is exactly SpectRes' flux and error propagation;
    the integral of flux over a fully covered range is conserved. Masked or
    zero-ivar pixels carry no weight; bins without weight get flux 0, ivar 0.

    Parameters
    ----------
    spectra : Spectra
        Shared or per-spectrum wavelengths; no loop over spectra is made.
    edges : array (nbin + 1,) or LogGrid
    chunk : int
        Spectra processed at once (bounds memory).

    Returns
    -------
    flux, ivar : float32 arrays (nspec, nbin)
    """
    if isinstance(edges, LogGrid):
        edges = edges.edges
    edges = np.asarray(edges, np.float64)
    nbin = edges.size - 1
    flux_out = np.zeros((spectra.nspec, nbin), np.float32)
    ivar_out = np.zeros((spectra.nspec, nbin), np.float32)
    native = _native_edges(spectra)
    if native.ndim == 1:
        # shared wavelengths: one sparse overlap matrix serves the whole batch
        W = _overlap_matrix(native, edges)
        from . import kernels

        if kernels.AVAILABLE and spectra.flux.size >= kernels.MIN_PIXELS and W.has_canonical_format:
            return kernels.rebin_shared(spectra.flux, spectra.ivar, spectra.mask, W)  # one pass, the same bits
        W2 = W.multiply(W)
        for start in range(0, spectra.nspec, chunk):
            sl = slice(start, start + chunk)
            w = spectra.weights[sl].astype(np.float64)
            sw = (W @ w.T).T
            swf = (W @ (w * spectra.flux[sl]).T).T
            sw2 = (W2 @ w.T).T
            good = sw > 0
            flux_out[sl] = np.where(good, swf / np.where(good, sw, 1.0), 0.0)
            ivar_out[sl] = np.where(good, sw**2 / np.where(good, sw2, 1.0), 0.0)
        return flux_out, ivar_out
    for start in range(0, spectra.nspec, chunk):
        sl = slice(start, start + chunk)
        e = native if native.ndim == 1 else native[sl]
        f, iv = _rebin_block(e, spectra.flux[sl], spectra.weights[sl], edges)
        flux_out[sl], ivar_out[sl] = f, iv
    return flux_out, ivar_out


def _overlaps(lo, hi, edges):
    """(native pixel, new bin, overlap in A) for every overlapping pair."""
    nbin = edges.size - 1
    a = np.clip(np.searchsorted(edges, lo, side="right") - 1, 0, nbin - 1)
    b = np.clip(np.searchsorted(edges, hi, side="left") - 1, 0, nbin - 1)
    inside = (hi > edges[0]) & (lo < edges[-1])
    counts = np.where(inside, b - a + 1, 0)
    pix = np.repeat(np.arange(lo.size), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    bins = a[pix] + (np.arange(pix.size) - first)
    overlap = np.minimum(hi[pix], edges[bins + 1]) - np.maximum(lo[pix], edges[bins])
    return pix, bins, np.maximum(overlap, 0.0)


def _overlap_matrix(native_edges, edges):
    from scipy import sparse

    pix, bins, overlap = _overlaps(native_edges[:-1], native_edges[1:], edges)
    return sparse.csr_matrix((overlap, (bins, pix)), shape=(edges.size - 1, native_edges.size - 1))


def _rebin_block(native_edges, flux, weight, edges):
    nspec, npix = flux.shape
    nbin = edges.size - 1
    lo = np.broadcast_to(native_edges[..., :-1], (nspec, npix)).ravel()
    hi = np.broadcast_to(native_edges[..., 1:], (nspec, npix)).ravel()
    pix, bins, overlap = _overlaps(lo, hi, edges)
    w = weight.ravel().astype(np.float64)[pix]
    fx = flux.ravel().astype(np.float64)[pix]
    target = (pix // npix) * nbin + bins
    size = nspec * nbin
    sw = np.bincount(target, overlap * w, size)
    swf = np.bincount(target, overlap * w * fx, size)
    sw2 = np.bincount(target, overlap**2 * w, size)
    good = sw > 0
    fl = np.where(good, swf / np.where(good, sw, 1.0), 0.0)
    iv = np.where(good, sw**2 / np.where(good, sw2, 1.0), 0.0)
    return fl.reshape(nspec, nbin).astype(np.float32), iv.reshape(nspec, nbin).astype(np.float32)


def bin_quasarnet(spectra: Spectra, grid: LogGrid | None = None) -> Binned:
    """QuasarNET's binning (see the module docstring); reproduces QuasarNP to float precision.

    Each native pixel with ``ivar * (mask == 0)`` goes to bin
    ``floor((log10(wave) - grid.loglam0) / grid.dloglam)``; pixels outside
    the grid are dropped. Per bin: ``ivar = sum ivar_i`` and
    ``flux = sum ivar_i flux_i / sum ivar_i`` (0 where the bin has no weight).
    """
    grid = grid or LogGrid.quasarnet()
    if grid.reference != "left":
        raise ValueError("bin_quasarnet needs a left-edge grid (LogGrid.reference == 'left')")
    nspec, npix = spectra.flux.shape
    loglam = np.log10(spectra.wave)
    idx = np.floor((loglam - grid.loglam0) / grid.dloglam).astype(np.int64)
    if idx.ndim == 1 and nspec and np.all(np.diff(idx) >= 0):
        from . import kernels

        # one compiled pass per spectrum, the same bits (redsift.kernels.bin_shared); small batches: the product
        if kernels.AVAILABLE and spectra.flux.size >= kernels.MIN_PIXELS:
            return Binned(grid, *kernels.bin_shared(spectra.flux, spectra.ivar, spectra.mask, idx, grid.npix))
        return _bin_runs(spectra, grid, idx)
    idx = np.broadcast_to(idx, (nspec, npix))
    w = spectra.weights.astype(np.float64)
    ok = (idx >= 0) & (idx < grid.npix) & (w > 0)
    rows = np.broadcast_to(np.arange(nspec)[:, None], (nspec, npix))
    target = (rows * grid.npix + idx)[ok]
    size = nspec * grid.npix
    sw = np.bincount(target, w[ok], size)
    swf = np.bincount(target, (w * spectra.flux)[ok], size)
    good = sw > 0
    flux = np.where(good, swf / np.where(good, sw, 1.0), 0.0)
    return Binned(grid, flux.reshape(nspec, grid.npix).astype(np.float32),
                  sw.reshape(nspec, grid.npix).astype(np.float32))


def _bin_runs(spectra: Spectra, grid: LogGrid, idx: np.ndarray) -> Binned:
    """:func:`bin_quasarnet` for spectra sharing one wavelength array: one sparse product.

    The binning is ``S = W @ B`` with ``B`` the (pixels x bins) 0/1 matrix of ``idx``: SciPy's CSR
    product walks each bin's pixels in column order and adds ``1.0 * w`` for every spectrum at once, the
    additions of the general path's ``bincount`` in the same order, so the same bits (checked on the real
    BOSS files in ``tests/test_preprocess.py``); a spPlate or a DESI coadd in two compiled passes.
    """
    import scipy.sparse as sparse

    nspec = spectra.nspec
    cols = np.flatnonzero((idx >= 0) & (idx < grid.npix))
    flux = np.zeros((nspec, grid.npix))
    sw = np.zeros((nspec, grid.npix))
    if cols.size:
        sl = slice(int(cols[0]), int(cols[-1]) + 1)
        bins = idx[sl]
        # bins x pixels: one entry per pixel (column), made row-major with each row's pixels in order
        onehot = sparse.csc_matrix((np.ones(bins.size), bins, np.arange(bins.size + 1)),
                                   shape=(grid.npix, bins.size)).tocsr()
        onehot.sort_indices()
        w = spectra.weights[:, sl].astype(np.float64)
        wf = np.where(w > 0, w * spectra.flux[:, sl], 0.0)
        sw = np.asarray(onehot @ np.ascontiguousarray(w.T)).T
        swf = np.asarray(onehot @ np.ascontiguousarray(wf.T)).T
        good = sw > 0
        flux = np.where(good, swf / np.where(good, sw, 1.0), 0.0)
    return Binned(grid, flux.astype(np.float32), sw.astype(np.float32))


#: The ways spectra are put on a model grid (:func:`to_grid`), as recorded in datasets and model configs.
BINNINGS = ("quasarnet", "flux_conserving", "native")


def to_grid(spectra: Spectra, grid: LogGrid, binning: str = "quasarnet") -> Binned:
    """Put a batch on a model grid: the one entry point of prepare, ingest, simulate and predict.

    Parameters
    ----------
    binning : {"quasarnet", "flux_conserving", "native"}
        ``"quasarnet"``: :func:`bin_quasarnet` (each native pixel whole into one bin; the inputs
        QuasarNET and QuasarNP see); ``"flux_conserving"``: :func:`rebin` (SpectRes-like overlap
        weights); ``"native"``: the spectra already share ``grid``'s pixels (a simulator writing its
        instrument's own grid) and are taken as they are, masked pixels with zero ivar.
    """
    if binning == "quasarnet":
        return bin_quasarnet(spectra, grid)
    if binning == "flux_conserving":
        flux, ivar = rebin(spectra, grid)
        return Binned(grid, flux, ivar)
    if binning == "native":
        if spectra.npix != grid.npix:
            raise ValueError(f"native binning needs spectra on the grid itself ({spectra.npix} px, grid {grid.npix})")
        return Binned(grid, spectra.flux.astype(np.float32), spectra.weights.astype(np.float32))
    raise ValueError(f"unknown binning {binning!r}; choose from {', '.join(BINNINGS)}")


def normalize_mean_rms(flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """QuasarNET's renormalisation: ``(flux - <flux>) / rms`` with ivar-weighted moments.

    ``<flux> = sum(ivar f) / sum(ivar)`` and
    ``rms**2 = sum(ivar (f - <f>)**2) / sum(ivar)``; every pixel is shifted
    and scaled (zero-weight pixels too, as in QuasarNET). Spectra without
    weight or with zero rms are returned as zeros.
    """
    from . import kernels

    if np.ndim(flux) == 2 and np.shape(flux) == np.shape(ivar) and kernels.wanted(np.size(flux)):
        return kernels.normalize_mean_rms(flux, ivar)  # one compiled pass per row, the same bits
    flux = np.asarray(flux, np.float64)
    ivar = np.asarray(ivar, np.float64)
    sw = ivar.sum(axis=1, keepdims=True)
    ok = sw > 0
    safe = np.where(ok, sw, 1.0)
    mean = (ivar * flux).sum(axis=1, keepdims=True) / safe
    rms = np.sqrt((ivar * (flux - mean) ** 2).sum(axis=1, keepdims=True) / safe)
    ok &= rms > 0
    out = np.where(ok, (flux - mean) / np.where(ok, rms, 1.0), 0.0)
    return out.astype(np.float32)


def normalize_max(flux: np.ndarray, ivar: np.ndarray | None = None) -> np.ndarray:
    """Divide each spectrum by its largest absolute flux over valid pixels (SDSS 12-class CNN)."""
    flux = np.asarray(flux, np.float64)
    valid = np.ones_like(flux, bool) if ivar is None else np.asarray(ivar) > 0
    peak = np.max(np.where(valid, np.abs(flux), 0.0), axis=1, keepdims=True)
    return np.where(peak > 0, flux / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)


def mask_sky_lines(spectra: Spectra, lines=SKY_LINES, half_width: float = 5.0) -> Spectra:
    """Mask pixels within ``half_width`` Angstrom of bright sky lines (in place; returns the batch)."""
    lines = np.asarray(lines, np.float64)
    wave = np.broadcast_to(spectra.wave, spectra.flux.shape) if not spectra.shared_wave else spectra.wave
    pos = np.searchsorted(lines, wave)
    left = np.abs(wave - lines[np.clip(pos - 1, 0, lines.size - 1)])
    right = np.abs(wave - lines[np.clip(pos, 0, lines.size - 1)])
    near = np.minimum(left, right) <= half_width
    spectra.mask |= np.broadcast_to(near, spectra.mask.shape)
    return spectra


def snr_median(flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """Median of ``flux * sqrt(ivar)`` over pixels with ``ivar > 0`` (SDSS ``SN_MEDIAN_ALL``).

    Spectra without valid pixels get NaN.
    """
    from . import kernels

    if np.ndim(flux) == 2 and kernels.wanted(np.size(flux)):
        return kernels.snr_median(flux, ivar)  # one compiled pass per row, the same bits
    flux = np.asarray(flux, np.float64)
    ivar = np.asarray(ivar, np.float64)
    good = ivar > 0
    # the median of the valid pixels, as np.nanmedian but without its per-call overhead (one sort per
    # batch, NaN sorted last): prediction calls this once per file
    s = np.sort(np.where(good, flux * np.sqrt(np.where(good, ivar, 0.0)), np.nan), axis=1)
    n = good.sum(axis=1)
    rows = np.arange(flux.shape[0])
    lo, hi = s[rows, np.maximum(n - 1, 0) // 2], s[rows, np.maximum(n, 1) // 2 - (n == 0)]
    return np.where(n > 0, 0.5 * (lo + hi), np.nan)


def spectra_snr(spectra, rows: int = 256) -> np.ndarray:
    """:func:`snr_median` of a :class:`~redsift.spectra.Spectra`'s unmasked pixels, ``rows`` spectra at a time
    (the same values as ``snr_median(spectra.flux, spectra.weights)``, without the whole batch's masked copy
    of ivar: 18.5 MB for a 1,000-fibre spPlate, most of a file's transient in ``redsift ingest``)."""
    out = np.empty(spectra.nspec)
    for a in range(0, spectra.nspec, rows):
        sl = slice(a, a + rows)
        out[sl] = snr_median(spectra.flux[sl], np.where(spectra.mask[sl], np.float32(0), spectra.ivar[sl]))
    return out


def coverage(ivar: np.ndarray) -> np.ndarray:
    """Fraction of a model grid's pixels with ``ivar > 0``, per spectrum."""
    return (np.asarray(ivar) > 0).mean(axis=1)


def coverage_zwarn(ivar: np.ndarray, min_coverage: float = 0.5) -> np.ndarray:
    """ZWARN bits from coverage on a model grid: NODATA (no pixel) or LITTLE_COVERAGE."""
    cov = coverage(ivar)
    z = np.zeros(cov.size, np.int64)
    z[cov < min_coverage] |= int(ZWarningMask.LITTLE_COVERAGE)
    z[cov == 0] |= int(ZWarningMask.NODATA)
    return z


def prepare(spectra: Spectra, grid: LogGrid | None = None, mode: str = "quasarnet",
            min_coverage: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model inputs and input ZWARN bits for a batch.

    Parameters
    ----------
    mode : {"quasarnet", "flux_conserving"}
        ``"quasarnet"``: :func:`bin_quasarnet` then :func:`normalize_mean_rms`
        (the inputs QuasarNET and QuasarNP see); ``"flux_conserving"``:
        :func:`rebin` then :func:`normalize_mean_rms`.

    Returns
    -------
    X : float32 (nspec, npix)   normalised flux
    ivar : float32 (nspec, npix) ivar on the grid (before normalisation)
    zwarn : int64 (nspec,)      the batch's input bits OR coverage bits
    """
    if mode not in ("quasarnet", "flux_conserving"):
        raise ValueError(f"unknown preprocessing mode {mode!r}")
    b = to_grid(spectra, grid or LogGrid.quasarnet(), mode)
    flux, ivar = b.flux, b.ivar
    X = normalize_mean_rms(flux, ivar)
    zwarn = np.asarray(spectra.column("ZWARN"), np.int64) | coverage_zwarn(ivar, min_coverage)
    return X, ivar, zwarn
