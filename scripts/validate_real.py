"""Validate a model on REAL spectra (validation only: never train or tune on them).

    python scripts/validate_real.py MODEL [MODEL ...] [-o OUT.md] [--surveys boss,desi,lamost] [--snr 5,20]

For each model: (1) the real stellar libraries (MILES, JHC, MaStar; ``redsift.evaluate.stars``) observed
as each survey at each S/N: per library, survey, S/N and MK letter, the fraction classed STAR, called QSO
and (classifiers) given the MK letter within one type; (2) the real survey spectra in
``../shared/data/real`` with their labels (BOSS: the SDSS pipeline's labels.csv; SDSS-I and LAMOST: their
headers; DESI: Redrock's own outputs where present), one row per spectrum. Writes Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from redsift.evaluate.stars import load_stars, observe_stars, summarise
from redsift.models import load_model, resolve_model_name
from redsift.predict import predict_catalog

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def star_rows(model, surveys, snrs) -> Table:
    parts = []
    for lib in ("miles", "jhc", "mastar"):
        stars = load_stars(SHARED / "stars", lib)
        for survey in surveys:
            for snr in snrs:
                spectra = observe_stars(stars, survey, snr, seed=0, library=lib)
                cat = predict_catalog(model, [spectra], progress=False)
                for col in ("LIBRARY", "LETTER", "SNR_SET", "MK", "STAR"):
                    cat[col] = spectra.meta[col]
                cat["SURVEY_SET"] = [survey] * len(cat)
                if set(np.asarray(cat["SPECTYPE"]).astype(str)) <= {"QSO", "NONQSO", ""}:  # QuasarNET: no STAR
                    cat["SPECTYPE"] = np.where(np.asarray(cat["SPECTYPE"]) == "QSO", "QSO", "STAR")
                    cat["SUBTYPE"] = [""] * len(cat)
                keep = ["LIBRARY", "SURVEY_SET", "SNR_SET", "LETTER", "MK", "STAR", "SPECTYPE", "SUBTYPE", "Z", "ZWARN"]
                parts.append(cat[keep])
    return vstack(parts)


def real_rows(model) -> Table:
    from astropy.io import fits

    rows = []
    real = SHARED / "real"
    labels = Table.read(real / "boss" / "labels.csv", format="ascii.csv")
    files = [str(real / "boss" / f) for f in labels["file"]]
    truth = [(str(r["cls"]), str(r["subclass"] if r["subclass"] is not np.ma.masked else ""), float(r["z"])) for r in labels]
    for f in sorted((real / "sdss1").glob("spec-*.fits")) + sorted((real / "lamost").glob("spec-*")):
        h = fits.getheader(f, 0)
        files.append(str(f))
        truth.append((str(h.get("CLASS", "")), str(h.get("SUBCLASS", "")), float(h.get("Z", np.nan))))
    cat = predict_catalog(model, files, progress=False)
    for (cls, sub, z), row, f in zip(truth, cat, files):
        rows.append({"file": Path(f).name, "true": f"{cls} {sub}".strip(), "z_true": z, "SPECTYPE": str(row["SPECTYPE"]),
                     "SUBTYPE": str(row["SUBTYPE"]), "Z": float(row["Z"]), "ZERR": float(row["ZERR"]),
                     "ZWARN": int(row["ZWARN"])})
    for coadd in sorted((real / "desi").glob("coadd-*.fits")):
        rr = coadd.with_name(coadd.name.replace("coadd-", "redrock-"))
        cat = predict_catalog(model, [str(coadd)], progress=False)
        ref = Table.read(rr, hdu="REDSHIFTS") if rr.exists() else None
        for i, row in enumerate(cat):
            true = f"{ref['SPECTYPE'][i]} (Redrock)" if ref is not None else "unlabelled"
            rows.append({"file": f"{coadd.name}[{i}]", "true": true, "z_true": float(ref["Z"][i]) if ref is not None else np.nan,
                         "SPECTYPE": str(row["SPECTYPE"]), "SUBTYPE": str(row["SUBTYPE"]), "Z": float(row["Z"]),
                         "ZERR": float(row["ZERR"]), "ZWARN": int(row["ZWARN"])})
    return Table(rows=rows)


def markdown(name, stars: Table, real: Table) -> str:
    s = summarise(stars)
    out = [f"### {name}", "", "Real stellar libraries observed as each survey (validation only):", "",
           "| library | survey | S/N | MK | n | STAR | QSO | GALAXY | MK within one type |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in s:
        out.append(f"| {r['library']} | {r['survey']} | {r['snr']:.0f} | {r['letter'] or '—'} | {r['n']} | {r['star']:.3f} | "
                   f"{r['qso']:.3f} | {r['galaxy']:.3f} | {r['mk_within_one']:.3f} |")
    st = np.asarray(stars["SPECTYPE"]).astype(str)
    out += ["", f"All library stars: {len(stars)} spectra, classed STAR {np.mean(st == 'STAR'):.4f}, called QSO "
                f"{np.mean(st == 'QSO'):.4f}, GALAXY {np.mean(st == 'GALAXY'):.4f}.", "",
            "Real survey spectra:", "", "| file | label | z (label) | SPECTYPE | SUBTYPE | Z | ZERR | ZWARN |",
            "|---|---|---:|---|---|---:|---:|---:|"]
    for r in real:
        out.append(f"| {r['file']} | {r['true']} | {r['z_true']:.4f} | {r['SPECTYPE']} | {r['SUBTYPE']} | {r['Z']:.4f} | "
                   f"{r['ZERR']:.4f} | {r['ZWARN']} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("-o", "--output")
    ap.add_argument("--surveys", default="boss,desi,lamost")
    ap.add_argument("--snr", default="5,20")
    ap.add_argument("--no-real", action="store_true", help="stellar libraries only")
    a = ap.parse_args(argv)
    text = []
    for name in a.models:
        model = load_model(resolve_model_name(name))
        stars = star_rows(model, a.surveys.split(","), [float(x) for x in a.snr.split(",")])
        real = real_rows(model) if not a.no_real else Table(names=["file", "true", "z_true", "SPECTYPE", "SUBTYPE", "Z",
                                                                     "ZERR", "ZWARN"])
        text.append(markdown(name, stars, real))
    cmd = "python scripts/validate_real.py " + " ".join(argv if argv is not None else sys.argv[1:])
    head = ["# Real spectra through " + ", ".join(f"`{m}`" for m in a.models) + " (validation only)", "",
            f"Written by `{cmd}` ({datetime.date.today().isoformat()}). Stellar libraries resampled to each survey "
            "with Gaussian noise at the S/N per pixel of `--snr` (`redsift.evaluate.stars`); real survey spectra from "
            "`../shared/data/real` with their own labels. Never trained or tuned on. For a quasar-or-not model "
            "(QuasarNET) \"STAR\" means \"not called a quasar\".", ""]
    md = "\n".join(head + text)
    if a.output:
        Path(a.output).write_text(md)
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
