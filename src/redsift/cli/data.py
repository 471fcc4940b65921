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
                    rows_per_chunk=args.chunk, resume=args.resume, workers=args.workers, scheduler=args.scheduler,
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


def parse_mix(text: str) -> dict:
    """``"QSO:0.6,STAR:0.4"`` or ``"QSO,STAR"`` (equal weights) -> {class: weight}."""
    mix = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, w = part.partition(":")
        try:
            mix[name.strip().upper()] = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f"--classes: bad weight in {part!r} (expected CLASS:weight)") from None
    if not mix or sum(mix.values()) <= 0:
        raise ValueError("--classes: give at least one class with a positive weight")
    return mix


def cmd_simulate(args) -> int:
    from ..simulate import simulate

    ds = simulate(args.n, args.survey, args.output, mix=parse_mix(args.classes), seed=args.seed,
                  templates=args.templates, grid=args.grid, jobs=args.jobs, block=args.block,
                  append=args.append, star_mix=args.star_mix, workers=getattr(args, "workers", None),
                  scheduler=getattr(args, "scheduler", None),
                  command="redsift " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    print(ds)
    # this run's provenance: an append's is the last entry of ``appends``, not the dataset's first run
    run = (ds.index.get("appends") or [{}])[-1] if args.append else ds.provenance
    print(f"mode: {run.get('mode')}" + (f" ({run.get('templates')})" if run.get("templates") else ""))
    return 0
