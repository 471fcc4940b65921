#!/usr/bin/env python
"""Inject anomalies into a held-out simulated dataset (BOSS grid) for the eigen family's anomaly ROC
(issue 19, docs/eigen.md). Writes a dataset with the normal spectra and, in equal numbers, each kind of
anomaly, with the truth column ``ANOMALY`` ("" for normal spectra, else the kind):

* ``two-redshifts``: two galaxies or a galaxy and a quasar at redshifts > 0.05 apart in one fibre;
* ``star+galaxy``: a star and a galaxy in one fibre;
* ``artefact``: strong instrumental artefacts with the ivar left as it was (cosmic-ray spikes, a flux step
  between the cameras, a zeroed stretch, a broad bump from scattered light), one kind per spectrum;
* ``absent-class``: spectra of a class the model under test has no templates for (the model is fitted
  with ``--set exclude=CV``; the CVs of the set are relabelled anomalies).

Blends keep the truth (class and redshift) of their brighter part. Rows are drawn with ``--seed``.

    python scripts/eigen_anomalies.py DATASET -o OUT --per-kind 300 [--seed 7] [--kinds two-redshifts,...]
"""

from __future__ import annotations

import argparse

import numpy as np
from astropy.table import Table

from redsift.data.store import Dataset, DatasetWriter

KINDS = ("two-redshifts", "star+galaxy", "artefact", "absent-class")


def _sum(f1, i1, f2, i2):
    var = np.where(i1 > 0, 1 / np.where(i1 > 0, i1, 1), 0) + np.where(i2 > 0, 1 / np.where(i2 > 0, i2, 1), 0)
    ok = (i1 > 0) & (i2 > 0)
    return f1 + f2, np.where(ok, 1 / np.where(var > 0, var, 1), 0).astype(np.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--per-kind", type=int, default=300)
    ap.add_argument("--normal", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help="kinds to inject (a model with CV templates has no absent class: leave absent-class out)")
    a = ap.parse_args(argv)
    kinds_wanted = set(a.kinds.split(","))
    unknown = kinds_wanted - set(KINDS)
    if unknown:
        ap.error(f"unknown kind(s) {', '.join(sorted(unknown))}; choose from {', '.join(KINDS)}")
    ds = Dataset(a.dataset)
    meta = ds.meta
    rng = np.random.default_rng(a.seed)
    cls = np.asarray(meta["CLASS"]).astype(str)
    sub = np.asarray(meta["SUBCLASS"]).astype(str)
    z = np.asarray(meta["Z"], float)
    cv = np.flatnonzero((cls == "STAR") & (np.char.startswith(sub, "CV")))
    normal_pool = np.setdiff1d(np.arange(len(ds)), cv)
    gal, qso = np.flatnonzero(cls == "GALAXY"), np.flatnonzero(cls == "QSO")
    star = np.setdiff1d(np.flatnonzero(cls == "STAR"), cv)
    keep = list(meta.colnames)
    out_flux, out_ivar, out_meta = [], [], []

    def add(rows_f, flux, ivar, kind):
        if kind and kind not in kinds_wanted:
            return
        m = Table(meta[rows_f][keep])
        m["ANOMALY"] = np.array([kind] * len(m), dtype="U16")
        out_flux.append(flux.astype(np.float32))
        out_ivar.append(ivar.astype(np.float32))
        out_meta.append(m)

    rows = np.sort(rng.choice(normal_pool, min(a.normal, len(normal_pool)), replace=False))
    f, iv, _ = ds.read(rows)
    add(rows, f, iv, "")
    n = a.per_kind
    # two redshifts: galaxy + (galaxy or quasar), redshifts > 0.05 apart
    p1 = rng.choice(gal, n)
    p2 = np.array([rng.choice(np.concatenate([gal, qso])[np.abs(z[np.concatenate([gal, qso])] - z[r]) > 0.05]) for r in p1])
    f1, i1, _ = ds.read(p1)
    f2, i2, _ = ds.read(p2)
    f, iv = _sum(f1, i1, f2, i2)
    bright = np.where(np.nanmedian(f1, 1) >= np.nanmedian(f2, 1), p1, p2)
    add(bright, f, iv, "two-redshifts")
    # star + galaxy
    p1, p2 = rng.choice(star, n), rng.choice(gal, n)
    f1, i1, _ = ds.read(p1)
    f2, i2, _ = ds.read(p2)
    f, iv = _sum(f1, i1, f2, i2)
    add(np.where(np.nanmedian(f1, 1) >= np.nanmedian(f2, 1), p1, p2), f, iv, "star+galaxy")
    # artefacts
    rows = rng.choice(normal_pool, n)
    f, iv, _ = ds.read(rows)
    f = f.copy()
    npix = f.shape[1]
    for j in range(n):
        kind = j % 4
        sig = 1 / np.sqrt(np.median(iv[j][iv[j] > 0])) if (iv[j] > 0).any() else 1.0
        level = max(np.median(np.abs(f[j])), sig)
        if kind == 0:  # cosmic rays
            px = rng.integers(0, npix - 3, 6)
            for p in px:
                f[j, p:p + 2] += 30 * sig
        elif kind == 1:  # flux step between the cameras
            f[j, npix // 2:] += 0.5 * level * rng.choice([-1, 1])
        elif kind == 2:  # a zeroed stretch with its ivar kept
            s = rng.integers(0, npix - 300)
            f[j, s:s + 300] = 0
        else:  # a broad bump (scattered light)
            c = rng.integers(500, npix - 500)
            f[j] += 0.8 * level * np.exp(-0.5 * ((np.arange(npix) - c) / 80.0) ** 2)
    add(rows, f, iv, "artefact")
    # a class absent from the model's training (CV; fit the model with --set exclude=CV)
    rows = np.sort(cv[:n])
    f, iv, _ = ds.read(rows)
    add(rows, f, iv, "absent-class")
    meta_all = __import__("astropy.table", fromlist=["vstack"]).vstack(out_meta)
    meta_all["TARGETID"] = np.arange(len(meta_all), dtype=np.int64) + 900_000_000
    flux, ivar = np.concatenate(out_flux), np.concatenate(out_ivar)
    with DatasetWriter(a.output, ds.grid, ds.binning, {"anomalies_from": a.dataset, "seed": a.seed}) as w:
        w.add(flux, ivar, ivar <= 0, meta_all)
    kinds, counts = np.unique(np.asarray(meta_all["ANOMALY"]), return_counts=True)
    print(f"wrote {len(meta_all)} spectra to {a.output}: " + ", ".join(f"{k or 'normal'} {c}" for k, c in zip(kinds, counts)))


if __name__ == "__main__":
    main()
