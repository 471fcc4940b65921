"""The catalog contract: the same columns, order and dtypes for every run of a given model.

Written up for users in ``docs/catalog.md``. A catalog is

1. :data:`HEAD` — ``TARGETID, Z, ZERR, ZWARN, SPECTYPE, SUBTYPE`` (redrock/DESI names);
2. :data:`IDS` — every survey id, whatever the inputs: ``SURVEY``, SDSS ``PLATE, MJD, FIBERID``, LAMOST
   ``OBSID``, BOSS ``THING_ID``, DESI ``TILEID, PETAL_LOC, FIBER``, and ``RA, DEC``; an id the input
   does not carry holds its sentinel (:data:`SENTINELS`: -1 for integers, NaN for floats, ``""``);
3. :data:`LOCATION` — ``SOURCE`` (the file or dataset) and ``INDEX`` (row in it, -1 for a file that
   could not be read);
4. the family's own columns (:meth:`redsift.models.family.Family.schema`), fixed per model;
5. ``ERROR`` — why a row could not be measured (``""`` otherwise).

``ZWARN == 0`` only where ``Z`` is a measured value: :func:`finish` sets ``NO_REDSHIFT`` on any row with
a non-finite ``Z`` that has no other bit. Strings of unbounded length (``SOURCE``, ``ERROR``) are as wide
as the longest value of the run; the others have fixed widths.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from .zwarning import ZWarningMask

__all__ = ["HEAD", "IDS", "LOCATION", "TAIL", "SENTINELS", "schema", "sentinel", "id_columns", "finish",
           "empty_columns"]

HEAD = (("TARGETID", "int64"), ("Z", "float64"), ("ZERR", "float64"), ("ZWARN", "int64"),
        ("SPECTYPE", "U8"), ("SUBTYPE", "U20"))
IDS = (("SURVEY", "U8"), ("PLATE", "int64"), ("MJD", "int64"), ("FIBERID", "int64"), ("OBSID", "int64"),
       ("THING_ID", "int64"), ("TILEID", "int64"), ("PETAL_LOC", "int64"), ("FIBER", "int64"),
       ("RA", "float64"), ("DEC", "float64"))
LOCATION = (("SOURCE", "str"), ("INDEX", "int64"))
TAIL = (("ERROR", "str"),)

#: The value of a column where the input has nothing to put there.
SENTINELS = {"i": -1, "f": np.nan, "b": False, "U": "", "s": ""}


def schema(family, model) -> list[tuple[str, str]]:
    """``(name, dtype)`` of every column of the model's catalogs, in order."""
    return list(HEAD) + list(IDS) + list(LOCATION) + list(family.schema(model)) + list(TAIL)


def _kind(dtype: str) -> str:
    if dtype == "str":
        return "s"
    d = np.dtype(dtype)
    return (d.subdtype[0] if d.subdtype else d).kind  # vector columns ("(5,)float64", e.g. COEFF): their base


def sentinel(dtype: str):
    return SENTINELS[_kind(dtype)]


def _cast(values, dtype: str, n: int):
    if dtype == "str":
        return np.asarray(values).astype(str) if n else np.zeros(0, "U1")
    d = np.dtype(dtype)
    if d.subdtype:  # a vector per row
        base, shape = d.subdtype
        return np.asarray(values, dtype=base).reshape((n,) + shape)
    return np.asarray(values).astype(dtype)


def empty_columns(cols, n: int) -> dict:
    """Sentinel-filled columns ``{name: array}`` of length ``n`` for ``(name, dtype)`` pairs."""
    out = {}
    for name, dt in cols:
        d = None if dt == "str" else np.dtype(dt)
        if d is not None and d.subdtype:
            out[name] = np.full((n,) + d.subdtype[1], sentinel(dt), dtype=d.subdtype[0])
        else:
            out[name] = _cast(np.full(n, sentinel(dt), dtype=object), dt, n)
    return out


def id_columns(meta: Table) -> dict:
    """The id and location columns of a batch's metadata (a table or a :class:`redsift.spectra.MetaColumns`),
    sentinels where the input has none."""
    n = meta.nrows if hasattr(meta, "nrows") else len(meta)
    out = {}
    for name, dt in (HEAD[0],) + IDS + LOCATION:
        if name in meta.colnames:
            col = meta[name]
            if hasattr(col, "filled"):
                col = col.filled(sentinel(dt))
            try:
                out[name] = _cast(col, dt, n)
                continue
            except (TypeError, ValueError):  # an id the file stores in a form we cannot use
                pass
        out[name] = empty_columns([(name, dt)], n)[name]
    return out


def finish(columns: dict, cols_schema, meta: dict | None = None) -> Table:
    """The catalog Table from ``{name: array}`` in the schema's order and dtypes (see the module docstring)."""
    n = len(columns["ZWARN"])
    zwarn = np.asarray(columns["ZWARN"], np.int64)
    z = np.asarray(columns["Z"], np.float64)
    zwarn = np.where(~np.isfinite(z) & (zwarn == 0), int(ZWarningMask.NO_REDSHIFT), zwarn)
    columns = dict(columns, ZWARN=zwarn)
    t = Table(meta=meta or {})
    for name, dt in cols_schema:
        t[name] = _cast(columns[name], dt, n) if name in columns else empty_columns([(name, dt)], n)[name]
    return t
