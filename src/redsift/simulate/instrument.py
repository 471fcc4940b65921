"""Survey instruments: wavelength grids, resolution, sky, throughput, noise, calibration and masks.

Noise model, per pixel, in the survey's flux unit (1e-17 erg/s/cm2/A):
``var = (F + S) / G + RN2 / G**2`` with ``F`` the object, ``S`` the sky in the
fibre (the DESI dark-sky lines plus the continuum between them, r = 21.07 mag/arcsec^2:
:func:`~redsift.simulate.library.sky_continuum`; x fibre area x a moon/airmass factor), ``G`` the
counts per flux unit per pixel (``gain0`` x throughput(lambda) x pixel width)
and ``RN2`` the read-noise variance in counts. The pipeline's ``ivar`` is
``1/var`` of the noise-free model, except near sky lines, where the true
noise is larger than the reported one and a sky-subtraction residual is
left (0.5% of the line flux, a random sign and size per spectrum), as in
real BOSS and DESI spectra. Each survey's ``gain0`` is set against its published depth at nominal
conditions (``scripts/calibrate_depth.py``), and ``G`` varies from spectrum to spectrum (seeing, fibre
placement, exposure depth: log-normal, 0.25 in ln):

- BOSS: plates are observed until (S/N)^2 per pixel reaches ~10 at fibre2 g = 22 (Dawson et al. 2013,
  AJ 145, 10), i.e. S/N ~3.2 at PSF g ~21.2 for a point source; ``gain0 = 62`` gives a median S/N of 3.1
  at g = 21.0-21.5 for simulated quasars (docs/simulation.md; the SDSS pipeline's SN_MEDIAN_ALL against
  PSF g on the quasars of a whole BOSS plate, spAll-plate3655, agrees within its scatter).
- DESI: the dark-time 1,000 s effective exposure detects an [OII] doublet of ~9e-17 erg/s/cm2 at S/N 7
  (science requirement L3.1.3, DESI-doc-3977: 10, 9, 9, 8, 9 x 1e-17 over 0.6 < z < 1.6): ``gain0 = 30``
  gives a median limit of 9.0e-17 for a point source.
- LAMOST: no published depth of the survey as run could be confirmed; ``gain0 = 3.4`` keeps the depth the
  simulator had before the sky continuum was fixed (S/N 8.2 per pixel over the g band at g = 17.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, median_filter

from ..grid import LogGrid, pixel_edges
from .library import REST_GRID, TemplateLibrary
from .physics import ccm_extinction

__all__ = ["Survey", "SURVEYS", "observe", "sample_magnitudes", "nominal_gain"]


@dataclass(frozen=True)
class Survey:
    """One survey's instrument (see the module docstring)."""

    name: str
    wmin: float
    wmax: float
    dloglam: float | None  # log grids (BOSS, LAMOST)
    dlambda: float | None  # linear grids (DESI)
    resolution: tuple  # ((wmax_of_range, R), ...) in increasing wavelength
    fibre_area: float  # arcsec^2
    gain0: float  # counts per 1e-17 erg/s/cm2/A per A at the throughput peak
    read_noise2: float  # counts^2 per pixel
    dichroic: float | None
    fibre_offset_4000: bool  # BOSS quasar targets: fibres placed for 4000 A light
    overlaps: tuple = ()  # wavelength ranges seen by two arms (DESI)
    telluric: float = 0.08  # rms of the telluric residual left by the pipeline's correction (fraction of
    #                         the full band depth); None: not corrected (LAMOST LRS: the bands stay in)

    @property
    def wave(self) -> np.ndarray:
        if self.dloglam:
            return LogGrid.from_range(self.wmin, self.wmax, self.dloglam).wave
        return np.arange(self.wmin, self.wmax + 0.5 * self.dlambda, self.dlambda)

    @property
    def grid(self) -> LogGrid | None:
        if self.dloglam:
            return LogGrid.from_range(self.wmin, self.wmax, self.dloglam, name=f"{self.name}-native")
        return None

    def pixel_width(self, wave) -> np.ndarray:
        return wave * np.log(10) * self.dloglam if self.dloglam else np.full_like(wave, self.dlambda)

    def sigma_pix(self, wave) -> np.ndarray:
        """Gaussian LSF sigma in pixels, from the resolving power R(lambda)."""
        R = np.full_like(wave, self.resolution[-1][1], dtype=float)
        for wmax, r in reversed(self.resolution):
            R = np.where(wave <= wmax, r, R)
        return wave / R / 2.3548 / self.pixel_width(wave)


SURVEYS = {
    # BOSS: 3600-10400 A at 1e-4 in log10, R ~ 1560-2650 (Smee et al. 2013), 2" fibres, 4 x 15 min
    "boss": Survey("boss", 3600.0, 10400.0, 1e-4, None, ((4500, 1600), (6000, 2000), (10400, 2400)),
                   np.pi * 1.0**2, 62.0, 60.0, 6000.0, True),
    # DESI: three arms merged, 3600-9824 A at 0.8 A, R ~ 2000-3200 (B), 3200-4100 (R), 4100-5100 (Z)
    "desi": Survey("desi", 3600.0, 9824.0, None, 0.8, ((5800, 2600), (7600, 3600), (9824, 4600)),
                   np.pi * 0.75**2, 30.0, 40.0, None, False, ((5760.0, 5930.0), (7520.0, 7620.0))),
    # LAMOST LRS: 3700-9100 A at 1e-4 in log10, R ~ 1800, 3.3" fibres
    "lamost": Survey("lamost", 3700.0, 9100.0, 1e-4, None, ((9100, 1800),), np.pi * 1.65**2, 3.4, 80.0,
                     5900.0, False, telluric=None),
}

#: Magnitude ranges (g, AB) and number-count slopes dlogN/dm of each class per survey: BOSS quasar
#: targets (g <= 22, Ross et al. 2012; ~10% brighter than 19.5, ~1/3 fainter than 21.5) and their
#: contaminants; DESI QSO targets (r < 23);
#: LAMOST's bright stars.
_MAGS = {
    "boss": {"QSO": (18.0, 22.0, 0.35), "STAR": (17.5, 22.0, 0.3), "GALAXY": (20.0, 22.5, 0.3)},
    "desi": {"QSO": (19.5, 23.3, 0.35), "STAR": (17.0, 22.5, 0.3), "GALAXY": (20.5, 23.5, 0.3)},
    "lamost": {"QSO": (16.5, 19.5, 0.4), "STAR": (12.0, 18.0, 0.25), "GALAXY": (15.0, 18.5, 0.4)},
}


def sample_magnitudes(survey: str, cls: str, n: int, rng) -> np.ndarray:
    """g magnitudes drawn from dN/dm ~ 10^(slope m) on the class's range for that survey."""
    lo, hi, slope = _MAGS[survey][cls]
    u = rng.uniform(size=n)
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return np.log10(a + u * (b - a)) / slope


#: Top-hat stand-ins for the SDSS bands when no filter curves are available (Angstrom).
_TOPHAT = {"g": (4000.0, 5500.0), "r": (5500.0, 6900.0), "i": (6900.0, 8400.0)}
#: AB flux density (1e-17 erg/s/cm2/A) of a 0-mag flat-f_nu source at each band's effective wavelength.
_ZP = {"g": 4.785e8, "r": 2.842e8, "i": 1.912e8}


def band_flux(wave, flux, lib: TemplateLibrary, band: str = "g"):
    """Photon-weighted mean flux density through an SDSS band (filter curve, or a top-hat)."""
    if band in lib.filters:
        resp = np.interp(wave, lib.filters[band][0], lib.filters[band][1], left=0, right=0)
    else:
        lo, hi = _TOPHAT[band]
        resp = ((wave > lo) & (wave < hi)).astype(float)
    w = resp * wave  # photon-counting weight
    return (flux * w[None, :]).sum(axis=1) / max(w.sum(), 1e-30)


def _redshift_to(wave_obs, rest, z):
    """Rest spectra on REST_GRID -> observed grid for redshifts z (linear interpolation in log lambda)."""
    x = (np.log10(wave_obs)[None, :] - np.log10(1 + z)[:, None] - REST_GRID.loglam0) / REST_GRID.dloglam
    i0 = np.floor(x).astype(np.int64)
    f = (x - i0).astype(np.float32)
    ok = (i0 >= 0) & (i0 < REST_GRID.npix - 1)
    i0 = np.clip(i0, 0, REST_GRID.npix - 2)
    rows = np.arange(rest.shape[0])[:, None]
    out = rest[rows, i0] * (1 - f) + rest[rows, i0 + 1] * f
    covered = ok & (rest[rows, i0] != 0) & (rest[rows, i0 + 1] != 0)
    return np.where(covered, out, 0).astype(np.float32), covered


def _convolve_lsf(flux, sigma_pix):
    """Gaussian LSF with a sigma that varies slowly along the spectrum (three-segment blend)."""
    levels = np.quantile(sigma_pix, [0.1, 0.5, 0.9])
    smoothed = [gaussian_filter1d(flux, s, axis=1, mode="nearest") for s in levels]
    out = np.empty_like(flux)
    w = np.clip((sigma_pix - levels[0]) / max(levels[1] - levels[0], 1e-9), 0, 1)
    w2 = np.clip((sigma_pix - levels[1]) / max(levels[2] - levels[1], 1e-9), 0, 1)
    out[:] = smoothed[0] * (1 - w) + smoothed[1] * w
    out[:] = np.where(sigma_pix > levels[1], smoothed[1] * (1 - w2) + smoothed[2] * w2, out)
    return out


_SKY = {}


def _sky_model(survey: Survey, wave, lib: TemplateLibrary):
    """Sky in the fibre on the survey grid at the survey resolution, and its running-median
    continuum (the part between the lines); computed once per survey and library."""
    key = (survey.name, id(lib))
    if key not in _SKY:
        # averaged over each pixel (0.1 A lines point-sampled would be missed or over-counted); the line-free
        # pixels keep the continuum (library.sky_continuum), never interpolated across; beyond the tabulated
        # range the nearest values
        sw, sf = np.asarray(lib.sky_wave, float), np.asarray(lib.sky_flux, float)
        cum = np.concatenate([[0.0], np.cumsum(0.5 * (sf[1:] + sf[:-1]) * np.diff(sw))])
        edges = pixel_edges(wave)
        inside = (edges[:-1] >= sw[0]) & (edges[1:] <= sw[-1])
        avg = np.diff(np.interp(edges, sw, cum)) / np.diff(edges)
        sky = np.where(inside, avg, np.interp(wave, sw, sf))
        sky = gaussian_filter1d(sky, float(np.median(survey.sigma_pix(wave)))) * survey.fibre_area
        _SKY[key] = (sky.astype(np.float32), median_filter(sky, size=101).astype(np.float32))
    return _SKY[key]


def nominal_gain(survey: Survey, wave, gain0: float | None = None) -> np.ndarray:
    """Counts per flux unit per pixel at nominal conditions: ``gain0`` x throughput x pixel width, doubled
    where two arms see the same wavelengths (``gain0``: the survey's unless given)."""
    wave = np.asarray(wave, float)
    G = (survey.gain0 if gain0 is None else gain0) * _throughput(wave) * survey.pixel_width(wave)
    for lo, hi in survey.overlaps:
        G = np.where((wave >= lo) & (wave <= hi), 2 * G, G)
    return G


def _throughput(wave):
    """Smooth end-to-end throughput shape (atmosphere, telescope, spectrograph, CCD), peak 1 near 6000 A."""
    t = np.exp(-0.5 * (np.log(wave / 6200.0) / 0.32) ** 2)
    return t * (1 - 0.6 * np.exp(-0.5 * ((wave - 7600.0) / 25.0) ** 2)) * (1 - 0.3 * np.exp(-0.5 * ((wave - 6880.0) / 20.0) ** 2))


#: Telluric bands at R ~ 2000 (centre, half-width, edge sigma in A, optical depth at airmass 1): O2 gamma,
#: B and A bands, H2O at 7200, 8200 and 9300-9650 A (approximate depths read off a standard atmosphere
#: transmission at this resolution; a smooth box per band).
TELLURIC_BANDS = ((6290.0, 10.0, 3.0, 0.05), (6875.0, 14.0, 3.0, 0.3), (7640.0, 45.0, 4.0, 0.7),
                  (7250.0, 90.0, 20.0, 0.12), (8230.0, 110.0, 25.0, 0.1), (9400.0, 300.0, 40.0, 0.35))


def telluric_depth(wave) -> np.ndarray:
    """Optical depth of the telluric bands at airmass 1 (:data:`TELLURIC_BANDS`) on ``wave``."""
    from scipy.special import erf

    wave = np.asarray(wave, float)
    tau = np.zeros_like(wave)
    for c, hw, edge, depth in TELLURIC_BANDS:
        tau += depth * 0.5 * (erf((wave - (c - hw)) / (np.sqrt(2) * edge)) - erf((wave - (c + hw)) / (np.sqrt(2) * edge)))
    return tau


def observe(rest, z, native_res, survey: Survey, lib: TemplateLibrary, mags, rng, absorber=None, bands=None):
    """Observe rest-frame spectra with a survey's instrument.

    ``mags`` are AB magnitudes in ``bands`` (per object; default g). ``absorber(wave, flux)``, when given, is applied
    to the redshifted noise-free spectra before the instrument (intergalactic absorption) and may return
    truth columns. Returns ``wave, flux, ivar, mask, extras`` where
    ``extras`` holds those columns, the Galactic E(B-V) and the flux-scale factor.
    """
    wave = survey.wave
    n = rest.shape[0]
    flux, covered = _redshift_to(wave, rest, z)
    extras = {}
    if absorber is not None:  # absorption along the line of sight, on the observed grid
        extras = absorber(wave, flux) or {}
    # instrumental resolution for sources not already at the survey's resolution
    sig = survey.sigma_pix(wave)
    hires = ~np.asarray(native_res, bool)
    if hires.any():
        flux[hires] = _convolve_lsf(flux[hires], sig)
    # flux calibration: smooth wiggles (Legendre, 3%), the BOSS 4000 A fibre offset, the dichroic
    x = 2 * (wave - wave[0]) / (wave[-1] - wave[0]) - 1
    leg = np.stack([np.polynomial.legendre.Legendre.basis(k)(x) for k in (1, 2, 3)])
    calib = (1 + rng.normal(0, 0.03, (n, 3)) @ leg).astype(np.float32)
    if survey.fibre_offset_4000:
        ramp = np.clip((5000 - wave) / 1400.0, 0, 1)
        calib *= 1 + rng.normal(0.08, 0.08, n)[:, None] * ramp[None, :]
    if survey.dichroic:
        bump = np.exp(-0.5 * ((wave - survey.dichroic) / 40.0) ** 2)
        step = 1 / (1 + np.exp(-(wave - survey.dichroic) / 15.0))
        calib *= 1 + rng.normal(0, 0.03, n)[:, None] * bump + rng.normal(0, 0.015, n)[:, None] * step
    # telluric absorption: what the pipeline's correction leaves (a residual of either sign, BOSS and
    # DESI), or the whole bands at airmass 1-1.6 where the pipeline does not correct them (LAMOST)
    tau = telluric_depth(wave)[None, :].astype(np.float32)
    if survey.telluric is None:
        airmass = rng.uniform(1.0, 1.6, n).astype(np.float32)[:, None]
        calib *= np.exp(-tau * airmass)
    else:
        calib *= np.exp(-tau * rng.normal(0, survey.telluric, n).astype(np.float32)[:, None])
    ebv = rng.exponential(0.04, n)
    flux *= calib
    flux *= (10 ** (-0.4 * ccm_extinction(wave, ebv))).astype(np.float32)
    # flux scale from the magnitude in each object's selection band (g; r or i for high-z quasars,
    # which are g- or r-dropouts)
    bands = np.broadcast_to(np.asarray(bands if bands is not None else "g"), (n,))
    scale = np.zeros(n)
    mags = np.asarray(mags, float)
    for band in np.unique(bands):
        sel = bands == band
        target = _ZP[band] * 10 ** (-0.4 * mags[sel])
        measured = band_flux(wave, flux[sel], lib, band)
        level = np.median(np.abs(flux[sel]), axis=1)
        ok = measured > 1e-3 * np.maximum(level, 1e-30)  # a band with (almost) no flux cannot set the scale
        scale[sel] = np.where(ok, target / np.where(ok, measured, 1.0), 0.0)
    flux *= scale.astype(np.float32)[:, None]

    sky_mean, sky_cont = _sky_model(survey, wave, lib)
    level = rng.lognormal(0, 0.2, n).astype(np.float32)[:, None]  # moon, airmass, observing conditions
    sky = sky_mean[None, :] * level
    G = nominal_gain(survey, wave).astype(np.float32)
    G = G[None, :] * rng.lognormal(0, 0.25, n).astype(np.float32)[:, None]  # depth of each exposure
    var = (np.clip(flux, 0, None) + sky) / G + survey.read_noise2 / G**2
    # near sky lines the reported variance understates the truth, and sky residuals remain
    lines = np.clip(sky_mean - sky_cont, 0, None)[None, :] * level
    excess = np.clip(1 + 0.1 * (sky_mean - sky_cont) / sky_cont, 1, 2)[None, :]
    noise = rng.standard_normal(flux.shape, dtype=np.float32) * np.sqrt(var * excess)
    residual = rng.normal(0, 0.005, (n, 1)).astype(np.float32) * lines
    observed = flux + noise + residual
    ivar = 1.0 / var
    mask = ~covered
    # bad columns / cosmic-ray runs, and partial coverage
    for i in range(n):
        for _ in range(rng.poisson(0.4)):
            start = rng.integers(0, wave.size)
            mask[i, start:start + rng.geometric(0.08)] = True
        u = rng.uniform()
        if u < 0.02:
            mask[i, wave < rng.uniform(4000, 5500)] = True
        elif u < 0.03:
            mask[i, wave > rng.uniform(8000, 9500)] = True
    ivar = np.where(mask, 0, ivar).astype(np.float32)
    observed = np.where(mask & ~covered, 0, observed).astype(np.float32)
    extras.update({"EBV": ebv, "FLUX_SCALE": scale})
    return wave, observed, ivar, mask, extras
