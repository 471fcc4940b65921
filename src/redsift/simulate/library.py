"""Spectral ingredients of the simulator, from template files or from built-in published values.

:class:`TemplateLibrary` loads what the template-driven mode uses from a
templates directory laid out like ``shared/data/templates`` (``--templates DIR``
or ``$REDSIFT_TEMPLATES``): the BOSS quasar PCA basis (``spEigenQSO``), the
123 BOSS stellar archetypes (``spEigenStar-55734``), the BOSS CV basis, the
redrock stellar bases with their archetype coefficients (individual real
stars), the redrock galaxy basis with its 750 archetypes, and the DESI
dark-sky spectrum and SDSS filter curves. Everything is resampled once onto
the simulator's rest-frame grid :data:`REST_GRID` (log10 step 1e-4,
450-12000 A).

Without a templates directory, :func:`load_library` returns a library with
``mode == "parametric"``: spectra are then built from a continuum plus the
published line lists in :mod:`redsift.simulate.parametric`, so the simulator
works on any machine (demo, tests of other parts). Released models are
trained in template mode only.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..grid import LogGrid

__all__ = ["REST_GRID", "TemplateLibrary", "load_library", "find_templates", "star_subclass"]

log = logging.getLogger(__name__)

#: Rest-frame grid of every source model: log10 step 1e-4 (the SDSS pixel), 450-12000 A.
REST_GRID = LogGrid.from_range(450.0, 12000.0, 1e-4, "center", "rest")


def find_templates(path=None) -> Path | None:
    """The templates directory: ``path``, else ``$REDSIFT_TEMPLATES``, else None (parametric mode)."""
    for cand in (path, os.environ.get("REDSIFT_TEMPLATES")):
        if cand:
            p = Path(cand)
            if not (p / "sdss").is_dir() and (p / "templates" / "sdss").is_dir():
                p = p / "templates"  # accept shared/data as well as shared/data/templates
            if not (p / "sdss").is_dir():
                from ..errors import RedsiftError

                raise RedsiftError(f"{cand}: not a templates directory (expected sdss/, redrock/, ...)")
            return p
    return None


def _loglin(path):
    from astropy.io import fits

    with fits.open(path, memmap=False) as h:
        data = np.asarray(h[0].data, np.float64)
        hdr = h[0].header
        loglam = hdr["COEFF0"] + hdr["COEFF1"] * np.arange(data.shape[-1])
        names = [hdr.get(f"NAME{i}", "") for i in range(data.shape[0])] if data.ndim == 2 else []
    return 10 ** loglam, data, names


def _redrock(path):
    from astropy.io import fits

    with fits.open(path, memmap=False) as h:
        hdr = h[0].header
        basis = np.asarray(h[0].data, np.float64)
        npix = basis.shape[-1]
        x = hdr["CRVAL1"] + hdr["CDELT1"] * np.arange(npix)
        wave = 10 ** x if hdr.get("LOGLAM", 0) else x
        coeff = None
        for hdu in h[1:]:
            if hdu.name == "ARCHETYPE_COEFF":
                coeff = np.asarray(hdu.data, np.float64)
    return wave, basis, coeff


def to_rest_grid(wave, flux) -> np.ndarray:
    """Resample spectra (rows of ``flux`` on ``wave``) onto :data:`REST_GRID`, flux-conserving; 0 outside."""
    from ..preprocess import rebin
    from ..spectra import Spectra

    flux = np.atleast_2d(flux)
    s = Spectra(wave, flux, np.ones_like(flux))
    out, ivar = rebin(s, REST_GRID)
    return np.where(ivar > 0, out, 0.0).astype(np.float32)


def star_subclass(name: str) -> tuple[str, str]:
    """Letter-level and fine subclass from an spEigenStar archetype name (e.g. ``'K5III (111335)'``)."""
    base = name.split("(")[0].strip()
    if base.startswith(("WD", "CalciumWD")) or "WD" in base:
        return "WD", base
    if base.startswith("Carbon"):
        return "C", "Carbon"
    if base.startswith("Ldwarf"):
        return "L", "L"
    if base.startswith("sd"):
        m = re.match(r"sd:?([OBAFGKM])", base)
        return (m[1] if m else "F"), base
    m = re.match(r"([OBAFGKM])", base)
    return (m[1] if m else "UNKNOWN"), base


#: DESI's nominal dark sky, r = 21.07 AB mag/arcsec^2 (3.73 nanomaggies/arcsec^2: the ``sky_nom`` of desispec's
#: effective-time calibration, the sky of the survey's 1,000 s dark-time depth; Schlafly et al. 2023, AJ 166, 259)
DARK_SKY_R = 22.5 - 2.5 * np.log10(3.73)


def sky_continuum(wave, lines, lib, r_mag: float = DARK_SKY_R) -> np.ndarray:
    """The dark-sky continuum under a sky-line spectrum, in the same units (1e-17 erg/s/cm2/A/arcsec2).

    ``desi_spec-sky.dat`` holds the sky *lines* only (95% of its pixels are zero, 4000-5000 A entirely): the
    continuum between them (airglow pseudo-continuum, zodiacal light, scattered starlight) is missing. It is
    added here as a spectrum flat in f_nu, scaled so that lines + continuum have the nominal dark-sky
    brightness ``r_mag`` through the SDSS r band (:func:`~redsift.simulate.instrument.band_flux`: the
    library's filter curve, or a top-hat); flat in f_nu the continuum is r + 0.8 mag fainter than the whole
    sky, g ~ 21.9 with the lines, near the dark skies quoted for Apache Point and Kitt Peak.
    """
    from .instrument import band_flux

    wave = np.asarray(wave, float)
    ref = 2.998e18 * 3631e-23 / wave**2 * 1e17  # a 0-mag AB source, flat in f_nu
    line_part, ref_part = band_flux(wave, np.stack([np.clip(lines, 0, None), ref]), lib, "r")
    a = 10 ** (-0.4 * r_mag) - line_part / ref_part
    if a <= 0:
        import logging

        logging.getLogger(__name__).warning("sky lines alone are brighter than r = %.2f mag/arcsec^2: no continuum "
                                            "added (the line-free pixels keep 1%% of the nominal sky)", r_mag)
        a = 0.01 * 10 ** (-0.4 * r_mag)
    return a * ref


def load_sky(lib, root) -> None:
    """The SDSS filter curves and the dark sky (lines + :func:`sky_continuum`) of templates directory ``root``
    into ``lib`` (left empty where the files are absent)."""
    root = Path(root)
    for band in ("g", "r", "i"):
        gf = root.parent / "sky" / "sdss_filters" / f"sdss2010-{band}.ecsv"
        if gf.exists():
            from astropy.table import Table

            t = Table.read(gf)
            lib.filters[band] = (np.asarray(t["wavelength"], float), np.asarray(t["response"], float))
    lib.gfilter = lib.filters.get("g")
    sky = root.parent / "sky" / "desi_spec-sky.dat"
    if sky.exists():
        t = np.loadtxt(sky)
        lib.sky_wave, lib.sky_flux = t[:, 0], t[:, 1] + sky_continuum(t[:, 0], t[:, 1], lib)


@dataclass
class TemplateLibrary:
    """Source spectra on :data:`REST_GRID` (rows) with their labels."""

    mode: str
    path: str = ""
    qso_eigen: np.ndarray | None = None  # (k, npix) BOSS quasar PCA basis; row 0 is the mean quasar
    qso_z: np.ndarray | None = None  # redshifts of the quasars behind the basis
    stars: np.ndarray | None = None  # (nstar, npix)
    star_class: list = field(default_factory=list)  # letter-level subclass
    star_subclass: list = field(default_factory=list)  # finer
    star_native: np.ndarray | None = None  # True: already at BOSS resolution
    galaxies: np.ndarray | None = None  # (ngal, npix)
    sky_wave: np.ndarray | None = None
    sky_flux: np.ndarray | None = None  # 1e-17 erg/s/cm2/A/arcsec2
    gfilter: tuple | None = None  # (wave, response) of SDSS g
    filters: dict = field(default_factory=dict)  # band -> (wave, response): SDSS g, r, i


#: archetypes built and resampled at once while loading (bounds the loading's memory)
_CHUNK = 50


def _in_chunks(coeff, basis):
    """The archetype spectra ``coeff @ basis``, ``_CHUNK`` at a time: at the templates' native resolution the
    whole set at once peaked at ~3.7 GB while loading (the library itself holds ~0.2 GB)."""
    for c0 in range(0, len(coeff), _CHUNK):
        yield coeff[c0:c0 + _CHUNK] @ basis


def load_library(path=None, max_stars_per_basis: int = 400, seed: int = 0) -> TemplateLibrary:
    """Load the template library (template mode), or a parametric one when no directory is given."""
    root = find_templates(path)
    if root is None:
        from .parametric import parametric_library

        return parametric_library()
    rng = np.random.default_rng(seed)
    lib = TemplateLibrary(mode="templates", path=str(root))
    from astropy.io import fits

    w, eig, _ = _loglin(root / "sdss" / "spEigenQSO-55732.fits")
    lib.qso_eigen = to_rest_grid(w, eig)
    with fits.open(root / "sdss" / "spEigenQSO-55732.fits") as h:
        lib.qso_z = np.asarray(h[1].data["REDSHIFT"], float)

    stars, cls, sub, native = [], [], [], []
    w, arch, names = _loglin(root / "sdss" / "spEigenStar-55734.fits")
    stars.append(to_rest_grid(w, arch))
    for n in names:
        c, s = star_subclass(n)
        cls.append(c)
        sub.append(s)
    native += [True] * len(names)
    w, cv, _ = _loglin(root / "sdss" / "spEigenCVstar-55734.fits")
    # CVs: the mean CV plus +-0.5 of each further basis vector
    combos = [cv[0]] + [cv[0] + s * 0.5 * cv[k] for k in range(1, cv.shape[0]) for s in (-1, 1)]
    stars.append(to_rest_grid(w, np.array(combos)))
    cls += ["CV"] * len(combos)
    sub += ["CV"] * len(combos)
    native += [True] * len(combos)
    # rrtemplate-STAR-A-v0.1.fits, rrtemplate-star-Carbon.fits: the archetype coefficient sets rebuild
    # individual real stars (coeff @ basis). The match is case-insensitive: until 2026-11-29 a
    # case-sensitive "*tar*" matched none of the STAR files, and every model trained on 128 stars.
    starfiles = [f for f in (root / "redrock").glob("rrtemplate-*.fits") if f.stem.split("-")[1].upper() == "STAR"]
    for f in sorted(starfiles):
        letter = f.stem.split("-")[2]
        wave, basis, coeff = _redrock(f)
        if coeff is None and basis.shape[0] == 1:  # Carbon, Ldwarf: one spectrum, no archetype set
            parts = [basis]
        elif coeff is None:  # a PCA basis without archetypes (CV): not individual stars
            continue
        else:
            pick = rng.choice(len(coeff), size=min(max_stars_per_basis, len(coeff)), replace=False)
            parts = _in_chunks(coeff[np.sort(pick)], basis)
        ngood = 0
        for part in parts:
            good = np.all(np.isfinite(part), axis=1) & (np.median(part, axis=1) > 0)
            # PCA reconstructions dip slightly below zero where a cool star has almost no flux (M: the blue
            # end): a small positive floor keeps those pixels "covered" and physical
            part = np.maximum(part, 1e-4 * np.median(np.abs(part), axis=1, keepdims=True))
            if good.any():
                stars.append(to_rest_grid(wave, part[good]))
            ngood += int(good.sum())
        label = {"Carbon": "C", "Ldwarf": "L"}.get(letter, letter)
        cls += [label] * ngood
        sub += [f"{label} (redrock archetype)"] * ngood
        native += [False] * ngood
    lib.stars = np.concatenate(stars)
    lib.star_class, lib.star_subclass, lib.star_native = cls, sub, np.array(native)

    wave, basis, coeff = _redrock(root / "redrock" / "rrtemplate-galaxy-legacy.fits")
    gals = []
    for gal in _in_chunks(coeff, basis):
        good = np.all(np.isfinite(gal), axis=1) & (np.median(gal, axis=1) > 0)
        if good.any():
            gals.append(to_rest_grid(wave, gal[good]))
    lib.galaxies = np.concatenate(gals)

    load_sky(lib, root)
    log.info("template library from %s: %d stars, %d galaxies", root, len(lib.stars), len(lib.galaxies))
    return lib
