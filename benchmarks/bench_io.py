"""Reader and preprocessing throughput (run by hand, not in the test suite).

    python benchmarks/bench_io.py [--repeat 5] [--data ../shared/data]

Measures, side by side in one run and as medians over ``--repeat`` rounds:

* BOSS spec files: redsift.read per file, through the strict fast path and through astropy, vs a bare
  astropy read of the same three columns (the floor for any astropy-based reader), then read + QuasarNET
  binning + normalisation, and read + flux-conserving rebin;
* DESI coadds (QuasarNP's 25-spectrum file): read (arms merged) and preprocess;
* a generated spPlate with 1000 fibers (tiled from the real BOSS spectra):
  read and preprocess.

Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import redsift
from redsift import LogGrid, Spectra
from redsift.io.sdss import write_spplate
from redsift.preprocess import prepare, rebin


def tiled_plate(specs: Spectra, nfiber: int = 1000) -> Spectra:
    """A plate of ``nfiber`` fibres tiled from ``specs`` (one shared grid), plate 9999, MJD 60000."""
    k = int(np.ceil(nfiber / specs.nspec))
    big = Spectra(specs.wave, np.tile(specs.flux, (k, 1))[:nfiber], np.tile(specs.ivar, (k, 1))[:nfiber],
                  np.tile(specs.mask, (k, 1))[:nfiber])
    big.meta["PLATE"] = np.full(nfiber, 9999)
    big.meta["MJD"] = np.full(nfiber, 60000)
    big.meta["FIBERID"] = np.arange(1, nfiber + 1)
    return big


def timed(fn, repeat):
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        out.append(n / (time.perf_counter() - t0))
    return statistics.median(out), min(out), max(out)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    args = p.parse_args(argv)
    real = Path(args.data) / "real"
    boss = sorted((real / "boss").glob("spec-*.fits"))
    desi = real / "desi" / "coadd-quasarnp-test.fits"
    if not boss:
        sys.exit(f"no BOSS spec files under {real}")
    grid = LogGrid.quasarnet()
    rows = []

    from astropy.io import fits

    def bare_astropy():
        for f in boss:
            with fits.open(f, memmap=False) as h:
                d = h[1].data
                _ = (np.asarray(d["FLUX"]), np.asarray(d["IVAR"]), np.asarray(d["LOGLAM"]))
        return len(boss)

    def read_boss():
        for f in boss:
            redsift.read(f)
        return len(boss)

    from redsift.io import registry
    from redsift.io.fastspec import read_spec_fast

    def read_boss_astropy():  # the general path only (the fast path switched off)
        registry.FAST_PATH = False
        try:
            return read_boss()
        finally:
            registry.FAST_PATH = True

    def fast_only():  # the strict reader alone: bytes, header cards, numpy views, the Spectra
        for f in boss:
            read_spec_fast(f)
        return len(boss)

    def read_prep_boss():
        prepare(redsift.read(boss), grid, "quasarnet")
        return len(boss)

    def read_rebin_boss():
        rebin(redsift.read(boss), grid)
        return len(boss)

    base = timed(bare_astropy, args.repeat)
    rows.append(("BOSS spec: bare astropy read of 3 columns (floor)", "files/s", base))
    rows.append(("BOSS spec: redsift.read through astropy (fast path off)", "files/s", timed(read_boss_astropy, args.repeat)))
    r = timed(read_boss, args.repeat)
    rows.append(("BOSS spec: redsift.read (strict fast path, issue 20)", "files/s", r))
    rows.append(("BOSS spec: the strict reader alone (io/fastspec.read_spec_fast)", "files/s", timed(fast_only, args.repeat)))
    rows.append(("BOSS spec: read + QuasarNET binning + normalisation", "spectra/s", timed(read_prep_boss, args.repeat)))
    rows.append(("BOSS spec: read + flux-conserving rebin", "spectra/s", timed(read_rebin_boss, args.repeat)))

    def read_desi():
        return redsift.read(desi).nspec

    def read_prep_desi():
        s = redsift.read(desi)
        prepare(s, grid)
        return s.nspec

    rows.append(("DESI coadd (25 spectra): read, arms merged", "spectra/s", timed(read_desi, args.repeat)))
    rows.append(("DESI coadd (25 spectra): read + QuasarNET preprocessing", "spectra/s",
                 timed(read_prep_desi, args.repeat)))

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "spPlate-9999-60000.fits")
        write_spplate(tiled_plate(redsift.read(boss)), path)

        def read_plate():
            return redsift.read(path).nspec

        def read_prep_plate():
            s = redsift.read(path)
            prepare(s, grid)
            return s.nspec

        def read_rebin_plate():
            s = redsift.read(path)
            rebin(s, grid)
            return s.nspec

        rows.append(("spPlate (1000 fibers): read", "spectra/s", timed(read_plate, args.repeat)))
        rows.append(("spPlate (1000 fibers): read + QuasarNET preprocessing", "spectra/s",
                     timed(read_prep_plate, args.repeat)))
        rows.append(("spPlate (1000 fibers): read + flux-conserving rebin", "spectra/s",
                     timed(read_rebin_plate, args.repeat)))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"numpy {np.__version__}, redsift {redsift.__version__}")
    print(f"command: python benchmarks/bench_io.py --repeat {args.repeat}")
    print()
    print("| what | unit | median | min | max | ratio to bare astropy |")
    print("|---|---|---:|---:|---:|---:|")
    for name, unit, (med, lo, hi) in rows:
        ratio = f"{med / base[0]:.2f}" if unit == "files/s" else ""
        print(f"| {name} | {unit} | {med:,.0f} | {lo:,.0f} | {hi:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
