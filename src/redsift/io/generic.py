"""Generic spectra: HDF5, NPZ, CSV and plain-text tables.

A generic file holds a wavelength array, a flux array and either an inverse
variance or a 1-sigma error array, under any of these (case-insensitive) names:

==========  ==================================================
wavelength  ``wave``, ``wavelength``, ``lambda``, ``lam``, ``loglam`` (log10 A)
flux        ``flux``
ivar        ``ivar``, ``inverse_variance``
error       ``error``, ``err``, ``sigma``, ``noise``, ``flux_err``
mask        ``mask`` (optional; non-zero = bad)
==========  ==================================================

``flux`` may be 1-D (one spectrum) or 2-D ``(nspec, npix)``; ``wave`` 1-D
(shared) or 2-D. Text files need a header line naming the columns (CSV, ECSV,
or whitespace-separated with a ``#`` header); a header-less table with three
columns is read as wavelength, flux, ivar. Wavelengths are taken as vacuum
Angstrom unless an ``air`` attribute/key is true (HDF5 attribute ``air`` or
NPZ key ``air``), in which case they are converted.
"""

from __future__ import annotations

import numpy as np

from ..grid import air_to_vacuum
from ..spectra import Spectra
from ._util import flag, numeric, reader_message
from .registry import FileInfo, register

__all__ = ["read_generic", "write_generic"]

WAVE_NAMES = ("wave", "wavelength", "lambda", "lam", "loglam")
FLUX_NAMES = ("flux",)
IVAR_NAMES = ("ivar", "inverse_variance")
ERR_NAMES = ("error", "err", "sigma", "noise", "flux_err")
TEXT_EXT = (".csv", ".txt", ".dat", ".ascii", ".tsv", ".ecsv", ".tbl")


def _find(names, candidates):
    low = {}
    for n in names:
        low.setdefault(n.lower(), []).append(n)
    for c in candidates:
        if c in low:
            if len(low[c]) > 1:  # 'flux' and 'FLUX': which one is meant cannot be known
                raise ValueError(f"{' and '.join(repr(n) for n in low[c])} are both present")
            return low[c][0]
    return None


def _has_columns(names) -> bool:
    def has(candidates):
        low = {n.lower() for n in names}
        return any(c in low for c in candidates)

    return has(WAVE_NAMES) and has(FLUX_NAMES) and (has(IVAR_NAMES) or has(ERR_NAMES))


def _hdf5_names(path):
    import h5py

    with h5py.File(path, "r") as f:
        return [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]


def _identify_hdf5(info: FileInfo) -> bool:
    return info.kind == "hdf5" and _has_columns(_hdf5_names(info.path))


def _identify_npz(info: FileInfo) -> bool:
    if info.kind != "npz":
        return False
    with np.load(info.path, allow_pickle=False) as z:
        return _has_columns(z.files)


def _read_text_table(path):
    from astropy.io import ascii
    from astropy.table import Table

    try:
        t = ascii.read(path, guess=True, fast_reader=False)
    except Exception as exc:
        raise ValueError(f"not a readable table ({reader_message(exc)})") from None
    if len(t) == 0:
        raise ValueError("the table has no data rows")
    names = t.colnames
    if not _has_columns(names):
        if len(names) == 3 and all(n.startswith("col") for n in names):
            t = Table([t[n] for n in names], names=("wave", "flux", "ivar"))
        else:
            raise ValueError(f"columns {names} do not include wavelength, flux and ivar or error")
    return t


def _header_names(path: str) -> list[str] | None:
    """Column names from a text table's header line, or None for a header-less numeric table."""
    import re

    with open(path, "r", errors="replace") as f:
        for line in f:
            text = line.strip().lstrip("#").strip()
            if not text or text.startswith("%ECSV") or text.startswith("---") or text.startswith("datatype"):
                continue
            fields = [x for x in re.split(r"[,\s]+", text) if x]
            try:
                [float(x) for x in fields]
                return None
            except ValueError:
                if line.lstrip().startswith("#") and not _has_columns(fields):
                    continue  # a comment line, keep looking
                return fields
    return []


def _identify_text(info: FileInfo) -> bool:
    if info.kind != "text" or not info.path.lower().endswith(TEXT_EXT):
        return False
    names = _header_names(info.path)
    return names is None or _has_columns(names)


def _array(get, name: str, ndim=(1, 2)) -> np.ndarray:
    a = numeric(get(name), f"{name!r}", ndim=ndim)
    return a.astype(np.float64) if a.dtype.kind != "f" else a


def _assemble(get, names, air: bool) -> Spectra:
    wname = _find(names, WAVE_NAMES)
    wave = _array(get, wname)
    if wname.lower() == "loglam":
        with np.errstate(over="ignore", invalid="ignore"):
            wave = 10.0 ** wave
    fname = _find(names, FLUX_NAMES)
    flux = np.atleast_2d(_array(get, fname, ndim=(0, 1, 2)))
    iname = _find(names, IVAR_NAMES)
    if iname is not None:
        ivar = np.atleast_2d(_array(get, iname, ndim=(0, 1, 2)))
    else:
        ename = _find(names, ERR_NAMES)
        err = np.atleast_2d(_array(get, ename, ndim=(0, 1, 2)))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ivar = np.where(err > 0, 1.0 / err**2, 0.0)
    mname = _find(names, ("mask",))
    mask = None if mname is None else np.atleast_2d(numeric(get(mname), f"{mname!r}", ndim=(0, 1, 2))) != 0
    if wave.ndim == 2 and wave.shape[0] == 1:
        wave = wave[0]
    if flux.shape != ivar.shape:
        raise ValueError(f"flux {flux.shape} and {'ivar' if iname else 'error'} {ivar.shape} differ in shape")
    if wave.shape not in (flux.shape[1:], flux.shape):
        raise ValueError(f"wavelengths {wave.shape} do not match flux {flux.shape} (one value per pixel)")
    if mask is not None and mask.shape != flux.shape:
        raise ValueError(f"mask {mask.shape} and flux {flux.shape} differ in shape")
    if air:
        with np.errstate(all="ignore"):
            wave = air_to_vacuum(wave)
    spectra = Spectra(wave, flux, ivar, mask)
    spectra.meta["SURVEY"] = ["generic"] * spectra.nspec
    spectra.meta["AIRTOVAC"] = [air] * spectra.nspec
    return spectra


def read_generic(info: FileInfo) -> Spectra:
    if info.kind == "hdf5":
        import h5py

        with h5py.File(info.path, "r") as f:
            names = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
            air = flag(f.attrs["air"], "air") if "air" in f.attrs else False
            return _assemble(lambda n: f[n][()], names, air)
    if info.kind == "npz":
        with np.load(info.path, allow_pickle=False) as z:
            air = flag(z["air"], "air") if "air" in z.files else False
            return _assemble(lambda n: z[n], z.files, air)
    t = _read_text_table(info.path)
    air = flag(t.meta["air"], "air") if "air" in t.meta else False
    return _assemble(lambda n: _filled(t[n]), t.colnames, air)


def _filled(col) -> np.ndarray:
    """A text-table column with empty cells as NaN (an empty wavelength or flux cell is not a zero)."""
    if getattr(col, "mask", None) is not None and np.any(col.mask):
        if col.dtype.kind in "iub":
            col = col.astype(np.float64)
        if col.dtype.kind == "f":
            return np.asarray(col.filled(np.nan))
    return np.asarray(col)


def write_generic(path, wave, flux, ivar, mask=None) -> None:
    """Write arrays as a generic HDF5 (``.h5``/``.hdf5``) or NPZ (``.npz``) spectrum file."""
    from ._util import atomic_path

    path = str(path)
    arrays = {"wave": np.asarray(wave), "flux": np.asarray(flux), "ivar": np.asarray(ivar)}
    if mask is not None:
        arrays["mask"] = np.asarray(mask, np.uint8)
    with atomic_path(path) as tmp:
        if path.endswith((".h5", ".hdf5")):
            import h5py

            with h5py.File(tmp, "w") as f:
                for k, v in arrays.items():
                    f.create_dataset(k, data=v)
        elif path.endswith(".npz"):
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        else:
            raise ValueError(f"{path}: write_generic writes .h5, .hdf5 or .npz")


register("generic-hdf5", _identify_hdf5, read_generic, survey="generic", priority=0,
         description="HDF5 with wave/flux/ivar (or error) datasets")
register("generic-npz", _identify_npz, read_generic, survey="generic", priority=0,
         description="NumPy .npz with wave/flux/ivar (or error) arrays")
register("generic-text", _identify_text, read_generic, survey="generic", priority=-1,
         description="CSV/ECSV/ASCII table with wave, flux, ivar (or error) columns")
