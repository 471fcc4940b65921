"""Readers for labelled catalogs: SDSS quasar catalogs, spAll, DESI redrock/zcatalog files.

:func:`read_catalog` detects the kind of catalog and returns a table in
redsift's label convention, one row per catalog row, with the original row
number in ``ROW``:

=============  ======================================================================
``TARGETID``   int64; for SDSS ``PLATE*1e9 + MJD*1e4 + FIBERID`` (as spectra get)
``THING_ID``   SDSS object id (-1 if absent): splits keep one object on one side
``PLATE``, ``MJD``, ``FIBERID``, ``RA``, ``DEC``   when present
``CLASS``      ``STAR``, ``GALAXY``, ``QSO`` or ``UNKNOWN``
``SUBCLASS``   e.g. ``BAL``, ``BROADLINE``, ``K5`` ('' if none)
``Z``          best redshift (visual when the catalog has one)
``Z_CONF``     confidence 0-3 (visual inspection), -1 if unknown
``BAL_FLAG``   1 BAL, 0 not BAL, -1 unknown
``BI_CIV``     balnicity index of CIV in km/s (NaN if unknown)
``LABEL_SOURCE``  ``visual`` or ``pipeline``
=============  ======================================================================

Mappings (DR12Q, Paris et al. 2017, sect. 3): ``CLASS_PERSON`` 1 STAR, 3 QSO,
4 GALAXY, 30 QSO with BAL_FLAG 1, 50 QSO (blazar), 0 UNKNOWN (not inspected);
``Z_VI``/``Z_CONF_PERSON``/``BAL_FLAG_VI``/``BI_CIV``. DR16Q (Lyke et al. 2020):
``Z``, ``Z_CONF``, ``BI_CIV`` (BAL_FLAG = ``BI_CIV > 0``); DR14Q (Paris et al.
2018): quasars only, ``Z``. spAll: the pipeline's ``CLASS``/``SUBCLASS``/``Z``,
``Z_CONF`` 3 when ``ZWARNING == 0`` else 0. DESI: ``SPECTYPE``/``SUBTYPE``/``Z``,
``Z_CONF`` 3 when ``ZWARN == 0`` else 0.
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
from astropy.table import Table

from ..errors import CatalogError, SpectrumFileError, oneline
from ..spectra import sdss_targetid

__all__ = ["read_catalog", "CATALOG_KINDS", "CLASS_PERSON"]

log = logging.getLogger(__name__)

CLASS_PERSON = {0: ("UNKNOWN", ""), 1: ("STAR", ""), 3: ("QSO", ""), 4: ("GALAXY", ""),
                30: ("QSO", "BAL"), 50: ("QSO", "BLAZAR")}
CATALOG_KINDS = ("dr12q-superset", "dr16q", "dr14q", "spall", "desi-redrock", "desi-zcatalog",
                 "desi-qso-catalog", "labels-table")
_CLASS_NAMES = {"STAR": "STAR", "GALAXY": "GALAXY", "QSO": "QSO", "QSO_BAL": "QSO", "CV": "STAR",
                "UNKNOWN": "UNKNOWN", "": "UNKNOWN"}


#: every column name the catalog readers look at (upper case); duplicates among the others do not matter
_USED = {"PLATE", "MJD", "FIBERID", "FIBER", "TARGETID", "THING_ID", "RA", "DEC", "TARGET_RA", "TARGET_DEC",
         "PLUG_RA", "PLUG_DEC", "CLASS", "CLS", "SUBCLASS", "SPECTYPE", "SUBTYPE", "Z", "Z_CONF", "ZWARN",
         "ZWARNING", "CLASS_PERSON", "Z_VI", "Z_CONF_PERSON", "BAL_FLAG_VI", "BI_CIV", "BAL_PROB", "IS_QSO_FINAL",
         "SOURCE_Z", "Z_QN"}


def _cols(t: Table) -> dict[str, str]:
    return {c.upper(): c for c in t.colnames}


def _kind(t: Table, extname: str) -> str:
    c = set(_cols(t))
    if extname == "REDSHIFTS" and {"TARGETID", "Z", "SPECTYPE"} <= c:
        return "desi-redrock"
    if "CLASS_PERSON" in c and "Z_CONF_PERSON" in c:
        return "dr12q-superset"
    if {"Z", "Z_CONF"} <= c and ({"BAL_PROB", "IS_QSO_FINAL"} & c):
        return "dr16q"
    if {"THING_ID", "PLATE", "MJD", "FIBERID", "Z"} <= c and "SOURCE_Z" in c:
        return "dr14q"
    if {"PLATE", "MJD", "FIBERID", "CLASS", "Z", "ZWARNING"} <= c:
        return "spall"
    if extname == "QSO_CAT" or ({"TARGETID", "Z"} <= c and "Z_QN" in c):
        return "desi-qso-catalog"
    if {"TARGETID", "Z", "SPECTYPE"} <= c:
        return "desi-zcatalog"
    has_id = "TARGETID" in c or {"PLATE", "MJD"} <= c and ("FIBERID" in c or "FIBER" in c)
    has_label = ("CLASS" in c or "CLS" in c or "SPECTYPE" in c) and "Z" in c
    if has_id and has_label:
        return "labels-table"
    raise ValueError(f"columns match no known catalog kind ({', '.join(sorted(c)[:12])}, ...)")


def _open_table(path: str) -> tuple[Table, str]:
    if path.lower().endswith((".csv", ".ecsv", ".txt", ".dat")):
        from astropy.io import ascii

        return Table(ascii.read(path, guess=True)), ""
    import io

    from astropy.io import fits

    from .registry import _gunzip, _scan_fits

    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
        source = io.BytesIO(_gunzip(path)) if gz else path  # checked: astropy accepts a cut gzip stream
        fault = _scan_fits(source if gz else f)  # values that would make astropy loop for ever
    if fault:
        raise ValueError(f"corrupt FITS header ({fault})")
    if gz:
        source.seek(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(source, memmap=False) as hdul:
            names = [h.name.upper() for h in hdul]
            found = None
            for name in ("REDSHIFTS", "ZCATALOG", "QSO_CAT", "CATALOG"):
                if name in names:
                    found = Table(hdul[name].data), name
                    break
            if found is None:
                for hdu in hdul:
                    if getattr(hdu, "columns", None) is not None and hdu.data is not None:
                        found = Table(hdu.data), hdu.name.upper()
                        break
    for w in caught:  # astropy only warns when the data it read ran past the end of the file
        if "truncated" in str(w.message).lower():
            raise ValueError(f"truncated FITS file ({' '.join(str(w.message).split())[:150]})")
    if found is None:
        raise ValueError("no table HDU")
    return found


def read_catalog(path, kind: str | None = None) -> Table:
    """Read a labelled catalog into redsift's label convention (see module docstring).

    Raises
    ------
    CatalogError
        One line naming the file and the cause (missing file, not a table,
        no known kind, missing columns).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CatalogError(path, "no such file")
    if not os.path.isfile(path):
        raise CatalogError(path, "not a regular file")
    try:
        t, extname = _open_table(path)
    except SpectrumFileError as exc:  # a damaged gzip stream, said by the registry
        raise CatalogError(path, f"not a readable catalog ({exc.cause})") from None
    except Exception as exc:
        from ._util import reader_message

        problem = None if path.lower().endswith((".csv", ".ecsv", ".txt", ".dat")) else _fits_problem(path)
        cause = f"corrupt FITS header ({problem})" if problem else reader_message(exc)
        raise CatalogError(path, f"not a readable catalog ({cause})") from None
    try:
        cols = [c.upper() for c in t.colnames]
        dup = sorted({c for c in cols if cols.count(c) > 1} & _USED)
        if dup:
            raise ValueError(f"duplicated columns {', '.join(dup)} (names differ only in case)")
        kind = kind or _kind(t, extname)
        if kind not in CATALOG_KINDS:
            raise ValueError(f"unknown catalog kind {kind!r}; known: {', '.join(CATALOG_KINDS)}")
        out = _standardise(t, kind)
    except (KeyError, ValueError) as exc:
        raise CatalogError(path, " ".join(str(exc).strip("'\"").split())) from None
    except Exception as exc:  # numpy/astropy on a column of an unexpected type: name it
        raise CatalogError(path, f"unusable columns ({type(exc).__name__}: {oneline(exc)})") from None
    out.meta["CATALOG"] = kind
    out.meta["SOURCE"] = path
    return out


def _fits_problem(path):
    from .registry import fits_problem

    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            from .registry import _gunzip

            return fits_problem(_gunzip(path))
        return fits_problem(path)
    except Exception:  # diagnosing must not raise: the reader's own message is used instead
        return None


def _get(t, cm, name, default=None, dtype=None):
    """Column ``name`` (upper case) as ``dtype``; a value that cannot be converted (NaN or text in an
    integer column, text in a float column) becomes -1 / NaN (or ``default``) rather than garbage."""
    if name in cm:
        col = t[cm[name]]
        if np.ndim(col) > 1:
            raise KeyError(f"column {name} is not scalar")
        if hasattr(col, "mask") and np.any(getattr(col, "mask", False)):
            fill = default if default is not None else (np.nan if np.dtype(dtype or float).kind == "f" else -1)
            if np.asarray(col).dtype.kind in "iub" and isinstance(fill, float):
                col = col.astype(np.float64)
            col = col.filled(fill)
        col = np.asarray(col)
        if dtype is None:
            return col
        kind = np.dtype(dtype).kind
        if kind in "iu":
            from ._util import int_column

            return int_column(col, len(col), -1 if default is None else int(default)).astype(dtype)
        if kind == "f":
            from ._util import float_column

            out = float_column(col, len(col))
            if default is not None and np.isfinite(default):
                out = np.where(np.isfinite(out), out, default) if col.dtype.kind not in "f" else out
            return out.astype(dtype)
        return col.astype(dtype)
    if default is None:
        raise KeyError(f"missing column {name}")
    return np.full(len(t), default, dtype=dtype)


def _standardise(t: Table, kind: str) -> Table:
    cm = _cols(t)
    n = len(t)
    out = Table()
    if "PLATE" in cm and "MJD" in cm and ("FIBERID" in cm or "FIBER" in cm):
        plate = _get(t, cm, "PLATE", dtype=np.int64)
        mjd = _get(t, cm, "MJD", dtype=np.int64)
        fiber = _get(t, cm, "FIBERID" if "FIBERID" in cm else "FIBER", dtype=np.int64)
        tid = _get(t, cm, "TARGETID", dtype=np.int64) if "TARGETID" in cm else sdss_targetid(plate, mjd, fiber)
        out["TARGETID"] = tid
        out["THING_ID"] = _get(t, cm, "THING_ID", -1, np.int64)
        out["PLATE"], out["MJD"], out["FIBERID"] = plate, mjd, fiber
    else:
        out["TARGETID"] = _get(t, cm, "TARGETID", dtype=np.int64)
        out["THING_ID"] = _get(t, cm, "THING_ID", -1, np.int64)
    for src, dst in (("RA", "RA"), ("TARGET_RA", "RA"), ("PLUG_RA", "RA"),
                     ("DEC", "DEC"), ("TARGET_DEC", "DEC"), ("PLUG_DEC", "DEC")):
        if src in cm and dst not in out.colnames:
            out[dst] = _get(t, cm, src, dtype=np.float64)

    cls = np.array(["UNKNOWN"] * n, dtype="U8")
    sub = np.array([""] * n, dtype="U24")
    z = np.full(n, np.nan)
    zconf = np.full(n, -1, np.int64)
    bal = np.full(n, -1, np.int64)
    bi = _get(t, cm, "BI_CIV", np.nan, np.float64)
    source = "visual"
    if kind == "dr12q-superset":
        cp = _get(t, cm, "CLASS_PERSON", dtype=np.int64)
        unknown = sorted(set(cp.tolist()) - set(CLASS_PERSON))
        if unknown:
            log.warning("CLASS_PERSON values %s are not DR12Q codes: rows labelled UNKNOWN", unknown)
        for code, (c, s) in CLASS_PERSON.items():
            cls[cp == code], sub[cp == code] = c, s
        z = _get(t, cm, "Z_VI", dtype=np.float64)
        zconf = _get(t, cm, "Z_CONF_PERSON", dtype=np.int64)
        bal = _get(t, cm, "BAL_FLAG_VI", -1, np.int64)
        bal = np.where(cp == 30, 1, bal)
    elif kind == "dr16q":
        cls[:] = "QSO"
        if "CLASS_PERSON" in cm:
            cp = _get(t, cm, "CLASS_PERSON", dtype=np.int64)
            for code, (c, s) in CLASS_PERSON.items():
                if code:
                    cls[cp == code], sub[cp == code] = c, s
        z = _get(t, cm, "Z", dtype=np.float64)
        zconf = _get(t, cm, "Z_CONF", dtype=np.int64)
        bal = np.where(np.isfinite(bi), (bi > 0).astype(np.int64), -1)
    elif kind == "dr14q":
        cls[:] = "QSO"
        z = _get(t, cm, "Z", dtype=np.float64)
        bal = np.where(np.isfinite(bi), (bi > 0).astype(np.int64), -1)
        source = "catalog"
    elif kind == "spall":
        raw = np.char.upper(np.char.strip(_get(t, cm, "CLASS").astype(str)))
        cls = np.array([_CLASS_NAMES.get(c, "UNKNOWN") for c in raw], dtype="U8")
        sub = np.char.strip(_get(t, cm, "SUBCLASS", "").astype(str)).astype("U24")
        z = _get(t, cm, "Z", dtype=np.float64)
        zconf = np.where(_get(t, cm, "ZWARNING", dtype=np.int64) == 0, 3, 0)
        source = "pipeline"
    elif kind in ("desi-redrock", "desi-zcatalog", "desi-qso-catalog", "labels-table"):
        cname = next((c for c in ("SPECTYPE", "CLASS", "CLS") if c in cm), None)
        if cname is None:
            raw = np.array(["QSO"] * n)
        else:
            raw = np.char.upper(np.char.strip(_get(t, cm, cname).astype(str)))
        cls = np.array([_CLASS_NAMES.get(c, "UNKNOWN") for c in raw], dtype="U8")
        bad = sorted({r for r in raw.tolist() if r not in _CLASS_NAMES})
        if bad:
            log.warning("class names %s are not STAR/GALAXY/QSO: rows labelled UNKNOWN", bad)
        sname = next((c for c in ("SUBTYPE", "SUBCLASS") if c in cm), None)
        if sname:
            sub = np.char.strip(_get(t, cm, sname).astype(str)).astype("U24")
        z = _get(t, cm, "Z", dtype=np.float64)
        wname = next((c for c in ("ZWARN", "ZWARNING") if c in cm), None)
        if wname:
            zconf = np.where(_get(t, cm, wname, dtype=np.int64) == 0, 3, 0)
        if np.any(np.isfinite(bi)):
            bal = np.where(np.isfinite(bi), (bi > 0).astype(np.int64), -1)
        source = "pipeline"
    # codes outside their documented range (a damaged file, a catalog of another convention) are unknown
    zconf = np.asarray(zconf, np.int64)
    bal = np.asarray(bal, np.int64)
    odd = (~np.isin(zconf, [-1, 0, 1, 2, 3])) | (~np.isin(bal, [-1, 0, 1]))
    if odd.any():
        log.warning("%d rows have Z_CONF outside 0..3 or BAL_FLAG outside 0/1: set to -1 (unknown)", int(odd.sum()))
        zconf = np.where(np.isin(zconf, [0, 1, 2, 3]), zconf, -1)
        bal = np.where(np.isin(bal, [0, 1]), bal, -1)
    out["CLASS"] = cls
    out["SUBCLASS"] = sub
    out["Z"] = z
    out["Z_CONF"] = zconf
    out["BAL_FLAG"] = bal
    out["BI_CIV"] = bi
    out["LABEL_SOURCE"] = [source] * n
    out["ROW"] = np.arange(n, dtype=np.int64)
    return out
