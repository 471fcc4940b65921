"""What a model answers on pure noise: the sky, empty and broken fibres of a survey.

    python scripts/noise_check.py DATA_DIR [--model redsift-sim] [--surveys boss,desi,lamost] [-n 300] [--seed 1]

For each survey, ``n`` spectra of Gaussian noise, each with the inverse variance of one spectrum of the dataset
``DATA_DIR/test_SURVEY`` (simulated held-out sets: ``scripts/release_classifier.sh``) and ``SURVEY`` set, go through
``predict_catalog``; printed per survey: the types answered, the fraction with ``ZWARN == 0`` (every one of them a
false redshift), with ``DELTACHI2 < 9``, and the median ``ANOMALY``. Used in docs/classifier.md ("Pure noise").
"""
from __future__ import annotations

import argparse

import numpy as np


def main(argv=None):
    from astropy.table import Table

    from redsift import Spectra
    from redsift.data.store import Dataset
    from redsift.models import load_model
    from redsift.predict import predict_catalog

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("--model", default="redsift-sim")
    ap.add_argument("--surveys", default="boss,desi,lamost")
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    model = load_model(a.model)
    for s in a.surveys.split(","):
        ds = Dataset(f"{a.data}/test_{s}")
        _, ivar, _ = ds.read(np.arange(min(a.n, len(ds))))
        good = ivar > 0
        noise = np.where(good, rng.normal(size=ivar.shape) / np.sqrt(np.where(good, ivar, 1)), 0)
        spectra = Spectra(ds.grid.wave, noise, ivar, meta=Table({"SURVEY": np.full(len(ivar), s)}))
        cat = predict_catalog(model, [spectra], progress=False)
        types = np.char.strip(np.asarray(cat["SPECTYPE"]).astype(str))
        kinds, counts = np.unique(types, return_counts=True)
        d = np.ma.filled(np.ma.asarray(cat["DELTACHI2"], float), np.nan) if "DELTACHI2" in cat.colnames else None
        line = (f"{s}: {len(cat)} noise spectra, types {dict(zip(kinds.tolist(), counts.tolist()))}, "
                f"ZWARN == 0 {np.mean(np.asarray(cat['ZWARN']) == 0):.3f}")
        if d is not None:
            line += f", DELTACHI2 < 9 {np.mean(np.nan_to_num(d, nan=-np.inf) < 9):.3f}"
        if "ANOMALY" in cat.colnames:
            line += f", median ANOMALY {np.nanmedian(np.asarray(cat['ANOMALY'], float)):.2f}"
        print(line)


if __name__ == "__main__":
    main()
