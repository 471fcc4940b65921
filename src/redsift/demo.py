"""Example spectra for the demo and for tests of other parts.

These are *illustrative* spectra: a power-law quasar continuum with Gaussian
broad lines, a galaxy with a 4000 A break and narrow lines, and a star with
Balmer absorption, on the BOSS grid with Gaussian noise. They exist so that
``make demo`` runs on a fresh machine; they are not the training simulator
(:mod:`redsift.simulate`), whose realism requirements are far stricter.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from .grid import LogGrid
from .spectra import Spectra

__all__ = ["example_spectra"]

_BROAD = {1215.67: (60.0, 3000.0), 1240.81: (8.0, 2500.0), 1549.06: (25.0, 4000.0), 1908.73: (20.0, 4000.0),
          2798.75: (30.0, 4000.0), 4862.68: (45.0, 3500.0), 6564.61: (200.0, 3000.0)}
_NARROW = {3728.48: 25.0, 4862.68: 8.0, 5008.24: 20.0, 6564.61: 30.0, 6585.27: 10.0}
_ABSORB = {3934.78: 0.35, 3969.59: 0.3, 4305.61: 0.15, 5176.7: 0.15, 5895.6: 0.15}


def _gauss(wave, center, fwhm_kms, ew):
    sigma = center * fwhm_kms / 2.998e5 / 2.3548
    return ew / (np.sqrt(2 * np.pi) * sigma) * np.exp(-0.5 * ((wave - center) / sigma) ** 2)


def example_spectra(seed: int = 0, snr: float = 8.0) -> tuple[Spectra, Table]:
    """Eight example spectra on the BOSS grid and their truth (CLASS, Z).

    Four quasars (z = 0.8, 1.6, 2.4, 3.2), a star-forming galaxy (z = 0.25),
    an A-type-like star, and two bad inputs: one with NaN flux in a region and
    one with zero inverse variance everywhere (NODATA).
    """
    rng = np.random.default_rng(seed)
    grid = LogGrid.boss()
    wave = grid.wave
    truth = Table({"CLASS": ["QSO", "QSO", "QSO", "QSO", "GALAXY", "STAR", "QSO", "QSO"],
                   "Z": [0.8, 1.6, 2.4, 3.2, 0.25, 0.0, 2.0, 1.2]})
    flux = np.zeros((len(truth), wave.size))
    for k, (cls, z) in enumerate(zip(truth["CLASS"], truth["Z"])):
        rest = wave / (1 + z)
        if cls == "QSO":
            f = (rest / 2000.0) ** -1.5
            for c, (ew, fwhm) in _BROAD.items():
                f = f + (rest / 2000.0) ** -1.5 * _gauss(rest, c, fwhm, ew)
            forest = rest < 1215.67
            f[forest] *= np.exp(-0.0018 * (1 + z) ** 3.92) * rng.uniform(0.3, 1.0, forest.sum())
        elif cls == "GALAXY":
            # a 4000 A break spread over 3850-4150 A, Ca II H and K, G band, Mg b and Na D absorption,
            # and star-forming emission lines of the usual equivalent widths ([O II] ~20 A, H-alpha ~15 A)
            f = np.interp(rest, [3850.0, 4150.0], [0.6, 1.0]) * (rest / 5000.0) ** 0.5
            for c, depth in _ABSORB.items():
                f = f * (1 - depth * np.exp(-0.5 * ((rest - c) / 6.0) ** 2))
            for c, ew in _NARROW.items():
                f = f + _gauss(rest, c, 200.0, ew) * 0.5
        else:
            f = (rest / 4000.0) ** -2.5
            for c in (3971.2, 4102.9, 4341.7, 4862.7, 6564.6):
                f = f * (1 - 0.5 * np.exp(-0.5 * ((rest - c) / 8.0) ** 2))
        flux[k] = 10 * f / np.median(f)
    sigma = np.abs(flux).mean(axis=1, keepdims=True) / snr * np.ones_like(flux)
    flux = flux + rng.normal(size=flux.shape) * sigma
    ivar = 1.0 / sigma**2
    flux[6, 1000:1100] = np.nan  # bad values
    ivar[7] = 0.0  # no data
    meta = Table({"PLATE": np.full(len(truth), 9999, np.int64), "MJD": np.full(len(truth), 60000, np.int64),
                  "FIBERID": np.arange(1, len(truth) + 1, dtype=np.int64),
                  "RA": rng.uniform(0, 360, len(truth)), "DEC": rng.uniform(-10, 60, len(truth)),
                  "OBJTYPE": ["QSO"] * 4 + ["GALAXY", "STAR", "QSO", "QSO"]})
    return Spectra(wave, flux, ivar, meta=meta), truth
