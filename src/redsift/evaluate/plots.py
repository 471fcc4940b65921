"""Plots astronomers expect. matplotlib is imported lazily; every function takes ``ax=None``."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_spectrum", "plot_prediction", "new_axes"]

from ..constants import PLOT_LINES as QSO_LINES  # rest-frame lines (vacuum A) marked on quasar spectra


def new_axes(figsize=(10, 3.5)):
    """A fresh Figure and Axes using the object API (no pyplot state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def plot_spectrum(spectra, i: int = 0, ax=None, z: float | None = None, lines=QSO_LINES,
                  smooth: int = 5, title: str | None = None):
    """Plot spectrum ``i`` of a batch with its 1-sigma noise; mark lines at redshift ``z``.

    Returns the Axes.
    """
    if ax is None:
        _, ax = new_axes()
    wave = spectra.wave_of(i)
    flux = spectra.flux[i].astype(float)
    w = spectra.weights[i]
    good = w > 0
    meta = spectra.meta[i]
    ax.set_title(title or f"TARGETID {meta['TARGETID']}  ({meta['FORMAT']}, row {meta['INDEX']})", fontsize=9)
    ax.set_xlabel("vacuum wavelength [A]")
    ax.set_ylabel("flux")
    if not good.any():
        ax.text(0.5, 0.5, "no valid pixels (NODATA)", transform=ax.transAxes, ha="center", va="center")
        ax.set_xlim(wave.min(), wave.max())
        return ax
    if smooth > 1 and good.sum() > smooth:
        k = np.ones(smooth) / smooth
        num = np.convolve(np.where(good, flux * w, 0), k, "same")
        den = np.convolve(w, k, "same")
        flux = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    flux = np.where(good, flux, np.nan)
    sigma = np.where(good, 1 / np.sqrt(np.where(good, w, 1)), np.nan)
    ax.plot(wave, flux, lw=0.6, color="k", label="flux")
    ax.plot(wave, sigma, lw=0.5, color="tab:red", alpha=0.7, label="1-sigma noise")
    if z is not None and np.isfinite(z):
        for name, rest in lines.items():
            obs = rest * (1 + z)
            if wave.min() < obs < wave.max():
                ax.axvline(obs, color="tab:blue", lw=0.8, ls="--")
                ax.text(obs, 0.95, name, transform=ax.get_xaxis_transform(), ha="center", va="top",
                        fontsize=8, color="tab:blue")
    fin = flux[np.isfinite(flux)]
    if fin.size:
        lo, hi = np.percentile(fin, [0.5, 99.5])
        pad = 0.1 * (hi - lo + 1e-9)
        ax.set_ylim(lo - pad, hi + pad)
    ax.legend(loc="upper right", fontsize=7, frameon=False)
    return ax


def plot_prediction(spectra, i: int, row, ax=None, lines=None, c_th: float = 0.4):
    """Spectrum ``i`` with QuasarNET's per-line detections from catalog ``row`` (paper fig. 2).

    Each line finder's position is marked at its predicted wavelength ``rest * (1 + Z_LINE)``, with its
    confidence; lines above the threshold ``c_th`` (the model's) are solid, the others dotted.
    """
    from ..constants import QSO_LINES_VACUUM

    lines = lines or QSO_LINES_VACUUM
    spectype = row["SPECTYPE"] if "SPECTYPE" in row.colnames else ""
    z = row["Z"] if "Z" in row.colnames else float("nan")
    ztxt = f"z = {z:.4f}" if np.isfinite(z) else "no redshift"
    title = (f"{spectype}{' BAL' if 'IS_BAL' in row.colnames and row['IS_BAL'] else ''}  "
             f"{ztxt}  ZWARN = {row['ZWARN']}" if "ZWARN" in row.colnames else None)
    ax = plot_spectrum(spectra, i, ax=ax, z=None, title=title)
    wave = spectra.wave_of(i)
    for name, rest in lines:
        c = row[f"C_{name}"] if f"C_{name}" in row.colnames else np.nan
        zl = row[f"Z_{name}"] if f"Z_{name}" in row.colnames else np.nan
        if not np.isfinite(c) or not np.isfinite(zl):
            continue
        obs = rest * (1 + zl)
        if wave.min() < obs < wave.max():
            on = c > c_th
            ax.axvline(obs, color="tab:green" if on else "0.6", lw=1.0, ls="-" if on else ":")
            ax.text(obs, 0.88, f"{name}\n{c:.2f}", transform=ax.get_xaxis_transform(), ha="center", va="top",
                    fontsize=7, color="tab:green" if on else "0.4")
    return ax
