"""Rest-frame source models: quasars, stars, galaxies (batches on REST_GRID) and their truth."""

from __future__ import annotations

import numpy as np

from ..constants import C_KMS, LYA
from .library import REST_GRID, TemplateLibrary
from .parametric import tau_eff
from .physics import bal_troughs, ccm_extinction, igm_transmission_observed, smc_extinction

__all__ = ["QuasarModel", "make_stars", "make_galaxies", "qso_redshifts", "STAR_MIX", "STAR_MIXES"]

WAVE = REST_GRID.wave

#: (name, lo, hi, Baldwin slope d log EW / d log L, scatter in dex) of the emission-line regions
#: whose strength, width and velocity vary from quasar to quasar. Baldwin slopes after Dietrich et al.
#: (2002): CIV -0.2, Lya/NV and CIII] about -0.1; low-ionisation and Balmer lines ~0.
LINE_REGIONS = [
    ("Lya", 1190.0, 1232.0, 1215.67, -0.10, 0.15),
    ("NV", 1232.0, 1262.0, 1240.81, -0.10, 0.20),
    ("SiIV", 1370.0, 1430.0, 1399.8, -0.12, 0.18),
    ("CIV", 1500.0, 1600.0, 1549.06, -0.20, 0.18),
    ("CIII]", 1870.0, 1945.0, 1908.73, -0.10, 0.15),
    ("MgII", 2740.0, 2860.0, 2798.75, -0.05, 0.15),
    ("Hgamma", 4310.0, 4375.0, 4341.7, 0.0, 0.15),
    ("Hbeta", 4800.0, 4925.0, 4862.7, 0.0, 0.2),
    ("Halpha", 6490.0, 6640.0, 6564.6, 0.0, 0.15),
]
#: Each window holds one broad line, which is stretched about its own centre; narrow lines ([OIII],
#: [NII], [SII], [OII]) and Fe II stay outside the windows, at their rest wavelengths.
#: Quasar-to-quasar variation: log-normal scatter (dex) of line widths, CIV blueshift (median km/s, and
#: log-normal sigma), Mg II velocity scatter (km/s), continuum-slope scatter, and the rms of the
#: further PCA eigenspectra relative to the mean quasar in 1300-3000 A. EIGEN_RMS was halved from
#: (0.08, 0.05, 0.03, ...) after the realism probe: with it, the real-data-trained QuasarNET (qn4) had
#: 2.4% catastrophic redshifts on bright (S/N ~15) simulated quasars, 1.2% with the halved values and 0.5%
#: with none (docs/quasarnet.md).
WIDTH_SCATTER = 0.12
CIV_BLUESHIFT = (600.0, 0.7)
MGII_SCATTER = 150.0
SLOPE_SCATTER = 0.3
EIGEN_RMS = (0.04, 0.025, 0.015, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01)

_CONT_WINDOWS = [(1345, 1360), (1440, 1465), (1690, 1705), (2160, 2180), (2225, 2250),
                 (3010, 3040), (3240, 3270), (4200, 4230), (5080, 5120), (5600, 5700), (6200, 6300),
                 (7000, 7100), (8000, 8200)]


def qso_redshifts(n, rng, survey="boss"):
    """A BOSS-like quasar-target redshift distribution: most at 2-3, a tail to 5.5, and low-z quasars.

    Mixture: 62% N(2.45, 0.45) in [2, 3.5]; 22% uniform in [0.1, 2]; 11% uniform in [3.5, 4.5];
    5% uniform in [4.5, 5.5].
    """
    u = rng.uniform(size=n)
    z = np.empty(n)
    a = u < 0.62
    z[a] = np.clip(rng.normal(2.45, 0.45, a.sum()), 2.0, 3.5)
    b = (u >= 0.62) & (u < 0.84)
    z[b] = rng.uniform(0.1, 2.0, b.sum())
    c = (u >= 0.84) & (u < 0.95)
    z[c] = rng.uniform(3.5, 4.5, c.sum())
    d = u >= 0.95
    z[d] = rng.uniform(4.5, 5.5, d.sum())
    return z


def _taper(lo, hi, edge=6.0):
    return np.clip(np.minimum(WAVE - lo, hi - WAVE) / edge + 0.5, 0, 1)


def absorb(wave_obs, flux_obs, z, rng):
    """Apply intergalactic absorption to observed quasar spectra in place; returns DLA truth."""
    T, ndla, lognhi = igm_transmission_observed(wave_obs, z, rng)
    flux_obs *= T
    return {"N_DLA": ndla, "LOG_NHI": lognhi}


class QuasarModel:
    """Quasars from the mean BOSS quasar (spEigenQSO eigenspectrum 0) made individual.

    The mean spectrum is split into a continuum (interpolated in log-log
    through line-free windows) and an emission-line part. For each quasar:
    the continuum slope changes by N(0, 0.3); each line region in
    :data:`LINE_REGIONS` is scaled by the Baldwin effect at the quasar's
    luminosity with log-normal scatter, broadened or narrowed (log-normal,
    0.12 dex), and CIV is blueshifted by a log-normal velocity (median 600
    km/s); the Fe II and small lines are scaled together; the further PCA
    eigenspectra add correlated variation. Then host-galaxy light (z < 0.8),
    intrinsic SMC reddening (10%) and BAL troughs are applied; the fluctuating
    Lyman-alpha/beta forest, Lyman-limit systems and DLAs are applied on the
    observed grid by :func:`absorb`. The mean spectrum
    already contains the *mean* forest of its own quasars (median z of the
    spEigenQSO sample), which is divided out first so that the forest is
    applied once, at each quasar's own redshift.
    """

    def __init__(self, lib: TemplateLibrary):
        self.lib = lib
        e0 = lib.qso_eigen[0].astype(np.float64)
        zc = float(np.median(lib.qso_z))
        forest = WAVE < LYA
        unabs = e0.copy()
        zabs = (1 + zc) * WAVE[forest] / LYA - 1
        unabs[forest] /= np.exp(-tau_eff(np.clip(zabs, 0, None)))
        xs, ys = [], []
        for lo, hi in _CONT_WINDOWS:
            sel = (WAVE >= lo) & (WAVE <= hi)
            if sel.any() and np.median(unabs[sel]) > 0:
                xs.append(np.log10(np.sqrt(lo * hi)))
                ys.append(np.log10(np.median(unabs[sel])))
        xs, ys = np.array(xs), np.array(ys)
        lw = np.log10(WAVE)
        cont = np.interp(lw, xs, ys)
        # extrapolate with the end slopes
        lo_slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
        hi_slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        cont = np.where(lw < xs[0], ys[0] + lo_slope * (lw - xs[0]), cont)
        cont = np.where(lw > xs[-1], ys[-1] + hi_slope * (lw - xs[-1]), cont)
        self.continuum = (10**cont).astype(np.float32)
        self.lines = (unabs - self.continuum).astype(np.float32)
        self.eigen = lib.qso_eigen[1:].astype(np.float32)
        band = (WAVE > 1300) & (WAVE < 3000)
        ref = np.sqrt(np.mean(e0[band] ** 2))
        target = np.array(EIGEN_RMS)[: len(self.eigen)]
        self.eigen_scale = (target * ref / np.sqrt(np.mean(self.eigen[:, band] ** 2, axis=1))
                            if len(self.eigen) else np.zeros(0))
        self.windows = np.array([_taper(lo, hi) for _, lo, hi, *_ in LINE_REGIONS])
        self.slices = [slice(*np.flatnonzero(w > 0)[[0, -1]] + [0, 1]) for w in self.windows]
        self.rest_outside = np.clip(1 - self.windows.sum(axis=0), 0, 1)

    def sample(self, z, rng, galaxies=None):
        """Rest-frame spectra (n, npix) float32 and truth columns for quasars at redshifts ``z``."""
        n = z.size
        logl = rng.normal(46.0, 0.5, n)
        slope = rng.normal(0, SLOPE_SCATTER, n)
        tilt = np.exp(np.log(WAVE / 2500.0).astype(np.float32)[None, :] * slope[:, None].astype(np.float32))
        spec = self.continuum[None, :] * tilt
        lines = (self.rest_outside * self.lines)[None, :] * rng.lognormal(0, 0.25, n).astype(np.float32)[:, None]
        civ_shift = np.zeros(n)
        for k, (name, lo, hi, c, beta, scatter) in enumerate(LINE_REGIONS):
            amp = 10 ** (beta * (logl - 46.0) + rng.normal(0, scatter, n))
            width = 10 ** rng.normal(0, WIDTH_SCATTER, n)
            shift = np.zeros(n)
            if name == "CIV":
                shift = -np.clip(rng.lognormal(np.log(CIV_BLUESHIFT[0]), CIV_BLUESHIFT[1], n), 0, 4000)
                civ_shift = shift
            elif name == "MgII":
                shift = rng.normal(0, MGII_SCATTER, n)
            centre = c * (1 + shift / C_KMS)
            sl = self.slices[k]
            src = c + (WAVE[None, sl] - centre[:, None]) / width[:, None]
            region = np.interp(src, WAVE, self.lines)
            lines[:, sl] += self.windows[k][None, sl] * amp[:, None] * region
        spec += lines * tilt
        if len(self.eigen):
            coeff = rng.normal(0, 1, (n, len(self.eigen))) * self.eigen_scale[None, :]
            spec += coeff.astype(np.float32) @ self.eigen
        spec = np.clip(spec, 0.02 * self.continuum[None, :], None)

        host = np.zeros(n)
        if galaxies is not None and len(galaxies):
            low = z < 0.8
            host[low] = rng.uniform(0, 0.6, low.sum()) * (0.8 - z[low]) / 0.8
            pick = rng.integers(0, len(galaxies), n)
            ref = (WAVE > 5100) & (WAVE < 5300)
            gal = galaxies[pick]
            norm = np.mean(spec[:, ref], axis=1) / np.maximum(np.mean(gal[:, ref], axis=1), 1e-30)
            spec += (host * norm).astype(np.float32)[:, None] * gal
        ebv = np.where(rng.uniform(size=n) < 0.1, rng.exponential(0.08, n), 0.0)
        red = ebv > 0
        spec[red] *= (10 ** (-0.4 * smc_extinction(WAVE, ebv[red]))).astype(np.float32)

        # intrinsic BAL troughs here; intergalactic absorption (forest, LLS, DLAs) is applied on the
        # observed grid by :meth:`absorb`
        # (BAL_FLAG, the simulated visual flag, needs the spectrum's S/N: set by simulate_block)
        Tbal, bal = bal_troughs(WAVE, n, rng)
        spec *= Tbal
        bi = bal["BI_CIV"]
        truth = {**bal, "CIV_SHIFT": civ_shift, "LOG_L": logl, "EBV_INT": ebv, "HOST_FRAC": host,
                 "SUBCLASS": np.where(bi > 0, "BAL", np.where(z < 0.8, "LOWZ", "")).astype("U24")}
        return spec.astype(np.float32), truth


#: Star mix of BOSS quasar-target contaminants (letter class: weight): white dwarfs, A/BHB stars,
#: metal-poor F stars, M dwarfs (some with a white-dwarf companion), carbon stars, CVs, a few others.
STAR_MIX = {"WD": 0.14, "A": 0.16, "F": 0.20, "G": 0.06, "K": 0.07, "M": 0.16, "CV": 0.06, "C": 0.05,
            "L": 0.02, "B": 0.04, "O": 0.02, "M+WD": 0.02}
#: Every letter class equally often (classifier training: each class of a taxonomy is learned, rare or not).
UNIFORM_STARS = {k: (0.5 if k in ("M", "M+WD") else 1.0) for k in STAR_MIX}
STAR_MIXES = {"boss": STAR_MIX, "uniform": UNIFORM_STARS}
#: Fraction of F/G/K/M stars given an unresolved companion (a cooler star or a white dwarf) contributing
#: 5-40% of the light at 6000-7000 A; stellar reddening E(B-V) (exponential, mean) on top of the
#: instrument's Galactic draw; and the log-normal scatter of a continuum tilt (temperature, metallicity
#: and gravity differences between archetypes of one letter class, and the flux-calibration errors that a
#: star's spectrum carries beyond the instrument's).
BINARY_FRACTION = 0.12
STAR_EBV = 0.06
STAR_TILT = 0.15


def make_stars(n, lib: TemplateLibrary, rng, star_mix: dict | str | None = None):
    """Stars drawn by ``star_mix`` (:data:`STAR_MIX`, or a name in :data:`STAR_MIXES`), with radial
    velocities, stellar reddening, continuum tilts and unresolved companions; rest spectra, z, truth."""
    mix = STAR_MIXES[star_mix] if isinstance(star_mix, str) else (star_mix or STAR_MIX)
    classes = np.asarray(lib.star_class)
    names = [c for c in mix if (c == "M+WD" and np.any(classes == "M") and np.any(classes == "WD"))
             or np.any(classes == c)]
    w = np.array([mix[c] for c in names])
    draw = rng.choice(len(names), size=n, p=w / w.sum())
    spec = np.empty((n, WAVE.size), np.float32)
    sub = np.empty(n, "U32")
    cls = np.empty(n, "U8")
    native = np.zeros(n, bool)
    ref = (WAVE > 6000) & (WAVE < 7000)
    for k, name in enumerate(names):
        sel = np.flatnonzero(draw == k)
        if not sel.size:
            continue
        if name == "M+WD":
            m = rng.choice(np.flatnonzero(classes == "M"), sel.size)
            wd = rng.choice(np.flatnonzero(classes == "WD"), sel.size)
            frac = rng.uniform(0.3, 1.5, sel.size)
            ms, ws = lib.stars[m], lib.stars[wd]
            scale = np.mean(ms[:, ref], axis=1) / np.maximum(np.mean(ws[:, ref], axis=1), 1e-30)
            spec[sel] = ms + (frac * scale)[:, None] * ws
            sub[sel], cls[sel] = "M+WD", "M"
            native[sel] = lib.star_native[m] & lib.star_native[wd]
        else:
            pick = rng.choice(np.flatnonzero(classes == name), sel.size)
            spec[sel] = lib.stars[pick]
            sub[sel] = np.asarray(lib.star_subclass)[pick]
            cls[sel] = name
            native[sel] = lib.star_native[pick]
    # unresolved companions: a later-type star (K, M) or a white dwarf, 5-40% of the light at 6000-7000 A
    later = {"F": ("G", "K", "M", "WD"), "G": ("K", "M", "WD"), "K": ("M", "WD"), "M": ("M", "WD")}
    binary = np.isin(cls, list(later)) & (sub != "M+WD") & (rng.uniform(size=n) < BINARY_FRACTION)
    for i in np.flatnonzero(binary):
        opts = [c for c in later[cls[i]] if np.any(classes == c)]
        if not opts:
            binary[i] = False
            continue
        j = rng.choice(np.flatnonzero(classes == rng.choice(opts)))
        comp = lib.stars[j]
        scale = np.mean(spec[i, ref]) / max(float(np.mean(comp[ref])), 1e-30)
        spec[i] = spec[i] + rng.uniform(0.05, 0.4) * scale * comp
        native[i] &= bool(lib.star_native[j])
    # stellar reddening and a smooth continuum tilt (temperature/metallicity spread within a class)
    ebv = rng.exponential(STAR_EBV, n)
    tilt = rng.normal(0, STAR_TILT, n)
    covered = spec > 0
    spec *= (10 ** (-0.4 * ccm_extinction(WAVE, ebv))).astype(np.float32)
    spec *= np.exp(np.log(WAVE / 5500.0)[None, :] * tilt[:, None]).astype(np.float32)
    spec = np.where(covered, spec, 0).astype(np.float32)
    rv = np.where(cls == "WD", rng.normal(40, 40, n), rng.normal(-10, 60, n))
    z = rv / C_KMS
    return spec, z, {"SUBCLASS": cls.astype("U24"), "SUBTYPE_DETAIL": sub, "NATIVE_RES": native,
                     "BINARY": binary, "EBV_STAR": ebv}


def make_galaxies(n, lib: TemplateLibrary, rng, qso: "QuasarModel | None" = None):
    """Galaxies 0.002 < z < 1.2 (CMASS/LOWZ/ELG-like mixture); rest spectra, z, truth.

    The low-redshift part starts at z = 0.002 (it started at 0.02 until 2026-11-29: a real DESI galaxy at
    z = 0.0073 was put at z = 0.35 by a classifier that had never seen z < 0.02).

    Subclass PASSIVE or STARFORMING by the 4000 A break (D4000 > 1.5); 5% are
    broad-line AGN-like (BROADLINE): the quasar model's Mg II, H-beta and
    H-alpha broad lines added with rest equivalent widths 30-100% of the mean
    quasar's.
    """
    u = rng.uniform(size=n)
    z = np.where(u < 0.65, np.clip(rng.normal(0.55, 0.13, n), 0.3, 0.9),
                 np.where(u < 0.88, rng.uniform(0.002, 0.3, n), rng.uniform(0.9, 1.2, n)))
    pick = rng.integers(0, len(lib.galaxies), n)
    spec = lib.galaxies[pick].astype(np.float64)
    blue = (WAVE > 3850) & (WAVE < 3950)
    red = (WAVE > 4000) & (WAVE < 4100)
    d4000 = np.mean(spec[:, red], axis=1) / np.maximum(np.mean(spec[:, blue], axis=1), 1e-30)
    sub = np.where(d4000 > 1.5, "PASSIVE", "STARFORMING").astype("U24")
    if qso is not None:
        agn = rng.uniform(size=n) < 0.05
        ew_profile = np.zeros_like(WAVE)
        for lo, hi in ((2700, 2900), (4750, 4950), (6400, 6750)):  # MgII, Hbeta, Halpha
            ew_profile += _taper(lo, hi) * qso.lines / qso.continuum
        # the galaxy continuum under each line, smoothed: EW_profile x continuum = line flux density
        from scipy.ndimage import uniform_filter1d

        cont = uniform_filter1d(spec[agn], 301, axis=1)
        spec[agn] += rng.uniform(0.3, 1.0, agn.sum())[:, None] * ew_profile[None, :] * cont
        sub[agn] = "BROADLINE"
    return spec.astype(np.float32), z, {"SUBCLASS": sub}
