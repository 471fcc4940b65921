#!/usr/bin/env python
"""Write rows of a simulated dataset on the BOSS grid as SDSS ``spec-*.fits`` files (COADD table: LOGLAM,
FLUX, IVAR, AND_MASK, WDISP from the simulator's BOSS resolution) plus ``truth.csv``, so that peers that
read spec files (Redrock through ``../shared/peers/redrock_boss.py``) run on the same simulated spectra as
redsift. The rows are a class-stratified sample, fixed by ``--seed``.

    python scripts/sim_to_spec.py DATASET -o DIR --per-class 100 [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np
from astropy.io import fits

from redsift.data.store import Dataset
from redsift.simulate.instrument import SURVEYS


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    ds = Dataset(a.dataset)
    if ds.grid.name != "boss":
        raise SystemExit(f"{a.dataset}: needs a dataset on the BOSS grid, not {ds.grid.name}")
    meta = ds.meta
    rng = np.random.default_rng(a.seed)
    rows = []
    for c in ("GALAXY", "QSO", "STAR"):
        idx = np.flatnonzero(np.asarray(meta["CLASS"]) == c)
        rows += list(rng.choice(idx, min(a.per_class, len(idx)), replace=False))
    rows = np.sort(np.array(rows))
    flux, ivar, mask = ds.read(rows)
    loglam = ds.grid.loglam
    wdisp = SURVEYS["boss"].sigma_pix(10 ** loglam).astype(np.float32)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "truth.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["file", "row", "CLASS", "SUBCLASS", "Z"])
        for j, r in enumerate(rows):
            name = f"spec-9999-59999-{j:04d}.fits"
            cols = [fits.Column("FLUX", "E", array=flux[j]), fits.Column("LOGLAM", "E", array=loglam.astype(np.float32)),
                    fits.Column("IVAR", "E", array=ivar[j]),
                    fits.Column("AND_MASK", "J", array=np.where(mask[j], 1, 0).astype(np.int32)),
                    fits.Column("WDISP", "E", array=wdisp)]
            hdul = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)])
            tmp = out / (name + ".tmp")
            hdul.writeto(tmp, overwrite=True)
            os.replace(tmp, out / name)
            wr.writerow([name, int(r), meta["CLASS"][r], meta["SUBCLASS"][r], float(meta["Z"][r])])
    print(f"wrote {len(rows)} spec files and truth.csv to {out}")


if __name__ == "__main__":
    main()
