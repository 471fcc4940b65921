"""Real stars from stellar libraries, observed as a survey would: the check that a model classes stars
as stars (validation only: never train or tune on these).

Libraries (``shared/data/stars``): MILES v9.1 (984 stars, 3540-7410 A, air wavelengths, FWHM 2.5 A,
MK types), the Jacoby, Hunter & Christian (1984) atlas (156 stars O5-M5, 3500-7440 A in nm, air,
~4.5 A resolution, MK types) and the MaStar hierarchically clustered spectra (65, BOSS spectrographs,
3620-10320 A, vacuum, no MK types). Each star is converted to vacuum wavelengths, resampled
(flux-conserving) onto the survey's native grid (BOSS and LAMOST: 1e-4 in log10; DESI: 0.8 A), scaled
to a median of 1 and given Gaussian noise of constant sigma ``1 / snr`` (S/N per pixel at the median
flux, e.g. 5 and 20); pixels outside the library's range have ivar 0. The spectra are then classified
like any input (:func:`redsift.predict.predict_catalog`), and :func:`summarise` counts, per library,
survey, S/N and MK letter, how many were classed STAR, how many called quasars, and for classifiers how
many got the MK letter within one type (O B A F G K M order).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..grid import air_to_vacuum
from ..spectra import Spectra

__all__ = ["load_stars", "observe_stars", "mk_letter", "summarise", "LETTERS"]

LETTERS = "OBAFGKM"


def mk_letter(spt: str) -> str:
    """The MK letter of a published spectral type (``'G1V'`` -> G, ``'sd:F'`` -> F, ``'KIIvw'`` -> K);
    '' when there is none (e.g. carbon stars)."""
    s = str(spt).strip()
    s = re.sub(r"^(sd|d|g|esd|usd)[:]?", "", s)
    m = re.match(r"\s*([OBAFGKM])", s)
    return m[1] if m else ""


def load_stars(root, library: str) -> list[dict]:
    """Stars of one library: dicts with name, mk (published type), letter, wave (vacuum A), flux."""
    from astropy.io import fits

    root = Path(root)
    out = []
    if library == "miles":
        labels = Table.read(root / "miles" / "miles_labels.csv", format="ascii.csv")
        for row in labels:
            f = root / "miles" / str(row["file"])
            if not f.exists():  # the labels list one star whose file the library omits
                continue
            with fits.open(f, memmap=False) as h:
                flux = np.asarray(h[0].data, float)
                hdr = h[0].header
                wave = hdr["CRVAL1"] + hdr["CDELT1"] * (np.arange(flux.size) + 1 - hdr.get("CRPIX1", 1))
            out.append({"name": str(row["star"]), "mk": str(row["spt"]), "letter": mk_letter(row["spt"]),
                        "wave": air_to_vacuum(wave), "flux": flux})
    elif library == "jhc":
        for line in (root / "jhc" / "jacoby-list.dat").read_text().splitlines():
            if not line.strip():
                continue
            parts = line.split()
            # name is two tokens for HD/BD/SAO-like names: the file name joins them
            name, mk = (parts[0] + parts[1], parts[2]) if not re.match(r"[OBAFGKM]\d", parts[1]) else (parts[0], parts[1])
            f = root / "jhc" / "spectra" / f"{name}-Jacoby-spec.csv.gz"
            if not f.exists():
                continue
            t = np.loadtxt(f, comments="#")
            out.append({"name": name, "mk": mk, "letter": mk_letter(mk), "wave": air_to_vacuum(t[:, 0] * 10.0),
                        "flux": t[:, 1]})
    elif library == "mastar":
        for f in sorted((root / "mastarhc").glob("MaStarHC_*.fits.gz")):
            with fits.open(f, memmap=False) as h:
                flux = np.asarray(h[0].data, float)
                hdr = h[0].header
                wave = 10 ** (hdr["CRVAL1"] + hdr["CDELT1"] * (np.arange(flux.size) + 1 - hdr.get("CRPIX1", 1)))
            out.append({"name": f.name.split(".")[0], "mk": "", "letter": "", "wave": wave, "flux": flux})
    else:
        raise ValueError(f"unknown stellar library {library!r} (miles, jhc, mastar)")
    return out


def observe_stars(stars: list[dict], survey: str, snr: float, seed: int = 0, library: str = "") -> Spectra:
    """The stars as spectra of ``survey`` at S/N ``snr`` per pixel (module docstring)."""
    from ..grid import pixel_edges
    from ..preprocess import rebin
    from ..simulate.instrument import SURVEYS

    wave = SURVEYS[survey].wave
    edges = pixel_edges(wave)
    rng = np.random.default_rng([seed, int(snr * 10), len(stars)])
    flux = np.zeros((len(stars), wave.size), np.float32)
    ivar = np.zeros_like(flux)
    for i, s in enumerate(stars):
        good = np.isfinite(s["flux"]) & (s["flux"] > 0)
        src = Spectra(s["wave"], s["flux"], good.astype(np.float32))
        f, w = rebin(src, edges)
        f, w = f[0], w[0] > 0
        med = np.median(f[w]) if w.any() else 1.0
        f = f / med
        flux[i] = np.where(w, f + rng.normal(0, 1.0 / snr, wave.size), 0.0)
        ivar[i] = np.where(w, snr**2, 0.0)
    meta = Table({"TARGETID": np.arange(len(stars), dtype=np.int64) + int(snr) * 100000,
                  "SURVEY": [survey] * len(stars), "LIBRARY": [library] * len(stars),
                  "STAR": [s["name"] for s in stars], "MK": [s["mk"] for s in stars],
                  "LETTER": [s["letter"] for s in stars], "SNR_SET": np.full(len(stars), float(snr))})
    return Spectra(wave, flux, ivar, None, meta)


def _within_one(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    pi = np.array([LETTERS.find(p[:1]) if p[:1] in LETTERS and p else -9 for p in pred])
    ti = np.array([LETTERS.find(t) if t else -99 for t in true])
    return np.abs(pi - ti) <= 1


def summarise(cat: Table) -> Table:
    """Per library, survey, S/N and MK letter: n, fraction classed STAR, fraction called QSO, and the MK
    letter within one type (classifier catalogs, stars with a letter)."""
    st = np.asarray(cat["SPECTYPE"]).astype(str)
    sub = np.asarray(cat["SUBTYPE"]).astype(str) if "SUBTYPE" in cat.colnames else np.full(len(cat), "")
    rows = []
    keys = [tuple(r) for r in zip(np.asarray(cat["LIBRARY"]).astype(str), np.asarray(cat["SURVEY_SET"]).astype(str),
                                  np.asarray(cat["SNR_SET"], float), np.asarray(cat["LETTER"]).astype(str))]
    groups = {}
    for i, k in enumerate(keys):
        groups.setdefault(k[:3], []).append(i)
        groups.setdefault(k, []).append(i)
    for k in sorted(groups, key=lambda k: (k[:3], len(k), LETTERS.find(k[3]) if len(k) == 4 and k[3] else 99)):
        idx = np.array(groups[k])
        letter = np.asarray(cat["LETTER"]).astype(str)[idx]
        has = letter != ""
        within = _within_one(sub[idx][has], letter[has]) & (st[idx][has] == "STAR") if has.any() else np.zeros(0, bool)
        rows.append({"library": k[0], "survey": k[1], "snr": k[2], "letter": k[3] if len(k) == 4 else "all",
                     "n": len(idx), "star": float(np.mean(st[idx] == "STAR")), "qso": float(np.mean(st[idx] == "QSO")),
                     "galaxy": float(np.mean(st[idx] == "GALAXY")),
                     "mk_within_one": float(np.mean(within)) if has.any() and (sub != "").any() else float("nan")})
    return Table(rows=rows)
