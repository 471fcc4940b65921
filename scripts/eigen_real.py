#!/usr/bin/env python
"""Real BOSS spectra (validation only, never trained or tuned on): redsift's models and Redrock against the
SDSS pipeline's redshifts in ``real/boss/labels.csv`` (issue 19). Prints a Markdown table: per method, over
the quasars, GF(0.01), MAD, dv NMAD, and the typing of every file.

    python scripts/eigen_real.py --models eigen-boss-sim redsift-sim [--redrock rr_real.csv]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from redsift.constants import C_KMS
from redsift.metrics import nmad
from redsift.models import load_model, resolve_model_name
from redsift.predict import predict_catalog

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "boss"


def _row(name, z, t, labels):
    q = np.array([labels[f]["cls"] == "QSO" for f in labels])
    zt = np.array([float(labels[f]["z"]) for f in labels])
    dz = (np.asarray(z, float) - zt) / (1 + zt)
    a = np.abs(dz[q])
    a = np.where(np.isfinite(a), a, np.inf)
    typed = np.mean(np.asarray(t)[q] == "QSO")
    return (f"| {name} | {q.sum()} | {typed:.3f} | {np.mean(a < 0.01):.3f} | {np.median(a):.2e} | "
            f"{C_KMS * nmad(dz[q][np.isfinite(dz[q])]):.0f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["default"])
    ap.add_argument("--redrock", help="CSV written by ../shared/peers/redrock_boss.py on the same files")
    a = ap.parse_args(argv)
    with open(REAL / "labels.csv") as fh:
        labels = {r["file"]: r for r in csv.DictReader(fh)}
    files = [str(REAL / f) for f in labels]
    lines = ["| method | quasars | typed QSO | GF(0.01) | MAD | dv NMAD km/s |", "|---|---|---|---|---|---|"]
    per_file = {f: [labels[f]["cls"], f"{float(labels[f]['z']):.4f}"] for f in labels}
    heads = ["file", "pipeline"]
    for name in a.models:
        cat = predict_catalog(load_model(resolve_model_name(name)), files, progress=False)
        z, t = np.asarray(cat["Z"], float), np.asarray(cat["SPECTYPE"]).astype(str)
        lines.append(_row(name, z, t, labels))
        heads.append(name)
        for f, zi, ti in zip(labels, z, t):
            per_file[f].append(f"{ti} {zi:.4f}")
    if a.redrock:
        with open(a.redrock) as fh:
            rr = {r["file"]: r for r in csv.DictReader(fh)}
        z = [float(rr[f]["z"]) if f in rr else np.nan for f in labels]
        t = [rr[f]["spectype"] if f in rr else "" for f in labels]
        lines.append(_row("Redrock 0.21", z, t, labels))
        heads.append("Redrock")
        for f, zi, ti in zip(labels, z, t):
            per_file[f].append(f"{ti} {zi:.4f}")
    print("\n".join(lines))
    print()
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for f, cells in per_file.items():
        print(f"| {f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
