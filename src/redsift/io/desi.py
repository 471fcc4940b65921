"""DESI ``coadd-*.fits`` and ``spectra-*.fits``.

Both hold, per camera arm ``B``, ``R``, ``Z``: ``{ARM}_WAVELENGTH`` (vacuum,
linear 0.8 A steps), ``{ARM}_FLUX`` and ``{ARM}_IVAR`` ``(nspec, npix_arm)``,
optionally ``{ARM}_MASK`` and ``{ARM}_RESOLUTION``, plus a ``FIBERMAP`` table
with one row per spectrum. The arms are merged onto the union of their
wavelength arrays with inverse-variance weighting where they overlap; masked
pixels (``MASK != 0``) carry no weight. Resolution data are not read.

Files without a FIBERMAP (e.g. QuasarNP's test coadd) are read too: their
rows get ``TARGETID = -1`` and are identified by ``SOURCE`` and ``INDEX``.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from ..spectra import MetaColumns, Spectra
from ._util import float_column, header_value, int_column, numeric, order_pixels
from .fastspec import StrictFits, _Fallback, read_strict
from .registry import FileInfo, register

__all__ = ["read_desi", "merge_arms"]

ARMS = ("B", "R", "Z")
_HEADER_META = (("SURVEY", "DESI_SURVEY"), ("PROGRAM", "PROGRAM"), ("HPXPIXEL", "HPXPIXEL"),
                ("TILEID", "TILEID"), ("SPGRP", "SPGRP"), ("NIGHT", "NIGHT"))


def _arms(info: FileInfo) -> list[str]:
    names = set(info.hdu_names())
    return [a for a in ARMS if {f"{a}_WAVELENGTH", f"{a}_FLUX", f"{a}_IVAR"} <= names]


def _identify(info: FileInfo) -> bool:
    # HDU1 of every DESI spectra/coadd layout is FIBERMAP or an arm; check it before listing all HDUs
    if info.kind != "fits" or not any(info.hdu_name(1).startswith(p) for p in ("FIBERMAP", "B_", "R_", "Z_")):
        return False
    return len(_arms(info)) > 0


def merge_arms(waves, fluxes, ivars, masks):
    """Merge camera arms onto the union of their wavelength arrays.

    Parameters
    ----------
    waves : list of (npix_arm,) arrays
    fluxes, ivars : list of (nspec, npix_arm) arrays (any byte order)
    masks : list of (nspec, npix_arm) arrays or None (non-zero = bad: DESI's integer bitmasks as they are,
        or booleans)

    Returns
    -------
    wave, flux, ivar, mask
        Where arms overlap, ``flux = sum(ivar f) / sum(ivar)`` and
        ``ivar = sum(ivar)``; where no arm has weight the plain mean flux is
        kept and the pixel is masked. Wavelengths within 1e-3 A of each other
        are taken to be the same pixel (DESI arms share one 0.8 A lattice).
    """
    allw = np.concatenate(waves)
    key = np.round(allw, 3)
    wave = np.unique(key)
    nspec = fluxes[0].shape[0]
    places = [np.searchsorted(wave, np.round(w, 3)) for w in waves]
    cnt = np.zeros(wave.size, np.int64)
    for idx in places:
        cnt[idx] += 1
    from .. import kernels

    merged = None
    if kernels.AVAILABLE and nspec * wave.size >= kernels.MIN_PIXELS:
        # the pixels one arm sees in one compiled pass per arm on the values' bits, FITS's big-endian arrays
        # read where they lie (redsift.kernels.merge_arms_alone; the same bits as below)
        merged = kernels.merge_arms_alone(fluxes, ivars, masks, places, [cnt[idx] == 1 for idx in places],
                                          wave.size)
    mask = None
    if merged is not None:
        flux, den, mask = merged
        general = cnt > 1
    else:
        # pixels seen by one arm: that arm's values as they are (what the weighted mean of one value gives,
        # exactly: float32 products and quotients are exact in float64); pixels seen by several: the mean
        flux = np.zeros((nspec, wave.size), np.float32)
        den = np.zeros((nspec, wave.size), np.float32)
        general = cnt > 1
        for idx, f, iv, m in zip(places, fluxes, ivars, masks):
            if not all(a.dtype.kind == "f" and a.dtype.itemsize == 4 for a in (f, iv)):
                general[idx] = True  # the exactness argument is for float32 values only (either byte order)
        for idx, f, iv, m in zip(places, fluxes, ivars, masks):
            cols = np.flatnonzero(~general[idx])
            if not cols.size:
                continue
            f, iv = _cleaned(f, iv, m, cols)
            dst = idx[cols]
            if dst[-1] - dst[0] + 1 == dst.size:  # one run: a slice, no scatter
                dst = slice(int(dst[0]), int(dst[-1]) + 1)
            flux[:, dst] = f + np.float32(0)  # + 0: -0.0 becomes +0.0, as the sum gives it
            den[:, dst] = iv
    shared = np.flatnonzero(general)
    if shared.size and merged is not None:  # float32 arms: the overlap's sums in one compiled pass per arm
        num, sw, raw = kernels.merge_overlap(fluxes, ivars, masks, places, shared, nspec)
    elif shared.size:
        num = np.zeros((nspec, shared.size))
        sw = np.zeros((nspec, shared.size))
        raw = np.zeros((nspec, shared.size))
        for idx, f, iv, m in zip(places, fluxes, ivars, masks):
            cols, jdx = kernels.overlap_columns(shared, idx)
            if not cols.size:
                continue
            f, iv = _cleaned(f, iv, m, cols)
            f64, iv64 = np.asarray(f, np.float64), np.asarray(iv, np.float64)
            num[:, jdx] += iv64 * f64
            sw[:, jdx] += iv64
            raw[:, jdx] += f64
    if shared.size:
        ok = sw > 0
        flux[:, shared] = np.where(ok, num / np.where(ok, sw, 1.0), raw / cnt[shared])
        den[:, shared] = sw
        if mask is not None:
            mask[:, shared] = ~(den[:, shared] > 0)
    return wave, flux, den, ~(den > 0) if mask is None else mask


def _cleaned(f, iv, m, cols):
    """Columns ``cols`` of one arm: flux with NaN and inf as 0, ivar with non-finite, non-positive or masked
    values as 0 (a slice where the columns are one run: no gather)."""
    if cols[-1] - cols[0] + 1 == cols.size:
        cols = slice(int(cols[0]), int(cols[-1]) + 1)
    f, iv = f[:, cols], iv[:, cols]
    with np.errstate(invalid="ignore"):
        iv = np.where(np.isfinite(iv) & (iv > 0), iv, iv.dtype.type(0))
    if m is not None:
        iv = np.where(m[:, cols] != 0, iv.dtype.type(0), iv)
    f = np.where(np.isfinite(f), f, f.dtype.type(0)) if f.dtype.kind == "f" else f
    return f, iv


class _Astropy:
    """The file as astropy opened it (the general path and the reference of the strict one)."""

    def __init__(self, info: FileInfo):
        self.info = info
        self.names = info.hdu_names()

    def arms(self) -> list[str]:
        return _arms(self.info)

    def image(self, name: str):
        return _image_data(self.info.hdul, name)

    def fibermap(self) -> dict:
        fmhdu = self.info.hdul["FIBERMAP"]
        if fmhdu.is_image or fmhdu.data is None:
            raise ValueError("FIBERMAP is not a table")
        cols = [c.upper() for c in fmhdu.columns.names]
        dupc = sorted({c for c in cols if cols.count(c) > 1} & {"TARGETID", "TARGET_RA", "TARGET_DEC"})
        if dupc:
            raise ValueError(f"FIBERMAP has duplicated columns {', '.join(dupc)}")
        table = Table(fmhdu.data)
        return {name: table[name] for name in table.colnames}

    def header_value(self, key: str):
        return header_value(self.info.header, key)


#: desispec's fibermask bits (``desispec.maskbits.fibermask``) that Redrock's DESI front end turns into ZWARN bits
FIBERMASK = {"UNASSIGNED": 0, "BROKENFIBER": 2, "BADPOSITION": 9, "POORPOSITION": 10, "BADAMPB": 22, "BADAMPR": 23,
             "BADAMPZ": 24}


def fibermap_zwarn(meta, nspec: int) -> np.ndarray:
    """The ZWARN bits a DESI FIBERMAP implies, as Redrock's DESI front end sets them (``redrock.external.desi``):
    ``SKY`` for ``OBJTYPE = SKY``; ``NODATA`` for ``OBJTYPE = BAD`` and for the fibre status bits BADPOSITION,
    BROKENFIBER and UNASSIGNED; ``UNPLUGGED`` for BROKENFIBER; ``POORDATA`` for POORPOSITION; ``LITTLE_COVERAGE`` for
    BADAMPB/R/Z (a camera's amplifier unusable). The status is ``COADD_FIBERSTATUS`` (coadds) or ``FIBERSTATUS``
    (spectra files); a column that is absent or not integer contributes nothing. A sky fibre answered as a galaxy
    with ``ZWARN = 0`` is what a catalog without these bits gives: pure noise is typed GALAXY by the default."""
    from ..zwarning import ZWarningMask as Z

    zw = np.zeros(nspec, np.int64)
    if "OBJTYPE" in meta:
        obj = np.char.upper(np.char.strip(np.asarray(meta["OBJTYPE"]).astype(str)))
        if obj.shape == (nspec,):
            zw |= np.where(obj == "SKY", int(Z.SKY), 0)
            zw |= np.where(obj == "BAD", int(Z.NODATA), 0)
    col = next((c for c in ("COADD_FIBERSTATUS", "FIBERSTATUS") if c in meta), None)
    if col is not None:
        st = np.asarray(meta[col])
        if st.shape == (nspec,) and st.dtype.kind in "iu":
            st = st.astype(np.int64)

            def has(*names):
                return (st & sum(1 << FIBERMASK[n] for n in names)) != 0

            zw |= np.where(has("BADPOSITION", "BROKENFIBER", "UNASSIGNED"), int(Z.NODATA), 0)
            zw |= np.where(has("BROKENFIBER"), int(Z.UNPLUGGED), 0)
            zw |= np.where(has("POORPOSITION"), int(Z.POORDATA), 0)
            zw |= np.where(has("BADAMPB", "BADAMPR", "BADAMPZ"), int(Z.LITTLE_COVERAGE), 0)
    return zw


def read_desi(info: FileInfo) -> Spectra:
    """Load a DESI coadd or spectra file (all arms merged)."""
    return _read(_Astropy(info))


def _read(src) -> Spectra:
    """The reader proper, on a file seen through ``src`` (:class:`_Astropy` or :class:`_Strict`)."""
    names = src.names
    dup = sorted({n for n in names if n and names.count(n) > 1})
    if dup:
        raise ValueError(f"HDUs {', '.join(dup)} appear more than once")
    arms = src.arms()
    waves, fluxes, ivars, masks = [], [], [], []
    for a in arms:
        w = numeric(src.image(f"{a}_WAVELENGTH"), f"{a}_WAVELENGTH", ndim=1)
        f = numeric(src.image(f"{a}_FLUX"), f"{a}_FLUX", ndim=(1, 2))
        iv = numeric(src.image(f"{a}_IVAR"), f"{a}_IVAR", ndim=(1, 2))
        f, iv = np.atleast_2d(f), np.atleast_2d(iv)
        if f.shape != iv.shape or f.shape[1] != w.size:
            raise ValueError(f"arm {a}: wavelength {w.shape}, flux {f.shape} and ivar {iv.shape} disagree")
        m = None
        if f"{a}_MASK" in names:
            m = np.atleast_2d(numeric(src.image(f"{a}_MASK"), f"{a}_MASK", ndim=(1, 2)))
            if m.dtype.kind == "f":  # integer bitmasks go to the merge as they are (non-zero = bad)
                m = m != 0
            if m.shape != f.shape:
                raise ValueError(f"arm {a}: mask {m.shape} and flux {f.shape} disagree")
        # each arm must be a proper grid before arms are merged (pixels closer than 1e-3 A would collapse)
        w, (f, iv, m) = order_pixels(w, (f, iv, m), f"{a}_WAVELENGTH")
        if np.any(np.diff(np.round(w, 3)) <= 0):
            raise ValueError(f"{a}_WAVELENGTH has pixels closer than 0.001 A")
        waves.append(w)
        fluxes.append(f)
        ivars.append(iv)
        masks.append(m)
    nspec = {f.shape[0] for f in fluxes}
    if len(nspec) != 1:
        raise ValueError(f"arms have different numbers of spectra: {sorted(nspec)}")
    nspec = nspec.pop()
    if nspec == 0:
        raise ValueError("the arms hold no spectra")
    wave, flux, ivar, mask = merge_arms(waves, fluxes, ivars, masks)

    if "FIBERMAP" in names:
        fm = src.fibermap()  # name -> column, in file order
        nrows = len(next(iter(fm.values()))) if fm else 0
        if nrows != nspec:
            raise ValueError(f"FIBERMAP has {nrows} rows for {nspec} spectra")
        keep = [c for c in fm if fm[c].ndim == 1]
        # the FIBERMAP's own columns, in file order (a Redrock-format FIBERMAP is rebuilt from them exactly);
        # its SURVEY-like names must not clash with redsift's core columns
        clash = ("SURVEY", "FORMAT", "SOURCE", "INDEX", "ZWARN", "ERROR", "AIRTOVAC")
        meta = MetaColumns({f"FM_{c}" if c in clash else c: fm[c] for c in keep}, {"FIBERMAP_COLUMNS": list(keep)})
        if "TARGET_RA" in meta and "TARGET_DEC" in meta:
            meta["RA"] = float_column(meta["TARGET_RA"], nspec)
            meta["DEC"] = float_column(meta["TARGET_DEC"], nspec)
        if "TARGETID" in meta:  # text or NaN ids become -1 rather than failing the file
            meta["TARGETID"] = int_column(meta["TARGETID"], nspec)
        zwarn = fibermap_zwarn(meta, nspec)
        if zwarn.any():
            meta["ZWARN"] = zwarn
    else:
        meta = MetaColumns({"TARGETID": np.full(nspec, -1, np.int64)})
    for key, col in _HEADER_META:
        value = src.header_value(key)
        if value is not None and col not in meta:
            meta[col] = np.array([value] * nspec)
    meta["SURVEY"] = np.full(nspec, "desi")
    meta["INDEX"] = np.arange(nspec, dtype=np.int64)
    return Spectra(wave, flux, ivar, mask, meta)


#: the primary-header cards the reader uses (duplicated: ambiguous, astropy decides)
_USED = tuple(k for k, _ in _HEADER_META)


class _Strict(StrictFits):
    """A DESI file read without astropy (:class:`redsift.io.fastspec.StrictFits`): the arm images are viewed
    where they lie in the file (the arm merge reads them there), the FIBERMAP's columns copied out."""

    def __init__(self, path: str):
        super().__init__(path, _USED)

    def arms(self) -> list[str]:
        if len(self.names) < 2 or not any(self.names[1].startswith(p) for p in ("FIBERMAP", "B_", "R_", "Z_")):
            raise _Fallback("not a DESI layout")
        names = set(self.names)
        arms = [a for a in ARMS if {f"{a}_WAVELENGTH", f"{a}_FLUX", f"{a}_IVAR"} <= names]
        if not arms:
            raise _Fallback("no arms")
        return arms

    def fibermap(self) -> dict:
        return self.table("FIBERMAP")


def read_desi_strict(path) -> Spectra | None:
    """A DESI coadd or spectra file through :class:`_Strict`, or ``None`` where astropy must read it."""
    return read_strict(_Strict, _read, path)


def _image_data(hdul, name: str):
    hdu = hdul[name]
    if not hdu.is_image or hdu.data is None:
        raise ValueError(f"{name} is {'empty' if hdu.is_image else 'a table'}, not an image")
    return hdu.data


register("desi-coadd", lambda i: _identify(i) and not i.name.startswith("spectra-"), read_desi,
         survey="desi", priority=10,
         description="DESI coadd-*.fits (B/R/Z arms merged; FIBERMAP in the metadata)")
register("desi-spectra", lambda i: _identify(i) and i.name.startswith("spectra-"), read_desi,
         survey="desi", priority=11,
         description="DESI spectra-*.fits (per-exposure spectra; same layout as coadds)")
