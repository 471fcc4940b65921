"""Result catalogs in the redrock/DESI convention, written atomically.

Column order: the catalog contract's (:mod:`redsift.catalog`, ``docs/catalog.md``):
``TARGETID, Z, ZERR, ZWARN, SPECTYPE, SUBTYPE``, then the survey ids, then
``SOURCE, INDEX``, then model-specific columns in the order given.

The format follows the file extension: ``.fits``/``.fits.gz``/``.fit`` (the
default; one ``REDSHIFTS`` HDU as redrock), ``.parquet`` (needs pyarrow), ``.csv``
or ``.ecsv``. FITS headers (and Parquet/ECSV metadata) carry provenance: the
redsift version, model name, weights hash and grid definition. The catalog is
written to a temporary file beside the target and renamed onto it, so an
interrupted run never leaves a half-written catalog.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import os

import numpy as np
from astropy.table import Table

from .._version import __version__
from ..catalog import HEAD, IDS, LOCATION
from ..zwarning import ZWarningMask
from ._util import atomic_path

__all__ = ["write_catalog", "write_catalog_parts", "order_columns", "provenance", "provenance_cards", "file_sha256",
           "FIRST_COLUMNS", "SURVEY_ID_COLUMNS"]

FIRST_COLUMNS = tuple(name for name, _ in HEAD)
SURVEY_ID_COLUMNS = tuple(name for name, _ in IDS)
LOCATION_COLUMNS = tuple(name for name, _ in LOCATION)

# FITS header keywords for provenance (8 characters at most)
_PROV_KEYS = {"redsift_version": "RSVER", "model": "MODEL", "weights_sha256": "WHASH",
              "grid": "GRID", "date": "DATE", "command": "COMMAND"}


def order_columns(table: Table) -> Table:
    """Reorder columns into the redrock/DESI convention (see module docstring)."""
    head = [c for c in FIRST_COLUMNS + SURVEY_ID_COLUMNS + LOCATION_COLUMNS if c in table.colnames]
    return table[head + [c for c in table.colnames if c not in head]]


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (weights hash for provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def provenance(model: str = "", weights_sha256: str = "", grid=None, command: str = "", **extra) -> dict:
    """The provenance record written into catalog headers."""
    rec = {"redsift_version": __version__, "model": model, "weights_sha256": weights_sha256,
           "grid": grid.describe() if hasattr(grid, "describe") else (grid or ""),
           "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
           "command": command}
    rec.update(extra)
    return rec


def provenance_cards(prov: dict) -> dict:
    """The provenance record as the FITS header has it: ``{card: value}`` (cards of 8 characters at most;
    numbers stay numbers). Also the ``meta`` of tables returned by :func:`redsift.predict`."""
    out = {}
    for key, value in prov.items():
        out[_PROV_KEYS.get(key, key.upper()[:8])] = value.item() if hasattr(value, "item") else value
    return out


def _check(table: Table):
    missing = [c for c in ("TARGETID", "ZWARN") if c not in table.colnames]
    if missing:
        raise ValueError(f"catalog lacks required column(s) {', '.join(missing)}")


def write_catalog(table: Table, path, prov: dict | None = None, overwrite: bool = False,
                  extname: str = "REDSHIFTS") -> str:
    """Write a result catalog atomically; returns the path.

    Parameters
    ----------
    table : Table
        Needs at least ``TARGETID`` and ``ZWARN``; columns are reordered
        with :func:`order_columns`.
    path : str
        Format chosen by extension (FITS by default for unknown extensions).
    prov : dict, optional
        Provenance (see :func:`provenance`); a minimal record is added when omitted.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path}: exists (use overwrite / --overwrite)")
    _check(table)
    out = order_columns(Table(table, copy=True))
    prov = dict(prov or provenance())
    out.meta.clear()
    low = path.lower()
    with atomic_path(path) as tmp:
        if low.endswith(".parquet"):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise ImportError(f"{path}: writing Parquet needs pyarrow (pip install 'redsift[parquet]')") from None
            out.meta.update({k: str(v) for k, v in prov.items()})
            out.write(tmp, format="parquet")
        elif low.endswith(".ecsv"):
            out.meta.update(prov)
            out.write(tmp, format="ascii.ecsv")
        elif low.endswith(".csv"):
            out.write(tmp, format="ascii.csv")
        else:
            _write_fits(out, tmp, prov, extname)
    return path


def write_catalog_parts(parts, path, prov: dict | None = None, overwrite: bool = False,
                        extname: str = "REDSHIFTS") -> str:
    """Write the catalog made of consecutive parts as one FITS file, atomically, holding one part in memory at
    a time (a survey's catalog never is): the same file, byte for byte, as :func:`write_catalog` of the parts
    stacked. Returns the path.

    Parameters
    ----------
    parts : list of str
        FITS catalogs with the same columns (a run's spooled parts or a cluster's shards), in row order;
        their headers are read first (the rows and the widest string of each text column), then each part's
        rows, one part at a time.
    path, prov, overwrite, extname
        As :func:`write_catalog`; the format is FITS whatever the extension.
    """
    from astropy.io import fits

    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path}: exists (use overwrite / --overwrite)")
    if not parts:
        raise ValueError("no catalog parts to write")
    nrows, widths, names = 0, {}, None
    for part in parts:  # pass 1, headers only: the rows and the widest string of every column
        with fits.open(part) as h:
            cols = h[1].columns
            if names is None:
                names = list(cols.names)
                _check(Table(names=names))
            elif list(cols.names) != names:
                raise ValueError(f"{part}: columns differ from the first part's")
            for c in cols:
                if c.format.endswith("A"):
                    widths[c.name] = max(widths.get(c.name, 1), int(c.format[:-1] or 1))
            nrows += int(h[1].header["NAXIS2"])
    # (the first part's dtypes, each text column as wide as its widest part's: what reading the stack gives)
    head = Table.read(parts[0], character_as_bytes=False)  # (read once: its dtypes here, its rows in pass 2)
    first = order_columns(head[:0])
    names = first.colnames
    dtypes = {n: np.dtype(f"U{widths[n]}") if n in widths else first[n].dtype for n in names}

    def cast(t: Table) -> Table:
        t = order_columns(t)
        return Table([t[n].astype(dtypes[n]) if t[n].dtype != dtypes[n] else t[n] for n in names], names=names)

    hdu = fits.table_to_hdu(cast(first))
    hdu.name = extname
    primary = fits.PrimaryHDU()
    _header_cards((primary.header, hdu.header), dict(prov or provenance()))
    hdu.header["NAXIS2"] = nrows
    row_bytes = hdu.header["NAXIS1"]
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(primary.header.tostring().encode("ascii"))
        out.write(hdu.header.tostring().encode("ascii"))
        for k, part in enumerate(parts):  # pass 2: each part's rows as astropy encodes them
            t = cast(head if k == 0 else Table.read(part, character_as_bytes=False))
            head = None
            one = fits.table_to_hdu(t)
            buf = io.BytesIO()
            one.writeto(buf)
            size = row_bytes * len(t)  # the data block ends the file astropy wrote (no heap: fixed-width columns)
            start = buf.tell() - (size + (-size % 2880))
            out.write(buf.getbuffer()[start:start + size])
        out.write(b"\0" * (-(row_bytes * nrows) % 2880))
    return path


def _header_cards(headers, prov: dict):
    """Provenance and the ZWARN bit names, on every header given."""
    for hdr in headers:
        for key, value in prov.items():
            card = _PROV_KEYS.get(key, key.upper()[:8])
            if isinstance(value, (bool, int, float, np.integer, np.floating)):  # numbers stay numbers
                hdr[card] = (value.item() if hasattr(value, "item") else value, key.replace("_", " "))
                continue
            text = str(value)
            hdr[card] = text if len(text) > 45 else (text, key.replace("_", " "))  # long values: no comment
        for name, value in ZWarningMask.flags():
            bit = int(np.log2(value))
            hdr[f"ZWBIT{bit:02d}"] = (name, f"ZWARN bit {bit}")


def _write_fits(table: Table, path: str, prov: dict, extname: str):
    from astropy.io import fits

    hdu = fits.table_to_hdu(table)
    hdu.name = extname
    primary = fits.PrimaryHDU()
    _header_cards((primary.header, hdu.header), prov)
    fits.HDUList([primary, hdu]).writeto(path, output_verify="silentfix")
