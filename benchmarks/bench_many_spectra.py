"""End to end from files holding many spectra (a 1,000-fibre spPlate, DESI coadds) against the model's own
rate from arrays, side by side in one process (issue 20).

    python benchmarks/bench_many_spectra.py [--repeat 5] [--model quasarnet-boss-sim] [--desi-rows 500] [--copies 6]

* the model from arrays: ``redsift.predict.backend.infer`` on prepared inputs (5,000 rows), the ceiling;
* a spPlate of 1,000 fibres tiled from the real BOSS spec files (``write_spplate``), predicted end to end
  (read, grid, model, catalog columns) with ``predict_catalog``;
* a DESI coadd of ``--desi-rows`` spectra tiled from the real ``coadd-4-80613`` (every HDU of its data model,
  rows repeated), the same way;
* ``--copies`` of each file in one run, serial (``jobs=1``) and with two reader processes (``jobs=2``).

The files are written to a temporary directory (nothing real is kept). Prints a Markdown table: spectra/s,
medians of ``--repeat`` rounds, and the ratio to the model's rate from arrays, measured round by round (the
model timed just before and after each case; the machine is shared and its speed drifts by ~20% between runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits

import redsift
from redsift.io.sdss import write_spplate
from redsift.models import load_model
from redsift.models.registry import get_family
from redsift.predict import predict_catalog
from redsift.predict.backend import infer

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_io import tiled_plate, timed  # noqa: E402  (the reader benchmark's plate and timer)


def _timed(fn, repeat):
    """The median rate of ``fn`` (items per second) over ``repeat`` rounds."""
    return timed(fn, repeat)[0]


def _desi_coadd(src: Path, rows: int, path: str):
    """A coadd with ``rows`` spectra: every row-indexed HDU of ``src`` tiled (images along their first axis,
    tables row by row; TARGETIDs made unique), the wavelength HDUs as they are."""
    with fits.open(src) as h:
        n = len(h["FIBERMAP"].data)
        idx = np.arange(rows) % n
        out = [fits.PrimaryHDU(header=h[0].header)]
        for hdu in h[1:]:
            name = hdu.name
            if name.endswith("WAVELENGTH") or hdu.data is None:
                out.append(hdu.copy())
            elif isinstance(hdu, fits.BinTableHDU) and len(hdu.data) == n:
                data = hdu.data[idx].copy()
                if "TARGETID" in data.names:
                    data["TARGETID"] = data["TARGETID"] + np.arange(rows) // n * 10**12
                out.append(fits.BinTableHDU(data, header=hdu.header, name=name))
            elif isinstance(hdu, fits.ImageHDU) and hdu.data.shape[0] == n:
                out.append(fits.ImageHDU(hdu.data[idx], header=hdu.header, name=name))
            else:
                out.append(hdu.copy())
        fits.HDUList(out).writeto(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--model", default="quasarnet-boss-sim")
    ap.add_argument("--desi-rows", type=int, default=500)
    ap.add_argument("--copies", type=int, default=6)
    a = ap.parse_args()
    model = load_model(a.model)
    fam = get_family(model)
    boss = sorted(str(p) for p in (REAL / "boss").glob("spec-*.fits"))
    specs = redsift.read(boss)
    X = fam.prepare(model, specs)["X"]
    X = np.tile(X, (int(np.ceil(5000 / len(X))),) + (1,) * (X.ndim - 1))[:5000]
    infer(model, X[:256])
    cases = []  # (name, callable returning the number of spectra)
    with tempfile.TemporaryDirectory() as tmp:
        plate = os.path.join(tmp, "spPlate-9999-60000.fits")
        write_spplate(tiled_plate(specs), plate)
        coadd = os.path.join(tmp, "coadd-9-99999-tiled.fits")
        _desi_coadd(REAL / "desi" / "coadd-4-80613-thru20210324.fits", a.desi_rows, coadd)
        for name, path in (("spPlate, 1,000 fibres", plate), (f"DESI coadd, {a.desi_rows} spectra", coadd)):
            predict_catalog(model, [path], progress=False)
            cases.append((f"{name}: end to end (read, grid, model, columns)",
                          lambda p=path: len(predict_catalog(model, [p], progress=False))))
            # a survey's worth: several such files, read in reader processes while the model runs
            copies = []
            for c in range(a.copies):
                os.makedirs(os.path.join(tmp, f"copy{c}"), exist_ok=True)  # the file's own name: readers go by it
                copies.append(os.path.join(tmp, f"copy{c}", os.path.basename(path)))
                os.symlink(path, copies[-1])
            for jobs in (1, 2):
                cases.append((f"{a.copies} x {name}: end to end, -j {jobs}",
                              lambda j=jobs, c=copies: len(predict_catalog(model, c, progress=False, jobs=j))))
        # rounds: the model from arrays timed next to every case in each round, so that a drift of the shared
        # machine's speed moves both sides of each ratio (the ratio is the median of the rounds' ratios)
        base, rates = [], {name: [] for name, _ in cases}
        ratios = {name: [] for name, _ in cases}
        for _ in range(a.repeat):
            for name, fn in cases:
                m0 = _timed(lambda: len(infer(model, X)), 1)
                r = _timed(fn, 1)
                m1 = _timed(lambda: len(infer(model, X)), 1)
                base += [m0, m1]
                rates[name].append(r)
                ratios[name].append(r / (0.5 * (m0 + m1)))
    rows = [("the model from arrays (prepared inputs, 5,000 rows)", statistics.median(base), 1.0)]
    rows += [(name, statistics.median(rates[name]), statistics.median(ratios[name])) for name, _ in cases]
    print(f"model {a.model}, {os.cpu_count()} cores, medians of {a.repeat} rounds (each case timed between two "
          "runs of the model from arrays; ratio: the median of the rounds' ratios)\n")
    print("| what | spectra/s | ratio to the model from arrays |\n|---|---:|---:|")
    for name, rate, ratio in rows:
        print(f"| {name} | {rate:,.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
