"""Emission-line fluxes of one spectrum under competing redshift hypotheses: a check by eye, in numbers.

A spectrum with one strong line can be read as several lines at several redshifts; each reading predicts
other lines (fixed ratios such as [O III] 4959/5007 = 1/2.98, or the Balmer lines of the same gas). This
measures, for every hypothesis, the continuum-subtracted flux of each line in a window of +-8 A (errors
from IVAR, the continuum the median of 15-60 A either side), so the readings the data rule out show.

    python scripts/line_check.py ../shared/data/real/desi/coadd-special-dark-27247.fits --row 0 \\
        --line 5043.5 --as OIII5007 OII3727 LYA

Used in docs/classifier.md ("Real spectra") on the DESI spectrum Redrock calls a z = 0.0073 galaxy.
Validation only: nothing here is trained or tuned on.
"""
from __future__ import annotations

import argparse

import numpy as np

#: Vacuum rest wavelengths (A) of the lines checked
LINES = {"LYA": 1215.67, "NV": 1240.1, "CIV": 1549.1, "CIII": 1908.7, "MGII": 2799.1, "OII3727": 3728.5,
         "NEIII": 3869.9, "HDELTA": 4102.9, "HGAMMA": 4341.7, "HBETA": 4862.7, "OIII4959": 4960.3,
         "OIII5007": 5008.2, "HALPHA": 6564.6, "NII6584": 6585.3, "SII6717": 6718.3}


def line_flux(wave, flux, ivar, centre: float, half: float = 8.0):
    """Continuum-subtracted flux and its error in ``centre +- half`` A (NaN outside the spectrum)."""
    if not wave[0] + 60 < centre < wave[-1] - 60:
        return np.nan, np.nan
    m = (np.abs(wave - centre) < half) & (ivar > 0)
    side = (np.abs(wave - centre) > 15) & (np.abs(wave - centre) < 60) & (ivar > 0)
    if m.sum() < 3 or side.sum() < 5:
        return np.nan, np.nan
    dw = np.gradient(wave)[m]
    cont = np.median(flux[side])
    return float(((flux[m] - cont) * dw).sum()), float(np.sqrt((dw ** 2 / ivar[m]).sum()))


def main(argv=None):
    from redsift.io import read

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--row", type=int, default=0)
    ap.add_argument("--line", type=float, required=True, help="observed wavelength of the strong line (A)")
    ap.add_argument("--as", dest="ids", nargs="+", required=True, help=f"what it could be: {', '.join(LINES)}")
    a = ap.parse_args(argv)
    s = read(a.file)
    wave = np.asarray(s.wave, float)
    flux, ivar = np.asarray(s.flux[a.row], float), np.asarray(s.ivar[a.row], float)
    f0, e0 = line_flux(wave, flux, ivar, a.line)
    print(f"{a.file}[{a.row}]: the line at {a.line:g} A, flux {f0:.2f} +- {e0:.2f}")
    for ident in a.ids:
        z = a.line / LINES[ident] - 1
        print(f"as {ident}: z = {z:.4f}")
        for name, rest in LINES.items():
            if name == ident:
                continue
            f, e = line_flux(wave, flux, ivar, rest * (1 + z))
            if np.isfinite(f):
                print(f"  {name:9s} at {rest * (1 + z):7.1f} A: {f:6.2f} +- {e:4.2f}  ({f / e:+5.1f} sigma)")


if __name__ == "__main__":
    main()
