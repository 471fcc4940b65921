"""Absorption physics shared by the quasar models: Lyman-alpha forest, Lyman-limit systems, DLAs,
broad absorption lines, dust.

All functions act on spectra sampled on :data:`redsift.simulate.library.REST_GRID`
(rest frame of the quasar) for a batch of quasars at redshifts ``z``.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .parametric import tau_eff

__all__ = ["forest_transmission", "lyman_limit", "dla_transmission", "igm_transmission_observed",
           "bal_troughs", "balnicity_index", "absorption_index", "visual_bal_flag", "ccm_extinction",
           "smc_extinction", "LYA", "LYB"]

from ..constants import C_KMS, CIV, LYA  # CIV: the line of the balnicity and absorption indices

LYB, LYLIMIT = 1025.72, 911.76

# a(tau_eff) such that <exp(-a exp(s g))> = exp(-tau_eff) for g ~ N(0, 1), s = _SIGMA_LN
_SIGMA_LN = 1.1
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(40)
_GH_W = _GH_W / _GH_W.sum()
_TAU_GRID = np.geomspace(1e-4, 20, 400)


def _solve_amplitudes():
    a = np.empty_like(_TAU_GRID)
    for i, t in enumerate(_TAU_GRID):
        lo, hi = 1e-6, 100.0
        for _ in range(60):
            mid = np.sqrt(lo * hi)
            mean = np.sum(_GH_W * np.exp(-mid * np.exp(_SIGMA_LN * _GH_X)))
            lo, hi = (mid, hi) if mean > np.exp(-t) else (lo, mid)
        a[i] = np.sqrt(lo * hi)
    return a


_AMP = _solve_amplitudes()


def forest_transmission(wave_rest, z, rng, corr_pix: float = 2.5) -> np.ndarray:
    """Fluctuating Lyman-alpha and Lyman-beta forest transmission, (nqso, npix).

    The optical depth is lognormal, ``tau = a exp(s g)`` with ``g`` a Gaussian
    field correlated over ``corr_pix`` pixels, and ``a`` set so that the mean
    transmission at each absorber redshift is ``exp(-tau_eff(z))`` of
    Faucher-Giguere et al. (2008). Lyman-beta absorption uses the same field
    scaled by f_beta lambda_beta / (f_alpha lambda_alpha) = 0.16.
    """
    z = np.asarray(z, float)[:, None]
    n, npix = z.shape[0], wave_rest.size
    T = np.ones((n, npix), np.float32)
    blue = wave_rest < LYA
    if not blue.any():
        return T
    wb = wave_rest[blue]
    g = gaussian_filter1d(rng.standard_normal((n, wb.size)), corr_pix, axis=1)
    g /= np.std(g, axis=1, keepdims=True) + 1e-12
    zabs = (1 + z) * wb / LYA - 1
    a = np.interp(tau_eff(np.clip(zabs, 0, None)), _TAU_GRID, _AMP)
    tau = a * np.exp(_SIGMA_LN * g)
    lyb = wb < LYB
    if lyb.any():
        zb = (1 + z) * wb[lyb] / LYB - 1
        ab = np.interp(tau_eff(np.clip(zb, 0, None)), _TAU_GRID, _AMP)
        gb = gaussian_filter1d(rng.standard_normal((n, lyb.sum())), corr_pix, axis=1)
        gb /= np.std(gb, axis=1, keepdims=True) + 1e-12
        tau[:, lyb] += 0.16 * ab * np.exp(_SIGMA_LN * gb)
    T[:, blue] = np.exp(-tau)
    return T


def lyman_limit(wave_rest, z, rng) -> np.ndarray:
    """Transmission through Lyman-limit systems (tau_LL >= 1) along each sightline.

    Incidence dN/dz = 0.28 (1+z)^1.19 (Prochaska et al. 2010), column densities
    10^17.2-10^19 cm^-2 (flat in log), photo-ionisation cross-section
    6.3e-18 (lambda / 912 A)^3 cm^2 below the limit.
    """
    z = np.asarray(z, float)
    T = np.ones((z.size, wave_rest.size), np.float32)
    for i, zq in enumerate(z):
        if zq < 2.2:  # the Lyman limit is blue-ward of 3600 A for every absorber
            continue
        zgrid = np.linspace(2.9, zq, 50)  # absorbers below z~2.9 put their limit below 3600 A
        if zgrid[0] >= zq:
            continue
        dz = zgrid[1] - zgrid[0]
        nexp = np.sum(0.28 * (1 + zgrid) ** 1.19) * dz
        for _ in range(rng.poisson(nexp)):
            zl = rng.uniform(2.9, zq)
            nhi = 10 ** rng.uniform(17.2, 19.0)
            lam_obs = wave_rest * (1 + zq)
            edge = LYLIMIT * (1 + zl)
            tau = np.where(lam_obs < edge, nhi * 6.3e-18 * (lam_obs / edge) ** 3, 0.0)
            T[i] *= np.exp(-tau).astype(np.float32)
    return T


def _draw_dla_log_nhi(rng) -> float:
    """log10 N_HI of a DLA drawn from dN/dN ~ N^-1.5 between 10^20.3 and 10^22 (inverse CDF)."""
    return 20.3 - 2.0 * np.log10(1 - rng.uniform() * (1 - 10 ** (-0.5 * 1.7)))


def _lya_cross_section(lam_angstrom):
    """Lyman-alpha absorption cross-section (cm^2) with the natural (Lorentzian) line shape."""
    nu = C_KMS * 1e13 / lam_angstrom  # Hz (c in A/s = 2.998e18)
    nu0 = C_KMS * 1e13 / LYA
    gamma = 6.265e8
    phi = (gamma / (4 * np.pi**2)) / ((nu - nu0) ** 2 + (gamma / (4 * np.pi)) ** 2)
    return 0.02654 * 0.4164 * phi


def dla_transmission(wave_rest, z, rng, rate: float = 0.25):
    """Damped Lyman-alpha systems: Voigt damping wings of log N_HI 20.3-22 (dN/dlogN ~ N^-1.5).

    Returns ``(T, n_dla, max_log_nhi)``; incidence ``rate`` per unit redshift
    (~0.25 at z~3, Noterdaeme et al. 2012) between z = 2 and the quasar.
    """
    z = np.asarray(z, float)
    T = np.ones((z.size, wave_rest.size), np.float32)
    count = np.zeros(z.size, int)
    lognhi = np.zeros(z.size)
    for i, zq in enumerate(z):
        path = max(0.0, zq - 0.05 - 2.0)
        for _ in range(rng.poisson(rate * path)):
            zd = rng.uniform(2.0, zq - 0.05)
            logn = _draw_dla_log_nhi(rng)
            lam_abs = wave_rest * (1 + zq) / (1 + zd)
            tau = 10**logn * _lya_cross_section(lam_abs)
            T[i] *= np.exp(-np.clip(tau, 0, 700)).astype(np.float32)
            count[i] += 1
            lognhi[i] = max(lognhi[i], logn)
    return T, count, lognhi


def _ragged(lengths, pad=16):
    """Rows, columns and flat positions of a ragged set of runs laid end to end with ``pad`` gaps."""
    lengths = np.asarray(lengths, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths + pad)[:-1]])
    rows = np.repeat(np.arange(lengths.size), lengths)
    cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return rows, cols, offsets[rows] + cols, int(offsets[-1] + lengths[-1] + pad) if lengths.size else 0


def _lognormal_tau(wave_cols, rest, rows, cols, flat, total, rng, corr_pix):
    g = gaussian_filter1d(rng.standard_normal(max(total, 1)), corr_pix)
    g /= np.std(g) + 1e-12
    zabs = wave_cols / rest - 1
    a = np.interp(tau_eff(np.clip(zabs, 0, None)), _TAU_GRID, _AMP)
    return a * np.exp(_SIGMA_LN * g[flat])


def igm_transmission_observed(wave, z, rng, corr_pix: float = 2.5, dla_rate: float = 0.25):
    """Intergalactic absorption on the *observed* grid: Lyman-alpha/beta forest, LLS and DLAs.

    The same physics as :func:`forest_transmission`, :func:`lyman_limit` and
    :func:`dla_transmission`, computed only on the observed pixels each
    absorber reaches (the forest of a z = 2.4 quasar covers ~140 BOSS pixels,
    not the whole rest-frame grid). The forest fields of all quasars are drawn
    as one ragged sequence (runs separated by gaps), so a batch costs one
    filter call.

    Returns ``(T, n_dla, max_log_nhi)`` with ``T`` of shape (nqso, npix).
    """
    z = np.asarray(z, float)
    n = z.size
    wave = np.asarray(wave, float)
    T = np.ones((n, wave.size), np.float32)
    for rest, scale in ((LYA, 1.0), (LYB, 0.16)):
        ends = np.searchsorted(wave, rest * (1 + z))
        rows, cols, flat, total = _ragged(ends)
        if rows.size:
            tau = scale * _lognormal_tau(wave[cols], rest, rows, cols, flat, total, rng, corr_pix)
            T[rows, cols] *= np.exp(-tau).astype(np.float32)
    # Lyman-limit systems whose limit falls in the spectrum
    z_lim = wave[0] / LYLIMIT - 1
    for i in np.flatnonzero(z > z_lim):
        zgrid = np.linspace(z_lim, z[i], 50)
        nexp = np.sum(0.28 * (1 + zgrid) ** 1.19) * (zgrid[1] - zgrid[0])
        for _ in range(rng.poisson(nexp)):
            zl = rng.uniform(z_lim, z[i])
            edge = LYLIMIT * (1 + zl)
            k = np.searchsorted(wave, edge)
            tau = 10 ** rng.uniform(17.2, 19.0) * 6.3e-18 * (wave[:k] / edge) ** 3
            T[i, :k] *= np.exp(-tau).astype(np.float32)
    # DLAs between z = 2 and the quasar, damping wings within +-150 A (rest) of the line
    count = np.zeros(n, int)
    lognhi = np.zeros(n)
    for i in range(n):
        for _ in range(rng.poisson(dla_rate * max(0.0, z[i] - 0.05 - 2.0))):
            zd = rng.uniform(2.0, z[i] - 0.05)
            logn = _draw_dla_log_nhi(rng)
            lo, hi = np.searchsorted(wave, [(LYA - 150) * (1 + zd), (LYA + 150) * (1 + zd)])
            tau = 10**logn * _lya_cross_section(wave[lo:hi] / (1 + zd))
            T[i, lo:hi] *= np.exp(-np.clip(tau, 0, 700)).astype(np.float32)
            count[i] += 1
            lognhi[i] = max(lognhi[i], logn)
    return T, count, lognhi


_BAL_LINES = {"NV": 1240.81, "SiIV": 1397.61, "CIV": CIV, "Lya": LYA}
_LOBAL_LINES = {"AlIII": 1857.4, "MgII": 2798.75}


def bal_troughs(wave_rest, n, rng, bal_fraction=0.12, lobal_fraction=0.15, narrow_fraction=0.15):
    """Broad (and narrow) absorption troughs, with the CIV balnicity index of each quasar.

    BAL quasars (``bal_fraction``) get 1-3 troughs with outflow velocities of
    3000-25000 km/s (uniform in the trough centre), widths lognormal around
    2500 km/s and depths 0.2-0.95, applied to CIV, SiIV, NV and Lyman-alpha
    (weaker in NV/SiIV/Lya); ``lobal_fraction`` of them are LoBALs with the
    same troughs in Al III and Mg II. Non-BAL quasars get, with
    ``narrow_fraction``, a narrow or mini-BAL trough (< 2000 km/s wide) that
    must not count as a BAL. The balnicity index is measured on the CIV
    trough alone (:func:`balnicity_index`), so it follows the
    Weymann et al. (1991) definition, not the generator's intent.

    Returns ``(T, truth)``: the transmission ``(n, npix)`` and a dict of
    per-quasar arrays ``BI_CIV`` (km/s), ``AI_CIV`` (absorption index, km/s,
    :func:`absorption_index`), ``CIV_ABS_Q`` (the CIV absorption depth summed in
    quadrature over 69 km/s pixels, 0-29000 km/s: a trough's detection
    significance at a continuum S/N of 1 per BOSS pixel; see
    :func:`visual_bal_flag`) and ``LOBAL``.
    """
    T = np.ones((n, wave_rest.size), np.float32)
    bi = np.zeros(n)
    ai = np.zeros(n)
    quad = np.zeros(n)
    pix_kms = C_KMS * np.log(10) * np.median(np.diff(np.log10(wave_rest)))
    lobal = np.zeros(n, bool)
    is_bal = rng.uniform(size=n) < bal_fraction
    for i in range(n):
        troughs = []
        if is_bal[i]:
            for _ in range(rng.integers(1, 4)):
                width = float(np.clip(rng.lognormal(np.log(2500), 0.6), 800, 15000))
                vc = rng.uniform(3000 + width / 3, 25000)
                troughs.append((vc, width, rng.uniform(0.2, 0.95)))
            lobal[i] = rng.uniform() < lobal_fraction
        elif rng.uniform() < narrow_fraction:
            troughs.append((rng.uniform(0, 20000), rng.uniform(150, 1900), rng.uniform(0.2, 0.8)))
        if not troughs:
            continue
        lines = dict(_BAL_LINES, **(_LOBAL_LINES if lobal[i] else {}))
        for name, lam0 in lines.items():
            # only the pixels between the line and 40000 km/s blue-ward can absorb
            sl = slice(np.searchsorted(wave_rest, lam0 * (1 - 40000 / C_KMS)),
                       np.searchsorted(wave_rest, lam0 * (1 + 2000 / C_KMS)))
            v = C_KMS * (1 - wave_rest[sl] / lam0)  # outflow velocity (positive blue-ward)
            absorb = np.zeros(v.size)
            strength = {"CIV": 1.0, "SiIV": 0.7, "NV": 0.8, "Lya": 0.5, "AlIII": 0.6, "MgII": 0.8}[name]
            for vc, width, depth in troughs:
                edge = 250.0
                prof = 0.5 * (np.tanh((v - (vc - width / 2)) / edge) - np.tanh((v - (vc + width / 2)) / edge))
                absorb = np.maximum(absorb, depth * strength * prof)
            T[i, sl] *= (1 - absorb).astype(np.float32)
            if name == "CIV":
                civ = np.ones(wave_rest.size)
                civ[sl] = 1 - absorb
                bi[i] = balnicity_index(wave_rest, civ)
                ai[i] = absorption_index(wave_rest, civ)
                quad[i] = np.sqrt(np.sum(absorb[(v >= 0) & (v <= 29000)] ** 2) * pix_kms / 69.0)
    return T, {"BI_CIV": bi, "AI_CIV": ai, "CIV_ABS_Q": quad, "LOBAL": lobal}


def _trough_index(wave_rest, normalized_flux, vmin, vmax, min_run, line=CIV) -> float:
    """``integral_{vmin}^{vmax} (1 - f(v)/0.9) C dv`` with ``C = 1`` once ``f < 0.9`` has held for
    more than ``min_run`` km/s (the shared form of the balnicity and absorption indices)."""
    v = C_KMS * (1 - wave_rest / line)
    sel = (v >= 0) & (v <= vmax)
    order = np.argsort(v[sel])
    vv = v[sel][order]
    ff = np.asarray(normalized_flux)[sel][order]
    deficit = 1 - ff / 0.9
    index, run_start = 0.0, None
    for k in range(1, vv.size):
        if deficit[k] > 0:
            if run_start is None:
                run_start = vv[k]
            if vv[k] - run_start > min_run and vv[k] >= vmin:
                index += deficit[k] * (vv[k] - vv[k - 1])
        else:
            run_start = None
    return float(index)


def balnicity_index(wave_rest, normalized_flux) -> float:
    """Weymann et al. (1991) balnicity index of CIV, in km/s.

    ``BI = integral_{3000}^{25000} (1 - f(v)/0.9) C dv``, where ``f`` is the
    continuum-normalised flux at outflow velocity ``v`` from CIV 1549.06 A and
    ``C = 1`` only once ``f < 0.9`` has held continuously for more than 2000
    km/s (else 0).
    """
    return _trough_index(wave_rest, normalized_flux, 3000.0, 25000.0, 2000.0)


def absorption_index(wave_rest, normalized_flux) -> float:
    """Absorption index of CIV (Trump et al. 2006, eq. 1), in km/s.

    As the balnicity index but integrated from 0 to 29000 km/s, with ``C = 1``
    once ``f < 0.9`` has held for 1000 km/s: it also counts the mini-BALs and
    low-velocity troughs that visual inspectors often flag and BI misses.
    """
    return _trough_index(wave_rest, normalized_flux, 0.0, 29000.0, 1000.0)


#: Detection significance a trough needs to be flagged by a visual inspector (:func:`visual_bal_flag`).
VI_BAL_SIGNIFICANCE = 5.0


def visual_bal_flag(ai_civ, civ_abs_q, snr, significance: float = VI_BAL_SIGNIFICANCE):
    """A simulated visual-inspection BAL flag (the role of DR12Q's ``BAL_FLAG_VI``).

    Visual inspectors flag broad CIV absorption they can see, which is not the
    same set as ``BI_CIV > 0`` (Paris et al. 2017): they miss shallow troughs in
    noisy spectra and flag mini-BALs and low-velocity troughs that BI does not
    count. Here a quasar is flagged when its CIV absorption index is positive
    (:func:`absorption_index`, Trump et al. 2006) and the trough is detected at
    ``significance`` sigma or more, estimated as ``snr * civ_abs_q`` (median S/N
    per pixel times the quadrature-summed depth). QuasarNET's loss (Busca &
    Balland 2018, sec. 3) gives weight zero to quasars whose flag and BI
    disagree, and its BAL metrics count only the consistent ones.
    """
    ai = np.asarray(ai_civ, float)
    return ((ai > 0) & (np.asarray(snr, float) * np.asarray(civ_abs_q, float) >= significance)).astype(np.int64)


def ccm_extinction(wave, ebv, rv: float = 3.1):
    """A(lambda) / E(B-V) x E(B-V) of Cardelli, Clayton & Mathis (1989), optical/NIR/UV; (n, npix)."""
    x = 1e4 / np.asarray(wave, float)  # inverse microns
    a = np.zeros_like(x)
    b = np.zeros_like(x)
    ir = x < 1.1
    a[ir], b[ir] = 0.574 * x[ir] ** 1.61, -0.527 * x[ir] ** 1.61
    opt = (x >= 1.1) & (x < 3.3)
    y = x[opt] - 1.82
    a[opt] = (1 + 0.17699 * y - 0.50447 * y**2 - 0.02427 * y**3 + 0.72085 * y**4 + 0.01979 * y**5
              - 0.77530 * y**6 + 0.32999 * y**7)
    b[opt] = (1.41338 * y + 2.28305 * y**2 + 1.07233 * y**3 - 5.38434 * y**4 - 0.62251 * y**5
              + 5.30260 * y**6 - 2.09002 * y**7)
    uv = x >= 3.3
    xu = np.minimum(x[uv], 8.0)
    fa = np.where(xu > 5.9, -0.04473 * (xu - 5.9) ** 2 - 0.009779 * (xu - 5.9) ** 3, 0)
    fb = np.where(xu > 5.9, 0.2130 * (xu - 5.9) ** 2 + 0.1207 * (xu - 5.9) ** 3, 0)
    a[uv] = 1.752 - 0.316 * xu - 0.104 / ((xu - 4.67) ** 2 + 0.341) + fa
    b[uv] = -3.090 + 1.825 * xu + 1.206 / ((xu - 4.62) ** 2 + 0.263) + fb
    return np.asarray(ebv, float)[:, None] * (a * rv + b)[None, :]


def smc_extinction(wave, ebv):
    """SMC-bar-like extinction for quasar intrinsic reddening, A = 1.39 E(B-V) (1e4/lambda)^1.2 (Prevot 1984 fit)."""
    x = 1e4 / np.asarray(wave, float)
    return np.asarray(ebv, float)[:, None] * 1.39 * x[None, :] ** 1.2
