"""The built-in parametric library: continua plus published line lists, no template files needed.

Used when no templates directory is available (fresh machines, the demo, tests
of other parts). Quasars: a broken power law (Vanden Berk et al. 2001:
alpha_lambda = -1.54 below 4661 A, -0.42 above) with the main broad and narrow
lines of the Vanden Berk et al. 2001 composite (their table 2: rest
wavelength, equivalent width, width), and the mean Lyman-alpha forest of
Faucher-Giguere et al. 2008 for a quasar at z = 2.4. Stars: Planck continua of
the MK-class temperatures with the strongest absorption lines (Balmer series,
Ca II H&K, Mg b, Na D, TiO bands for M). Galaxies: a passive template (4000 A
break, absorption lines) and a star-forming one (blue continuum, nebular
lines). Sky: a smooth continuum plus the bright lines of
:data:`redsift.preprocess.SKY_LINES` and an OH forest red-ward of 6800 A.
"""

from __future__ import annotations

import numpy as np

from ..preprocess import SKY_LINES
from .library import REST_GRID, TemplateLibrary

__all__ = ["parametric_library", "QSO_LINES", "tau_eff"]

#: (name, rest vacuum wavelength A, rest EW A, FWHM km/s) from Vanden Berk et al. 2001, table 2
QSO_LINES = [
    ("Lya", 1215.67, 92.9, 4800), ("NV", 1240.81, 23.0, 3500), ("SiIV+OIV]", 1399.8, 8.1, 5500),
    ("CIV", 1549.06, 23.8, 4600), ("HeII", 1640.4, 1.0, 3000), ("CIII]", 1908.73, 21.2, 5000),
    ("MgII", 2798.75, 32.3, 4000), ("[NeV]", 3426.8, 1.2, 900), ("[OII]", 3728.5, 1.6, 700),
    ("Hdelta", 4102.9, 5.1, 3000), ("Hgamma", 4341.7, 12.6, 3000), ("Hbeta", 4862.7, 46.2, 3500),
    ("[OIII]4960", 4960.3, 3.5, 800), ("[OIII]5008", 5008.2, 13.2, 800), ("HeI", 5877.3, 6.5, 3000),
    ("Halpha", 6564.6, 194.5, 3000), ("[SII]", 6725.0, 3.0, 700),
]


def tau_eff(z):
    """Effective Lyman-alpha optical depth, Faucher-Giguere et al. 2008: 0.0018 (1+z)^3.92."""
    return 0.0018 * (1.0 + np.asarray(z, float)) ** 3.92


def _gauss(wave, center, fwhm_kms):
    sigma = center * fwhm_kms / 299792.458 / 2.3548
    return np.exp(-0.5 * ((wave - center) / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)


def _mean_quasar(wave, z_ref=2.4):
    cont = np.where(wave < 4661, (wave / 4661) ** -1.54, (wave / 4661) ** -0.42)
    spec = cont.copy()
    for _, c, ew, fwhm in QSO_LINES:
        spec += ew * np.interp(c, wave, cont) * _gauss(wave, c, fwhm)
    forest = wave < 1215.67
    zabs = (1 + z_ref) * wave[forest] / 1215.67 - 1
    spec[forest] *= np.exp(-tau_eff(zabs))
    spec[wave < 912] *= 0.5  # mean Lyman-limit absorption of a z~2.4 sightline
    return spec


def _planck(wave, T):
    x = 1.4388e8 / (wave * T)
    return 1.0 / (wave**5 * np.expm1(np.clip(x, 1e-6, 700)))


_STAR_T = {"O": 35000, "B": 18000, "A": 9000, "F": 6800, "G": 5700, "K": 4500, "M": 3300, "L": 2000,
           "WD": 15000, "C": 3000, "CV": 12000}
_BALMER = [6564.6, 4862.7, 4341.7, 4102.9, 3971.2, 3890.2]
_METALS = [(3934.8, "CaK"), (3969.6, "CaH"), (5175.4, "Mgb"), (5891.6, "NaD"), (8544.4, "CaT")]


def _star(wave, cls, rng):
    T = _STAR_T[cls] * rng.uniform(0.9, 1.1)
    f = _planck(wave, T)
    f /= np.median(f)
    depth_h = {"A": 0.6, "B": 0.4, "F": 0.35, "WD": 0.7, "O": 0.15, "G": 0.15, "K": 0.1}.get(cls, 0.05)
    width_h = 25.0 if cls == "WD" else 8.0
    for c in _BALMER:
        f *= 1 - depth_h * np.exp(-0.5 * ((wave - c) / width_h) ** 2)
    depth_m = {"G": 0.5, "K": 0.6, "M": 0.5, "F": 0.35, "C": 0.4, "L": 0.3}.get(cls, 0.05)
    for c, _ in _METALS:
        f *= 1 - depth_m * np.exp(-0.5 * ((wave - c) / 5.0) ** 2)
    if cls in ("M", "L"):
        for band in (4955, 5167, 5448, 6159, 6651, 7054, 7589, 8432):  # TiO band heads
            f *= np.where((wave > band) & (wave < band + 120), 0.55, 1.0)
    if cls == "C":
        for band in (4737, 5165, 5636, 6192):  # C2 Swan bands
            f *= np.where((wave > band - 150) & (wave < band), 0.6, 1.0)
    if cls == "CV":
        for c in _BALMER[:4] + [4687.0, 5877.3]:  # emission lines
            f += 0.8 * np.exp(-0.5 * ((wave - c) / 15.0) ** 2)
    return f


def _galaxy(wave, kind, rng):
    if kind == "passive":
        f = np.where(wave < 4000, 0.45, 1.0) * (wave / 5000) ** 0.6
        for c, _ in _METALS[:4]:
            f *= 1 - 0.4 * np.exp(-0.5 * ((wave - c) / 6.0) ** 2)
        f *= 1 - 0.2 * np.exp(-0.5 * ((wave - 4304.4) / 10.0) ** 2)  # G band
    else:
        f = (wave / 5000) ** -0.5 * np.where(wave < 4000, 0.8, 1.0)
        for c, ew in ((3728.5, 30), (4862.7, 10), (4960.3, 5), (5008.2, 15), (6564.6, 40), (6585.3, 12),
                      (6718.3, 6), (6732.7, 5)):
            f += ew * rng.uniform(0.5, 1.5) * _gauss(wave, c, 150.0) * np.interp(c, wave, f)
    return f / np.median(f[(wave > 4000) & (wave < 8000)])


def _sky(wave):
    cont = 0.6 + 0.9 * (wave / 10000.0) ** 2
    lines = np.zeros_like(wave)
    strengths = np.where(SKY_LINES > 6800, 60.0, 25.0)
    strengths[SKY_LINES == 5578.9] = 300.0
    for c, a in zip(SKY_LINES, strengths):
        lines += a * np.exp(-0.5 * ((wave - c) / 1.2) ** 2) / (np.sqrt(2 * np.pi) * 1.2)
    rng = np.random.default_rng(1)
    oh = np.sort(rng.uniform(6800, 10400, 180))
    for c, a in zip(oh, rng.lognormal(2.5, 0.8, oh.size)):
        lines += a * np.exp(-0.5 * ((wave - c) / 1.2) ** 2) / (np.sqrt(2 * np.pi) * 1.2)
    return cont + lines


def parametric_library(seed: int = 0) -> TemplateLibrary:
    """A :class:`TemplateLibrary` built from the published values above (``mode == "parametric"``)."""
    rng = np.random.default_rng(seed)
    w = REST_GRID.wave
    lib = TemplateLibrary(mode="parametric")
    lib.qso_eigen = _mean_quasar(w)[None, :].astype(np.float32)
    lib.qso_z = np.array([2.4])
    stars, cls = [], []
    for c in ("O", "B", "A", "F", "G", "K", "M", "L", "WD", "C", "CV"):
        for _ in range(6):
            stars.append(_star(w, c, rng))
            cls.append(c)
    lib.stars = np.array(stars, np.float32)
    lib.star_class = cls
    lib.star_subclass = [f"{c} (parametric)" for c in cls]
    lib.star_native = np.zeros(len(cls), bool)
    lib.galaxies = np.array([_galaxy(w, k, rng) for k in ["passive"] * 6 + ["starforming"] * 6], np.float32)
    sw = np.arange(3500.0, 10500.0, 0.2)
    lib.sky_wave, lib.sky_flux = sw, _sky(sw)
    return lib
