"""SDSS DR1-DR7 ``spSpec-MJD-PLATE-FIBER.fit`` files (SDSS-I/II, spectro1d).

Data model (DR7): http://classic.sdss.org/dr7/dm/flatFiles/spSpec.html ("1D Spectro
Image"), with the reading notes at http://classic.sdss.org/dr7/products/spectra/read_spSpec.html.
One object per file:

* HDU0 is a float32 image, ``NAXIS1 = npix`` by ``NAXIS2 = 4`` rows: row 0 the flux
  (1e-17 erg/s/cm^2/A), row 1 the continuum-subtracted flux, row 2 the noise
  (standard deviation in flux units; 0 where the pixel is bad), row 3 the pixel mask.
  The data model shows ``NAXIS2 = 4``. astropy/specutils' ``spSpec_identify``, written
  against the served DR7 file ``1d_26/0273/1d/spSpec-51957-0273-016.fit``, asks for 5
  rows instead, so both 4 and 5 are accepted here; rows past 3 are never read.
* The wavelength grid is log-linear: ``log10(lambda_i) = COEFF0 + COEFF1 * i``
  (``i`` from 0). The reading notes say "Remember that these are vacuum
  wavelengths"; the pipeline's heliocentric correction (``HELIO_RV``) is already
  applied. Headers that copy spPlate's ``VACUUM`` card are honoured as in
  :mod:`redsift.io.sdss` (``VACUUM = F`` would be converted and flagged ``AIRTOVAC``).
* Ids are header cards: ``PLATEID``, ``MJD``, ``FIBERID``; the object's position is
  ``RAOBJ``/``DECOBJ`` (degrees). ``RA``/``DEC`` in these headers are the *telescope
  boresight* ("1st row - Right ascension of telescope boresight"), i.e. the plate
  centre, and are never used as the object's position.
* HDUs 1-6 are binary tables from spectro1d: lines used for the emission-line
  redshift, all line fits, emission-line redshifts, cross-correlation redshifts,
  line indices, and extra mask/resolution information. None is read.

The header also carries spectro1d's own answer (``Z``, ``Z_ERR``, ``Z_CONF``,
``Z_STATUS``, ``Z_WARNIN``, ``SPEC_CLN``, ...). Those are pipeline labels: they are
never read, not even into ``meta``.

Pixel mask (row 3). The bits are the spectro pixel mask of the SDSS pipeline
(``SP_MASK_*``; bits 0-28 as listed at
https://www.sdss3.org/dr8/algorithms/bitmask_sppixmask.php: NOPLUG 0 ... FULLREJECT 18,
NOSKY 22, BRIGHTSKY 23, NODATA 24, COMBINEREJ 25, ... REDMONSTER 28) plus one bit
that spectro1d adds, ``SP_MASK_EMLINE = 0x40000000`` (bit 30, "Emission line detected
here"; from the SP_MASK list carried by DR7-era spSpec readers, no SDSS page for it was
found). EMLINE marks where the object's own emission lines are, not a defect:
a pixel is bad when any *other* bit is set, i.e. ``(mask & ~EMLINE) != 0``. This is
the spSpec analogue of ``AND_MASK != 0`` used for the DR8+ spec files (QuasarNET's
``ivar * (AND_MASK == 0)``), without hiding emission lines from the model. The mask
is stored in the float32 image; it is rounded to an integer before the bit test.

Inverse variance is ``1 / err**2`` where ``err > 0`` and 0 where ``err == 0`` (or
negative); a NaN error gives a NaN ivar, which the :class:`~redsift.spectra.Spectra`
constructor masks and flags ``BAD_VALUES``.

These files look like spPlate files to :func:`redsift.io.sdss._identify_spplate`
(2-D image with ``COEFF0``/``COEFF1``/``PLATEID`` and a table in HDU5), so this
reader is registered with a higher priority and identifies them first; an spPlate
(no ``FIBERID`` card, image HDUs 1-4) is never taken for an spSpec, whatever its
number of fibers.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from ..spectra import Spectra, sdss_targetid
from ._util import scalar, to_vacuum
from .registry import FileInfo, register
from .sdss import snap_loglam

__all__ = ["SPSPEC_ROWS", "SP_MASK_EMLINE", "read_spspec", "spspec_bad_pixels"]

#: Rows of the HDU0 image: 4 in the DR7 data model, 5 in the files served for DR7.
SPSPEC_ROWS = (4, 5)

#: spectro1d's "emission line detected here" bit: information, not a defect.
SP_MASK_EMLINE = 0x40000000

_REQUIRED_KEYS = ("COEFF0", "COEFF1", "PLATEID", "MJD", "FIBERID")


def spspec_bad_pixels(mask_row) -> np.ndarray:
    """Bad-pixel flags from an spSpec mask row: any SP_MASK bit other than EMLINE set."""
    m = np.asarray(mask_row, dtype=np.float64)
    m = np.where(np.isfinite(m), np.rint(m), 0).astype(np.int64)
    return (m & ~np.int64(SP_MASK_EMLINE)) != 0


def _identify_spspec(info: FileInfo) -> bool:
    """Header cards of HDU0 plus the type of HDU1 only: no data is read."""
    if info.kind != "fits":
        return False
    h = info.header
    if h.get("NAXIS") != 2 or h.get("NAXIS2") not in SPSPEC_ROWS or not h.get("NAXIS1"):
        return False
    if any(k not in h for k in _REQUIRED_KEYS):
        return False
    if "LAMOST" in str(h.get("TELESCOP", "")).upper():
        return False
    # spPlate: HDU1 is the inverse-variance image; spSpec: HDU1 is spectro1d's line table.
    return not info.has_hdu(1) or info.hdul[1].is_image is False


def read_spspec(info: FileInfo) -> Spectra:
    """Load the one spectrum of an SDSS-I/II spSpec file."""
    hdr = info.header
    missing = [k for k in _REQUIRED_KEYS if k not in hdr]
    if missing:
        raise ValueError(f"spSpec header lacks {', '.join(missing)}")
    img = info.hdul[0].data
    if img is None or img.ndim != 2 or img.shape[0] < 4:
        raise ValueError(f"HDU0 should be a (4, npix) image, got {None if img is None else img.shape}")
    img = np.asarray(img)
    npix = img.shape[1]
    coeff0, coeff1 = float(hdr["COEFF0"]), float(hdr["COEFF1"])
    if not (np.isfinite(coeff0) and np.isfinite(coeff1) and coeff1 > 0):
        raise ValueError(f"bad wavelength solution COEFF0={coeff0}, COEFF1={coeff1}")
    loglam = snap_loglam(coeff0 + coeff1 * np.arange(npix))
    wave, converted = to_vacuum(10.0 ** loglam, hdr)

    flux = img[0].astype(np.float32)
    err = img[2].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ivar = np.where(err > 0, 1.0 / err**2, np.where(np.isnan(err), np.nan, 0.0)).astype(np.float32)
    mask = spspec_bad_pixels(img[3])

    plate = int(hdr["PLATEID"])
    mjd = int(hdr["MJD"])
    fiber = int(hdr["FIBERID"])
    meta = Table({
        "TARGETID": sdss_targetid([plate], [mjd], [fiber]),
        "SURVEY": ["sdss"],
        "INDEX": np.array([0], np.int64),
        "AIRTOVAC": [converted],
        "PLATE": np.array([plate], np.int64),
        "MJD": np.array([mjd], np.int64),
        "FIBERID": np.array([fiber], np.int64),
        # RA/DEC cards are the telescope boresight: the object is RAOBJ/DECOBJ
        "RA": [float(scalar(hdr, "RAOBJ", "PLUG_RA", default=np.nan))],
        "DEC": [float(scalar(hdr, "DECOBJ", "PLUG_DEC", default=np.nan))],
    })
    return Spectra(wave, flux[None, :], ivar[None, :], mask[None, :], meta)


register("sdss-spspec", _identify_spspec, read_spspec, survey="sdss", priority=15,
         description="SDSS-I/II DR1-DR7 spSpec-MJD-PLATE-FIBER.fit (one spectrum, 4-row HDU0 image)")
