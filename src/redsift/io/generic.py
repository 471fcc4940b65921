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
from .registry import FileInfo, register

__all__ = ["read_generic", "write_generic"]

WAVE_NAMES = ("wave", "wavelength", "lambda", "lam", "loglam")
FLUX_NAMES = ("flux",)
IVAR_NAMES = ("ivar", "inverse_variance")
ERR_NAMES = ("error", "err", "sigma", "noise", "flux_err")
TEXT_EXT = (".csv", ".txt", ".dat", ".ascii", ".tsv", ".ecsv", ".tbl")


def _find(names, candidates):
    low = {n.lower(): n for n in names}
    for c in candidates:
        if c in low:
            return low[c]
    return None


def _has_columns(names) -> bool:
    return (_find(names, WAVE_NAMES) is not None and _find(names, FLUX_NAMES) is not None
            and (_find(names, IVAR_NAMES) is not None or _find(names, ERR_NAMES) is not None))


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
        raise ValueError(f"not a readable table ({exc})") from None
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


def _assemble(get, names, air: bool) -> Spectra:
    wname = _find(names, WAVE_NAMES)
    wave = np.asarray(get(wname), np.float64)
    if wname.lower() == "loglam":
        wave = 10.0 ** wave
    flux = np.atleast_2d(np.asarray(get(_find(names, FLUX_NAMES)), np.float64))
    iname = _find(names, IVAR_NAMES)
    if iname is not None:
        ivar = np.atleast_2d(np.asarray(get(iname), np.float64))
    else:
        err = np.atleast_2d(np.asarray(get(_find(names, ERR_NAMES)), np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            ivar = np.where(err > 0, 1.0 / err**2, 0.0)
    mname = _find(names, ("mask",))
    mask = None if mname is None else np.atleast_2d(np.asarray(get(mname))) != 0
    if wave.ndim == 2 and wave.shape[0] == 1:
        wave = wave[0]
    if air:
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
            air = bool(f.attrs.get("air", False))
            return _assemble(lambda n: f[n][()], names, air)
    if info.kind == "npz":
        with np.load(info.path, allow_pickle=False) as z:
            air = bool(z["air"]) if "air" in z.files else False
            return _assemble(lambda n: z[n], z.files, air)
    t = _read_text_table(info.path)
    return _assemble(lambda n: np.asarray(t[n]), t.colnames, bool(t.meta.get("air", False)))


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
