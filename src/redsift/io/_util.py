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
    """A boolean header card; ``default`` when it is missing or says neither yes nor no."""
    value = header.get(key, default)
    if isinstance(value, str):
        text = value.strip().upper()
        if text in ("T", "TRUE", "Y", "YES", "1"):
            return True
        if text in ("F", "FALSE", "N", "NO", "0"):
            return False
        return default
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        return bool(value)
    return default


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


# --- defensive conversions shared by the readers ---------------------------------------------------
# A reader either returns valid spectra or raises an exception whose one-line message names the cause
# (read_file adds the path). Metadata that cannot be parsed (an id that is text, an RA that is NaN...)
# never costs the spectra: it is recorded as unknown (-1, NaN or "").

def numeric(arr, what: str, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """``arr`` as a real numeric array, or ValueError naming ``what`` and what is wrong with it.

    Booleans and integers are accepted (and returned as they are); text, complex and object arrays are not.
    ``ndim`` (an int or a tuple of ints) is the number of dimensions required.
    """
    a = np.asarray(arr)
    if a.dtype.kind not in "biuf":
        kind = {"U": "text", "S": "text", "c": "complex numbers", "O": "objects", "V": "records"}.get(
            a.dtype.kind, f"dtype {a.dtype}")
        raise ValueError(f"{what} holds {kind}, not real numbers")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in allowed:
            raise ValueError(f"{what} has shape {a.shape}; expected {' or '.join(f'{n}-D' for n in allowed)}")
    return a


def order_pixels(wave: np.ndarray, arrays, what: str = "wavelengths"):
    """Check that ``wave`` (1-D) is finite, positive and strictly increasing.

    A wavelength array stored entirely in decreasing order (red to blue) is reversed, together with the
    last axis of every array in ``arrays`` (None entries are passed through). Anything else raises
    ValueError naming the first offending pixel.

    Returns ``(wave, arrays)``.
    """
    wave = np.asarray(wave, np.float64)
    problem = wavelength_problem(wave, what)
    if problem is None:
        return wave, list(arrays)
    if wave.size > 1 and np.all(np.isfinite(wave)) and np.all(wave > 0) and np.all(np.diff(wave) < 0):
        return wave[::-1].copy(), [None if a is None else np.asarray(a)[..., ::-1].copy() for a in arrays]
    raise ValueError(problem)


def wavelength_problem(wave: np.ndarray, what: str = "wavelengths") -> str | None:
    """A one-line description of what is wrong with a 1-D wavelength array, or None when it is valid
    (finite, positive, strictly increasing)."""
    wave = np.asarray(wave, np.float64)
    if wave.size == 0:
        return f"{what}: no pixels"
    bad = ~np.isfinite(wave)
    if bad.any():
        return f"{what}: {int(bad.sum())} non-finite value(s), first at pixel {int(np.argmax(bad))}"
    bad = wave <= 0
    if bad.any():
        i = int(np.argmax(bad))
        return f"{what}: {int(bad.sum())} non-positive value(s), first {wave[i]:.6g} at pixel {i}"
    step = np.diff(wave)
    if np.all(step > 0):
        return None
    i = int(np.argmax(step <= 0)) + 1
    if step[i - 1] == 0:
        return f"{what} repeat: {wave[i]:.6g} A at pixels {i - 1} and {i} (merge or drop repeated pixels)"
    return (f"{what} are not sorted: {wave[i]:.6g} A at pixel {i} follows {wave[i - 1]:.6g} A "
            f"(sort the file by wavelength)")


def safe_int(value, default: int = -1) -> int:
    """``value`` as an int, or ``default`` when it is missing, not a number, not whole or out of int64 range."""
    try:
        if isinstance(value, (bytes, str)):
            value = value.strip()
            value = float(value) if value else default
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    if not np.isfinite(v) or v != int(v) or abs(v) >= 2**62:
        return default
    return int(v)


def safe_float(value, default: float = np.nan) -> float:
    """``value`` as a float, or ``default`` when it is not a number."""
    try:
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return default


def int_column(col, n: int, default: int = -1) -> np.ndarray:
    """An int64 column of ``n`` values; entries (or the whole column) that are not whole numbers become ``default``."""
    a = np.asarray(col)
    if a.shape != (n,):
        return np.full(n, default, np.int64)
    if a.dtype.kind in "iub":
        out = a.astype(np.int64)
        return out
    if a.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(a) & (np.abs(a) < 2**62)
            ok &= np.where(ok, a, 0) == np.round(np.where(ok, a, 0))
        return np.where(ok, np.where(ok, a, 0).astype(np.int64), default).astype(np.int64)
    return np.array([safe_int(v, default) for v in a.tolist()], np.int64)


def float_column(col, n: int) -> np.ndarray:
    """A float64 column of ``n`` values; entries that are not numbers become NaN."""
    a = np.asarray(col)
    if a.shape != (n,):
        return np.full(n, np.nan)
    if a.dtype.kind in "iubf":
        return a.astype(np.float64)
    return np.array([safe_float(v) for v in a.tolist()], np.float64)


def header_value(header, key: str):
    """A header value fit for a metadata column (int, float, str or bool), or None (missing, undefined, odd)."""
    if header is None or key not in header:
        return None
    value = header[key]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer, float, np.floating, str)):
        return value
    return None


def flag(value, what: str) -> bool:
    """A yes/no flag from a header card, an HDF5 attribute or an NPZ entry (ValueError when it is neither)."""
    v = np.asarray(value)
    if v.size != 1:
        raise ValueError(f"{what} flag has {v.size} values; expected one boolean")
    v = v.reshape(()).item()
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    if isinstance(v, str):
        s = v.strip().upper()
        if s in ("T", "TRUE", "Y", "YES", "1"):
            return True
        if s in ("F", "FALSE", "N", "NO", "0", ""):
            return False
        raise ValueError(f"{what} flag {v!r} is not a boolean")
    if isinstance(v, (bool, int, float)) and (isinstance(v, bool) or v in (0, 1)):
        return bool(v)
    raise ValueError(f"{what} flag {v!r} is not a boolean")


def reader_message(exc: BaseException) -> str:
    """One line for an error raised by astropy while parsing a file, without astropy's advice on its own API."""
    import re

    from ..errors import oneline

    text = oneline(exc, 1000)
    if text.startswith("ERROR: Unable to guess table format"):
        return "no table layout fits it (ragged rows, mixed separators or stray quotes)"
    m = re.match(r"'utf-8' codec can't decode byte (0x[0-9a-f]+) in position (\d+)", text)
    if m:
        return f"not UTF-8 text (byte {m.group(1)} at offset {m.group(2)})"
    for pattern, repl in ((r"No SIMPLE card found.*", "no SIMPLE card: the primary header is damaged"),
                          (r"Header missing END card\.?", "a header has no END card"),
                          (r"Unparsable card \((\w+)\).*", r"unparsable header card \1"),
                          (r"Empty or corrupt FITS file", "empty or corrupt FITS file")):
        if re.fullmatch(pattern, text):
            return re.sub(pattern, repl, text)
    text = oneline(exc)
    if not isinstance(exc, (ValueError, OSError)):
        text = f"{type(exc).__name__}: {text}"
    return text
