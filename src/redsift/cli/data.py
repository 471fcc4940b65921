"""``redsift ingest`` and ``redsift dataset``."""

from __future__ import annotations

import shlex
import sys

import numpy as np

from ..data.ingest import ingest
from ..data.store import Dataset
from ..grid import LogGrid


def cmd_ingest(args) -> int:
    grid, binning = (LogGrid.quasarnet(), "quasarnet") if args.grid == "quasarnet" else (LogGrid.boss(), "flux_conserving")
    report = ingest(args.catalog, args.spectra, args.output, grid=grid, binning=binning, jobs=args.jobs,
                    rows_per_chunk=args.chunk, resume=args.resume,
                    command="redsift " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    print(report.summary())
    if report.rejected:
        print(f"rejected rows and reasons: {args.output}/rejected.csv")
    return 0


def cmd_dataset(args) -> int:
    ds = Dataset(args.path)
    print(ds)
    meta = ds.meta
    if "CLASS" in meta.colnames:
        cls, n = np.unique(np.asarray(meta["CLASS"]), return_counts=True)
        print("classes: " + ", ".join(f"{c} {k}" for c, k in zip(cls, n)))
    if "Z" in meta.colnames and len(meta):
        z = np.asarray(meta["Z"], float)
        print(f"redshift: {np.nanmin(z):.3f} - {np.nanmax(z):.3f} (median {np.nanmedian(z):.3f})")
    if "SNR" in meta.colnames and len(meta):
        print(f"median S/N per pixel: {np.nanmedian(np.asarray(meta['SNR'], float)):.2f}")
    for k, v in ds.provenance.items():
        print(f"{k}: {v}")
    return 0
