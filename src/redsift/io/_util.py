"""Small helpers shared by the survey readers."""

from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np

from ..grid import air_to_vacuum


def colmap(table) -> dict[str, str]:
    """Upper-case name -> actual name for a FITS table (SDSS vintages differ in case)."""
    return {name.upper(): name for name in table.columns.names}


def getcol(table, name: str, default=None):
    cols = colmap(table)
    if name.upper() in cols:
        return np.asarray(table[cols[name.upper()]])
    if default is not None:
        return default
    raise KeyError(f"missing column {name}")


def header_bool(header, key: str, default: bool = True) -> bool:
    value = header.get(key, default)
    if isinstance(value, str):
        return value.strip().upper() in ("T", "TRUE", "Y", "YES", "1")
    return bool(value)


def to_vacuum(wave: np.ndarray, header, key: str = "VACUUM") -> tuple[np.ndarray, bool]:
    """Vacuum wavelengths and whether a conversion was made (header ``VACUUM = F`` means air)."""
    if header is not None and key in header and not header_bool(header, key):
        return air_to_vacuum(wave), True
    return np.asarray(wave, dtype=np.float64), False


def scalar(header, *keys, default=None):
    for k in keys:
        if header is not None and k in header and header[k] is not None:
            return header[k]
    return default


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    An interrupted write leaves ``path`` untouched (the temporary file is
    removed), as redrock does with its ``.tmp`` files.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    # keep the real extension last so that format-by-extension writers still work
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp" + _ext(base), dir=directory)
    os.close(fd)
    os.unlink(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _ext(name: str) -> str:
    for ext in (".fits.gz", ".fits", ".fit", ".parquet", ".csv", ".ecsv", ".h5", ".hdf5", ".npz"):
        if name.lower().endswith(ext):
            return ext
    return ""
