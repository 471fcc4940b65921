"""Redrock-compatible output: a redsift catalog written as the file ``rrdesi`` (Redrock 0.21) writes.

Layout (checked against a file Redrock 0.21 itself wrote, ``tests/data/redrock/``, made by
``scripts/make_redrock_reference.py``)::

    HDU 0  PRIMARY       header only
    HDU 1  REDSHIFTS     one row per catalog row, Redrock 0.21's 12 columns (below)
    HDU 2  FIBERMAP      one row per catalog row, same order and TARGETID as REDSHIFTS
    HDU 3  EXP_FIBERMAP  only when ``exp_fibermap`` is given (Redrock: the per-exposure fibermap)
    HDU 4  TSNR2         only when ``tsnr2`` is given (Redrock: TARGETID + TSNR2_* from the input's SCORES)

Redrock 0.21 always writes all five; EXP_FIBERMAP and TSNR2 describe DESI exposures and template
signal-to-noise, which redsift does not keep, so they are written only when the caller has them (DESI's
``desi_zcatalog`` reads EXP_FIBERMAP and warns without TSNR2; a reader of REDSHIFTS and FIBERMAP, e.g.
``desispec.io.read_spectra(return_redshifts=True)``, needs neither).

REDSHIFTS columns, in order, with the FITS formats Redrock 0.21 writes:

=========  ======  =========================================================================================
TARGETID   K       int64, from the catalog (may repeat, and -1 where the input had no id: one row per
                   catalog row, not per unique target as in Redrock)
Z          D       float64, from the catalog; NaN where redsift measured no redshift (ZWARN says why)
ZERR       D       float64, from the catalog (NaN where unknown)
ZWARN      K       int64, from the catalog (redsift's bits 0-11 are Redrock's; see :mod:`redsift.zwarning`)
CHI2       D       float64; the catalog's ``CHI2`` if it has one, else **NaN**
COEFF      nD      float64 ``(nrows, n)``; the catalog's ``COEFF`` if it has one (its width), else **zeros**
                   with ``n = 10`` (:data:`DEFAULT_NCOEFF`, the width of DESI files: GALAXY v2.6 has 10 basis
                   vectors; Redrock's own width is the largest template's, or the common NCOEFF)
FITMETHOD  4A      the catalog's ``FITMETHOD`` if it has one, else **"NONE"** (Redrock's value for a row
                   without a template fit; its others are PCA, NMF, ARCH)
NPIXELS    K       int64; the catalog's ``NPIXELS`` if it has one, else **0** (no pixel entered a template fit)
SPECTYPE   6A      the catalog's SPECTYPE, values kept ("QSO", "NONQSO", "STAR", "GALAXY", ""); 6 characters
                   as Redrock, wider only if a value is longer (never truncated)
SUBTYPE    20A     the catalog's SUBTYPE; at least 20 characters, as Redrock
NCOEFF     K       int64; the catalog's ``NCOEFF`` if it has one, else the width of its COEFF, else **0**
DELTACHI2  D       float64; the catalog's ``DELTACHI2`` if it has one (0.0 on its rows without one), else **0.0**
=========  ======  =========================================================================================

The "empty" values, until a model family fills the columns: CHI2 = NaN because any number would read as a
fit quality (Redrock's own rows without data hold ~1e7, an artifact of its penalty, and 0 would be a
perfect fit); DELTACHI2 = 0.0 because that is what Redrock writes when it cannot tell two solutions apart
(its last candidate, its rows without data), so the usual ``DELTACHI2 > 25`` selections treat redsift rows
as unconfirmed without NaN breaking histograms or sorts; COEFF = 0, NCOEFF = 0, NPIXELS = 0 and
FITMETHOD = "NONE" say that no template fit was made (Redrock zeroes COEFF and writes NONE where it has no
fit). The catalog's other columns (survey ids, SOURCE, INDEX, model columns, ERROR) are not in REDSHIFTS:
the ids are in FIBERMAP, the rest in redsift's own catalog (:func:`redsift.io.output.write_catalog`).

FIBERMAP (:func:`fibermap_from_meta`): for DESI inputs, the input's FIBERMAP columns as the DESI reader kept
them (1-D columns only, in the file's order, dtypes kept); for every other survey, or when no fibermap is
given, one built from the ids: ``TARGETID, PLATE, MJD, FIBERID, OBSID, THING_ID, TILEID, PETAL_LOC, FIBER,
TARGET_RA, TARGET_DEC`` (int64 / float64; -1 or NaN where the input has none; ``RA``/``DEC`` renamed as DESI
names them).

Headers (PRIMARY and REDSHIFTS, as Redrock puts the same cards on both): ``LONGSTRN``, redsift's provenance
(``RSVER, MODEL, WHASH, GRID, DATE, COMMAND``, as :func:`redsift.io.output.write_catalog`), ``RRFORMAT``
(the Redrock version whose layout this follows), ``DEPNAMnn``/``DEPVERnn`` (desiutil's convention), the
input's ``SPGRP, SPGRPVAL, TILEID, SPECTRO, PETAL, NIGHT, EXPID, HPXPIXEL, HPXNSIDE, HPXNEST, SURVEY,
PROGRAM, FAPRGRM`` where known (from ``fibermap.meta``; Redrock copies them from the input's header and
``desi_zcatalog`` reads SPGRP and HPXPIXEL), and ``ZWBITnn`` naming the ZWARN bits. Not written: ``RRVER``
(this is not Redrock's output) and ``TEMNAMnn``/``TEMVERnn``/``TEMFILnn``: no template produced COEFF, so
``redrock.templates.load_templates_from_header`` finds none rather than templates to combine with zeros.

Redrock 0.21 has no reader for this file (its readers, ``redrock.results.read_zscan``/``read_zfit``, are for
the HDF5 details file); the file is plain FITS, read with astropy or fitsio by HDU name.
"""

from __future__ import annotations

import os
import re
import sys
import warnings

import numpy as np
from astropy.table import Table

from ..catalog import id_columns
from ..spectra import CORE_COLUMNS
from ..zwarning import ZWarningMask
from ._util import atomic_path

__all__ = ["write_redrock", "redshifts_table", "fibermap_from_meta", "REDSHIFTS_COLUMNS", "DEFAULT_NCOEFF",
           "EMPTY_VALUES", "GENERIC_FIBERMAP_COLUMNS", "HEADER_KEYS", "REDROCK_VERSION"]

#: The Redrock release whose file layout is reproduced.
REDROCK_VERSION = "0.21"

#: ``(name, numpy dtype)`` of REDSHIFTS in Redrock 0.21's order; string widths are minimums, COEFF is 2-D.
REDSHIFTS_COLUMNS = (("TARGETID", "int64"), ("Z", "float64"), ("ZERR", "float64"), ("ZWARN", "int64"),
                     ("CHI2", "float64"), ("COEFF", "float64"), ("FITMETHOD", "U4"), ("NPIXELS", "int64"),
                     ("SPECTYPE", "U6"), ("SUBTYPE", "U20"), ("NCOEFF", "int64"), ("DELTACHI2", "float64"))

#: Width of COEFF when the catalog has none (DESI's: the GALAXY v2.6 template has 10 basis vectors).
DEFAULT_NCOEFF = 10

#: What the template-fit columns hold until a model family fills them (see the module docstring).
EMPTY_VALUES = {"CHI2": np.nan, "COEFF": 0.0, "FITMETHOD": "NONE", "NPIXELS": 0, "NCOEFF": 0, "DELTACHI2": 0.0}

#: Columns of the FIBERMAP built from ids (non-DESI inputs), from the catalog's own id columns.
GENERIC_FIBERMAP_COLUMNS = ("TARGETID", "PLATE", "MJD", "FIBERID", "OBSID", "THING_ID", "TILEID", "PETAL_LOC",
                            "FIBER", "TARGET_RA", "TARGET_DEC")

#: Input header keywords Redrock 0.21 copies into its PRIMARY and REDSHIFTS headers.
HEADER_KEYS = ("SPGRP", "SPGRPVAL", "TILEID", "SPECTRO", "PETAL", "NIGHT", "EXPID", "HPXPIXEL", "HPXNSIDE",
               "HPXNEST", "SURVEY", "PROGRAM", "FAPRGRM")

# columns redsift's DESI reader adds to the FIBERMAP's (io/desi.py), with the header keyword they came from
_DESI_HEADER_COLUMNS = {"DESI_SURVEY": "SURVEY", "PROGRAM": "PROGRAM", "HPXPIXEL": "HPXPIXEL", "SPGRP": "SPGRP",
                        "TILEID": "TILEID", "NIGHT": "NIGHT"}
_RESERVED = {"SIMPLE", "BITPIX", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "TFIELDS", "EXTNAME", "EXTVER", "END",
             "CHECKSUM", "DATASUM", "THEAP", "LONGSTRN", "RRFORMAT", "COMMENT", "HISTORY"}
_RESERVED_PREFIXES = ("NAXIS", "TTYPE", "TFORM", "TUNIT", "TDIM", "TNULL", "TSCAL", "TZERO", "TDISP", "DEPNAM",
                      "DEPVER", "ZWBIT")
_PROV_KEYS = {"redsift_version": "RSVER", "model": "MODEL", "weights_sha256": "WHASH", "grid": "GRID",
              "date": "DATE", "command": "COMMAND"}


# --- REDSHIFTS --------------------------------------------------------------------------------------------

def _filled(col, fill):
    if hasattr(col, "filled"):
        col = col.filled(fill)
    return np.asarray(col)


def _text(values, min_width: int, n: int) -> np.ndarray:
    """Unicode strings at least ``min_width`` wide (wider when a value is longer: never truncated)."""
    a = _filled(values, "")
    if a.dtype.kind == "S":
        a = np.char.decode(a, "ascii", "replace")
    elif a.dtype.kind != "U":
        a = np.array(["" if v is None else str(v) for v in a.tolist()], dtype=str) if n else np.zeros(0, "U1")
    a = np.char.strip(a.astype(str)) if n else a.astype("U1")
    width = max(min_width, int(np.char.str_len(a).max()) if n else 0)   # the values' width, not the dtype's
    return a.astype(f"U{width}")


def _number(catalog: Table, name: str, dtype: str, n: int):
    empty = EMPTY_VALUES.get(name, np.nan if dtype.startswith("f") else -1 if name == "TARGETID" else 0)
    if name not in catalog.colnames:
        return np.full(n, empty, dtype=dtype)
    col = catalog[name]
    if getattr(col, "ndim", 1) != 1:
        raise ValueError(f"catalog column {name} has shape {col.shape}; expected one value per row")
    try:
        out = _filled(col, empty).astype(dtype)
    except (TypeError, ValueError):
        raise ValueError(f"catalog column {name} ({col.dtype}) is not numeric") from None
    if out.dtype.kind == "f" and not np.isnan(empty):  # a row the family did not measure (DELTACHI2: NaN -> 0.0)
        out = np.where(np.isnan(out), empty, out)
    return out


def redshifts_table(catalog: Table) -> Table:
    """The REDSHIFTS table of a redsift catalog: Redrock 0.21's columns, order and dtypes (module docstring)."""
    missing = [c for c in ("TARGETID", "ZWARN") if c not in catalog.colnames]
    if missing:
        raise ValueError(f"catalog lacks required column(s) {', '.join(missing)}")
    n = len(catalog)
    if "COEFF" in catalog.colnames:
        coeff = _filled(catalog["COEFF"], 0.0)
        try:
            coeff = coeff.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"catalog column COEFF ({coeff.dtype}) is not numeric") from None
        if coeff.ndim == 1:
            coeff = coeff.reshape(n, 1)
        if coeff.ndim != 2 or coeff.shape[1] == 0:
            raise ValueError(f"catalog column COEFF has shape {coeff.shape}; expected (nrows, ncoeff)")
        ncoeff_default = coeff.shape[1]
    else:
        coeff = np.zeros((n, DEFAULT_NCOEFF), np.float64)
        ncoeff_default = EMPTY_VALUES["NCOEFF"]
    cols = {}
    for name, dtype in REDSHIFTS_COLUMNS:
        if name == "COEFF":
            cols[name] = coeff
        elif dtype.startswith("U"):
            values = catalog[name] if name in catalog.colnames else np.full(n, EMPTY_VALUES.get(name, ""))
            cols[name] = _text(values, int(dtype[1:]), n)
        elif name == "NCOEFF" and name not in catalog.colnames:
            cols[name] = np.full(n, ncoeff_default, np.int64)
        else:
            cols[name] = _number(catalog, name, dtype, n)
    out = Table(cols)
    out.meta["EXTNAME"] = "REDSHIFTS"
    return out


# --- FIBERMAP ---------------------------------------------------------------------------------------------

def _generic_fibermap(table: Table) -> Table:
    ids = id_columns(table)
    cols = {}
    for name in GENERIC_FIBERMAP_COLUMNS:
        src = {"TARGET_RA": "RA", "TARGET_DEC": "DEC"}.get(name, name)
        cols[name] = ids[src]
    return Table(cols)


def _writable(col):
    """A column astropy can write to FITS (masked entries filled, objects as text, at least 1 character)."""
    a = col
    if hasattr(a, "filled") and getattr(a, "mask", None) is not None:
        kind = a.dtype.kind
        a = a.filled({"i": -1, "u": 0, "f": np.nan, "b": False}.get(kind, "" if kind in "US" else 0))
    a = np.asarray(a)
    if a.dtype.kind == "O":
        a = np.array(["" if v is None else str(v) for v in a.tolist()], dtype=str) if len(a) else np.zeros(0, "U1")
    if a.dtype.kind in "US" and a.dtype.itemsize == 0:
        a = a.astype("U1")
    return a


def _constant(col):
    """The one value of a column whose rows all agree (a python scalar), else None."""
    a = np.asarray(col)
    if a.ndim != 1 or len(a) == 0 or a.dtype.kind not in "iufbUS":
        return None
    first = a[0]
    if a.dtype.kind == "f" and not np.isfinite(first):
        return None
    if not np.all(a == first):
        return None
    value = first.item() if hasattr(first, "item") else first
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    elif isinstance(value, int) and value == -1:
        return None
    return value


def fibermap_from_meta(meta: Table) -> Table:
    """The FIBERMAP of a batch's metadata (:attr:`redsift.spectra.Spectra.meta`), one row per spectrum.

    DESI batches (every row's ``SURVEY`` is ``desi``): the input FIBERMAP's columns as
    :func:`redsift.io.desi.read_desi` kept them - in the file's order and dtypes, names it prefixed with
    ``FM_`` restored, without redsift's own columns (:data:`redsift.spectra.CORE_COLUMNS`), the ``RA``/``DEC``
    it copies from ``TARGET_RA``/``TARGET_DEC``, and the columns it takes from the file header
    (``DESI_SURVEY, PROGRAM, HPXPIXEL, TILEID, SPGRP, NIGHT``, recognised as the trailing run of those names:
    the reader appends them after the FIBERMAP's columns, and only where the FIBERMAP lacks them, so a
    coadd's own TILEID column stays). ``meta.meta["FIBERMAP_COLUMNS"]``, when a reader records it, names the
    columns exactly instead. Multi-dimensional FIBERMAP columns are not in the metadata and so not here.

    Other batches: :data:`GENERIC_FIBERMAP_COLUMNS` from the ids (-1/NaN where unknown).

    Header values shared by every row (``SURVEY`` from ``DESI_SURVEY``, ``PROGRAM``, ``HPXPIXEL``, ``SPGRP``,
    ``TILEID``, ``NIGHT``) go to the returned table's ``meta``; :func:`write_redrock` writes them into the
    PRIMARY and REDSHIFTS headers as Redrock does.
    """
    n = len(meta)
    desi = "SURVEY" in meta.colnames and n > 0 and all(str(s).strip().lower() == "desi" for s in meta["SURVEY"])
    if not desi:
        return _generic_fibermap(meta)
    own = set(CORE_COLUMNS) - {"TARGETID"}      # redsift's columns; the reader renamed the FIBERMAP's to FM_*

    def source(name):
        if name in own or name.startswith("FM_") and name[3:] in own:
            return f"FM_{name[3:] if name.startswith('FM_') else name}"
        return name

    listed = meta.meta.get("FIBERMAP_COLUMNS") if isinstance(meta.meta, dict) else None
    if listed:
        names = [str(c) for c in listed if source(str(c)) in meta.colnames]
    else:
        # the reader appends the header's values after the FIBERMAP's columns (and its RA/DEC), and only
        # where the FIBERMAP has no such column: a trailing run of those names came from the header
        order = [c for c in meta.colnames if c not in own]
        while order and order[-1] in _DESI_HEADER_COLUMNS:
            order.pop()
        drop = set()
        if "TARGET_RA" in meta.colnames and "TARGET_DEC" in meta.colnames:
            drop = {"RA", "DEC"}       # the reader's copies of TARGET_RA/TARGET_DEC
        names = [c[3:] if c.startswith("FM_") and c[3:] in own else c for c in order if c not in drop]
    if "TARGETID" not in names:
        names.insert(0, "TARGETID")
    cols = {}
    for name in names:
        col = meta[source(name)] if source(name) in meta.colnames else np.full(n, -1, np.int64)
        if getattr(col, "ndim", 1) == 1:
            cols[name] = _writable(col)
    out = Table(cols)
    out.meta.update(_header_values(meta))
    return out


def _header_values(meta: Table) -> dict:
    values = {}
    for col, key in _DESI_HEADER_COLUMNS.items():
        if col in meta.colnames:
            value = _constant(_writable(meta[col]))
            if value is not None:
                values[key] = value
    return values


# --- writing ----------------------------------------------------------------------------------------------

def _ascii(value):
    if isinstance(value, str):
        return value.encode("ascii", "replace").decode("ascii").replace("\n", " ")
    return value


def _header_cards(prov: dict, spec: dict) -> list[tuple[str, object, str]]:
    import astropy
    import numpy

    from .._version import __version__

    cards = [("LONGSTRN", "OGIP 1.0", "")]
    for key, value in prov.items():
        card = _PROV_KEYS.get(key) or re.sub(r"[^A-Z0-9_-]", "_", str(key).upper())[:8]
        if not card or card in _RESERVED or card.startswith(_RESERVED_PREFIXES) or value is None:
            continue
        if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
            cards.append((card, value.item() if hasattr(value, "item") else value, str(key).replace("_", " ")))
        else:
            text = _ascii(str(value))
            cards.append((card, text, "" if len(text) > 45 else str(key).replace("_", " ")))
    cards.append(("RRFORMAT", REDROCK_VERSION, "HDUs and columns as written by Redrock"))
    deps = [("python", ".".join(map(str, sys.version_info[:3]))), ("numpy", numpy.__version__),
            ("astropy", astropy.__version__), ("redsift", __version__)]
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "__version__", None):
        deps.append(("torch", str(torch.__version__)))
    for i, (name, version) in enumerate(deps):
        cards.append((f"DEPNAM{i:02d}", name, ""))
        cards.append((f"DEPVER{i:02d}", version, ""))
    for key in HEADER_KEYS:
        value = _card_value(spec.get(key))
        if value is not None:
            cards.append((key, value, ""))
    for name, value in ZWarningMask.flags():
        bit = int(np.log2(value))
        cards.append((f"ZWBIT{bit:02d}", name, f"ZWARN bit {bit}"))
    return cards


def _card_value(value):
    """``value`` fit for a header card (str, int, finite float or bool), else None."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        return _ascii(value)
    if isinstance(value, bool) or isinstance(value, int) or isinstance(value, float) and np.isfinite(value):
        return value
    return None


def _table_hdu(table: Table, extname: str, cards=()):
    from astropy.io import fits

    plain = Table({name: _writable(table[name]) for name in table.colnames})
    for name in table.colnames:  # units survive (DESI FIBERMAP: deg, nanomaggy, ...)
        unit = getattr(table[name], "unit", None)
        if unit is not None:
            plain[name].unit = unit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # units that are not FITS-standard are written as they are
        hdu = fits.table_to_hdu(plain)
    hdu.name = extname
    for key, value, comment in cards:
        hdu.header[key] = (value, comment) if comment else value
    return hdu


def _check_rows(name: str, table: Table, targetid: np.ndarray):
    if "TARGETID" not in table.colnames:
        raise ValueError(f"{name} has no TARGETID column")
    if len(table) != len(targetid):
        raise ValueError(f"{name} has {len(table)} rows for {len(targetid)} catalog rows")
    tid = _filled(table["TARGETID"], -1)
    bad = np.flatnonzero(tid != targetid)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} row {i} has TARGETID {tid[i]}, the catalog {targetid[i]} "
                         f"({bad.size} row(s) differ): rows must match the catalog's in order")


def write_redrock(catalog: Table, path, fibermap: Table | None = None, prov: dict | None = None,
                  overwrite: bool = False, *, exp_fibermap: Table | None = None,
                  tsnr2: Table | None = None) -> str:
    """Write a redsift catalog as a Redrock 0.21 file (see the module docstring); returns the path.

    Parameters
    ----------
    catalog : Table
        A redsift catalog (needs ``TARGETID`` and ``ZWARN``; ``Z, ZERR, SPECTYPE, SUBTYPE`` and, when a model
        family provides them, ``CHI2, COEFF, NCOEFF, NPIXELS, DELTACHI2, FITMETHOD`` are used).
    path : str or path-like
        The file (``.fits`` or ``.fits.gz``), written to a temporary file beside it and renamed onto it, so an
        interrupted write leaves no partial file (and an existing file as it was).
    fibermap : Table, optional
        One row per catalog row, same order and TARGETID (:func:`fibermap_from_meta` of the batch's
        metadata); its ``meta`` may carry :data:`HEADER_KEYS`. By default, built from the catalog's ids.
    prov : dict, optional
        Provenance (:func:`redsift.io.output.provenance`); a minimal record when omitted.
    overwrite : bool
        Replace an existing file; otherwise :class:`FileExistsError`.
    exp_fibermap, tsnr2 : Table, optional
        Written as the EXP_FIBERMAP and TSNR2 HDUs Redrock writes (TSNR2 rows must match the catalog's).
    """
    from astropy.io import fits

    from .output import provenance

    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path}: exists (use overwrite / --overwrite)")
    redshifts = redshifts_table(catalog)
    targetid = np.asarray(redshifts["TARGETID"])
    fm = _generic_fibermap(catalog) if fibermap is None else fibermap
    _check_rows("FIBERMAP", fm, targetid)
    if tsnr2 is not None:
        _check_rows("TSNR2", tsnr2, targetid)
    if exp_fibermap is not None and "TARGETID" not in exp_fibermap.colnames:
        raise ValueError("EXP_FIBERMAP has no TARGETID column")

    spec = {k: fm.meta[k] for k in HEADER_KEYS if k in getattr(fm, "meta", {}) and _card_value(fm.meta[k]) is not None}
    cards = _header_cards(dict(prov or provenance()), spec)
    primary = fits.PrimaryHDU()
    for key, value, comment in cards:
        primary.header[key] = (value, comment) if comment else value
    hdus = [primary, _table_hdu(redshifts, "REDSHIFTS", cards),
            _table_hdu(fm, "FIBERMAP", [(k, _card_value(v), "") for k, v in spec.items()])]
    if exp_fibermap is not None:
        hdus.append(_table_hdu(exp_fibermap, "EXP_FIBERMAP"))
    if tsnr2 is not None:
        hdus.append(_table_hdu(tsnr2, "TSNR2"))
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, output_verify="silentfix")
    return path
