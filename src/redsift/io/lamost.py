"""LAMOST low-resolution (LRS) ``spec-*.fits[.gz]`` files, both layouts.

* old (DR1-DR7 style): the primary HDU is a 5-row image: flux, inverse
  variance, wavelength, AND mask, OR mask;
* new (DR8 on): HDU1 ``COADD`` is a one-row table with vector columns
  ``FLUX``, ``IVAR``, ``WAVELENGTH``, ``ANDMASK``, ``ORMASK``, ``NORMALIZATION``.

LAMOST headers state ``VACUUM = T`` for these products; a file saying
``VACUUM = F`` is converted to vacuum and flagged ``AIRTOVAC``. AND masks are
stored as floats; non-zero means bad. ``TARGETID`` is the LAMOST ``OBSID``.
The header's CLASS/SUBCLASS/Z are pipeline labels and are not read.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from ..spectra import Spectra
from ._util import getcol, header_value, numeric, safe_float, safe_int, scalar, to_vacuum
from .registry import FileInfo, register

__all__ = ["read_lamost"]


def _is_lamost(info: FileInfo) -> bool:
    hdr = info.header
    tel = str(hdr.get("TELESCOP", "")).upper()
    return "LAMOST" in tel or ("OBSID" in hdr and "LMJD" in hdr)


def _identify_old(info: FileInfo) -> bool:
    if info.kind != "fits" or not _is_lamost(info):
        return False
    h = info.header
    return h.get("NAXIS") == 2 and h.get("NAXIS2") in (3, 5)


def _identify_new(info: FileInfo) -> bool:
    if info.kind != "fits" or not _is_lamost(info) or not info.has_hdu(1):
        return False
    return {"FLUX", "IVAR", "WAVELENGTH"} <= set(info.columns(1))


def _meta(hdr, converted: bool) -> Table:
    # header values that cannot be parsed are unknown (-1, NaN): the spectrum is still read
    obsid = safe_int(scalar(hdr, "OBSID", default=-1))
    meta = {
        "TARGETID": np.array([obsid], np.int64),
        "SURVEY": ["lamost"],
        "INDEX": np.array([0], np.int64),
        "AIRTOVAC": [converted],
        "OBSID": np.array([obsid], np.int64),
        "RA": [safe_float(scalar(hdr, "RA", default=np.nan))],
        "DEC": [safe_float(scalar(hdr, "DEC", default=np.nan))],
    }
    for key in ("LMJD", "MJD", "SPID", "FIBERID"):
        if key in hdr:
            meta[key] = np.array([safe_int(hdr[key])], np.int64)
    planid = header_value(hdr, "PLANID")
    if planid is not None:
        meta["PLANID"] = [str(planid).strip()]
    return Table(meta)


def read_lamost(info: FileInfo) -> Spectra:
    hdr = info.header
    if _identify_new(info):
        t = info.hdul[1].data
        if t is None or len(t) == 0:
            raise ValueError("COADD table has no rows")
        if len(t) > 1:
            raise ValueError(f"COADD table has {len(t)} rows; a LAMOST file holds one spectrum")
        cols = [c.upper() for c in t.columns.names]
        dup = sorted({c for c in cols if cols.count(c) > 1} & {"FLUX", "IVAR", "WAVELENGTH", "ANDMASK"})
        if dup:
            raise ValueError(f"COADD table has duplicated columns {', '.join(dup)}")

        def vector(name, default=None):
            col = getcol(t, name, default=default)
            return numeric(np.asarray(col)[0] if np.ndim(col) else col, f"column {name}", ndim=1)

        flux, ivar, wave = vector("FLUX"), vector("IVAR"), vector("WAVELENGTH")
        andmask = vector("ANDMASK", default=np.zeros((1, flux.size)))
    else:
        img = numeric(info.hdul[0].data, "primary image", ndim=2)
        if img.shape[0] < 3:
            raise ValueError(f"primary image has {img.shape[0]} rows; expected flux, ivar, wavelength[, masks]")
        flux, ivar, wave = img[0], img[1], img[2]
        andmask = img[3] if img.shape[0] >= 4 else np.zeros(flux.size)
    if not flux.size == ivar.size == wave.size == andmask.size:
        raise ValueError(f"FLUX has {flux.size} pixels, IVAR {ivar.size}, WAVELENGTH {wave.size}, "
                         f"ANDMASK {andmask.size}")
    wave, converted = to_vacuum(np.asarray(wave, np.float64), hdr)
    return Spectra(wave, flux[None, :], ivar[None, :], (np.asarray(andmask) != 0)[None, :],
                   _meta(hdr, converted))


register("lamost-lrs-image", _identify_old, read_lamost, survey="lamost", priority=20,
         description="LAMOST LRS spec-*.fits[.gz], old layout (5-row primary image)")
register("lamost-lrs-coadd", _identify_new, read_lamost, survey="lamost", priority=20,
         description="LAMOST LRS spec-*.fits[.gz], new layout (COADD table)")
