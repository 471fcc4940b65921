"""Tables for docs/quasarnet.md: QuasarNET models on every real labelled spectrum, and the realism probe.

    python scripts/quasarnet_report.py --data ../shared/data [--sim-model runs/quasarnet-boss-v1/best]
           [--test data_sim/test --n-test 10000]

Real spectra are a validation set only: nothing is trained or tuned on them. Labels: labels.csv (SDSS
pipeline) for BOSS; the SDSS-I file's SPECOBJ HDU and the LAMOST headers (pipeline classes); DESI redrock.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

import redsift
from redsift.metrics import qso_metrics, velocity_difference
from redsift.models import load_model
from redsift.predict import predict_spectra

MODELS = {"qn4 (real-trained)": "quasarnet-qn4_25f-quasarnp", "qn6 (real-trained)": "quasarnet-qn6_100f-quasarnp"}


def real_truth(data: Path) -> Table:
    rows = []
    lab = Table.read(data / "real" / "boss" / "labels.csv")
    for r in lab:
        rows.append((str(data / "real" / "boss" / r["file"]), 0, r["cls"], str(r["subclass"] or ""), float(r["z"])))
    f = data / "real" / "sdss1" / "spec-0266-51602-0001.fits"
    with fits.open(f) as h:
        so = h[2].data
        rows.append((str(f), 0, so["CLASS"][0].strip(), so["SUBCLASS"][0].strip(), float(so["Z"][0])))
    for f in sorted((data / "real" / "lamost").glob("*.fits.gz")):
        hdr = fits.getheader(f)
        rows.append((str(f), 0, hdr["CLASS"].strip(), str(hdr.get("SUBCLASS", "")).strip(), float(hdr["Z"])))
    for rr in sorted((data / "real" / "desi").glob("redrock-*.fits")):
        from redsift.io.catalogs import read_catalog

        cat = read_catalog(rr)
        coadd = rr.parent / rr.name.replace("redrock-", "coadd-")
        rows.append((str(coadd), 0, cat["CLASS"][0], cat["SUBCLASS"][0], float(cat["Z"][0])))
    return Table(rows=rows, names=("SOURCE", "ROW", "CLASS", "SUBCLASS", "Z"))


def real_table(data, models):
    truth = real_truth(data)
    spectra = redsift.read(list(truth["SOURCE"]))
    preds = {name: predict_spectra(m, spectra) for name, m in models.items()}
    names = list(models)
    head = "| spectrum | truth (pipeline) | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (2 + len(names))]
    summary = {n: {"qso_found": 0, "qso_total": 0, "fp": 0, "dv": []} for n in names}
    for k, t in enumerate(truth):
        cells = []
        for n in names:
            p = preds[n][k]
            if t["CLASS"] == "QSO":
                summary[n]["qso_total"] += 1
                if p["IS_QSO"]:
                    dv = float(velocity_difference(p["Z"], t["Z"]))
                    ok = abs(dv) < 6000
                    summary[n]["qso_found"] += ok
                    summary[n]["dv"].append(dv) if ok else None
                    cells.append(f"QSO z={p['Z']:.3f} (dv {dv:+.0f}){' BAL' if p['IS_BAL'] else ''}"
                                 + ("" if ok else " **wrong z**"))
                else:
                    cells.append("**missed**")
            else:
                if p["IS_QSO"]:
                    summary[n]["fp"] += 1
                    cells.append(f"**QSO** z={p['Z']:.3f} (false positive)")
                else:
                    cells.append("not QSO")
        label = f"{t['CLASS']} {t['SUBCLASS']} z={t['Z']:.3f}".replace("  ", " ")
        lines.append(f"| {Path(t['SOURCE']).name} | {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| model | quasars found with abs(dv) < 6000 km/s | std dv of those [km/s] | false positives among non-quasars |")
    lines.append("|---|---:|---:|---:|")
    nnon = int(np.sum(truth["CLASS"] != "QSO"))
    for n in names:
        s = summary[n]
        lines.append(f"| {n} | {s['qso_found']}/{s['qso_total']} | {np.std(s['dv']):.0f} | {s['fp']}/{nnon} |")
    return "\n".join(lines)


def probe(test, models, n_test):
    from redsift.data import Dataset
    from redsift.models import get_family
    from redsift.predict import infer

    ds = Dataset(test)
    idx = np.sort(np.random.default_rng(0).choice(len(ds), min(n_test, len(ds)), replace=False))
    flux, ivar, _ = ds.read(idx)
    meta = ds.meta[idx]
    out = ["| model | slice | spectra | true QSO | purity | completeness | std dv [km/s] | QSO-classified fraction |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    cls = np.asarray(meta["CLASS"]).astype(str)
    z = np.asarray(meta["Z"], float)
    snr = np.asarray(meta["SNR"], float)
    sub = np.asarray(meta["SUBCLASS"]).astype(str)
    for name, m in models.items():
        fam = get_family(m)
        prepared = fam.prepare_gridded(m, flux, ivar, np.asarray(meta["ZWARN"], np.int64))
        cat, _ = fam.columns(m, infer(m, prepared["X"]), prepared)
        isq = np.asarray(cat["IS_QSO"])
        zp = np.asarray(cat["Z"], float)
        slices = [("all", np.ones(len(meta), bool))]
        slices += [(f"QSO z {lo}-{hi}", (cls == "QSO") & (z >= lo) & (z < hi)) for lo, hi in
                   ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5.5))]
        slices += [(f"S/N {lo}-{hi}", (snr >= lo) & (snr < hi)) for lo, hi in ((0, 1), (1, 2), (2, 5), (5, 1e9))]
        slices += [("BAL QSO", (cls == "QSO") & (sub == "BAL")), ("STAR", cls == "STAR"), ("GALAXY", cls == "GALAXY")]
        slices += [(f"STAR {s}", (cls == "STAR") & (sub == s)) for s in ("WD", "A", "F", "M", "CV", "C")]
        for label, sel in slices:
            if sel.sum() == 0:
                continue
            mm = qso_metrics(isq[sel], zp[sel], cls[sel], z[sel])
            hi = label.replace("-1000000000.0", "+")
            out.append(f"| {name} | {hi} | {int(sel.sum())} | {mm['n_true_qso']} | {mm['purity']:.3f} | "
                       f"{mm['completeness']:.3f} | {mm['dv_std']:.0f} | {isq[sel].mean():.3f} |")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--sim-model", default=None)
    p.add_argument("--test", default=None)
    p.add_argument("--n-test", type=int, default=10000)
    args = p.parse_args(argv)
    models = {n: load_model(m) for n, m in MODELS.items()}
    if args.sim_model:
        models["redsift sim-trained"] = load_model(args.sim_model)
    print("## Real labelled spectra\n")
    print(real_table(Path(args.data), models))
    if args.test:
        print("\n## Realism probe (simulated held-out spectra)\n")
        print(probe(args.test, models, args.n_test))


if __name__ == "__main__":
    main()
