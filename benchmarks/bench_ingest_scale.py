"""``redsift ingest`` from 1k to 100k spectra: time per spectrum and peak memory (issue 20, "Memory").

    python benchmarks/bench_ingest_scale.py [--sizes 1000 10000 100000] [--jobs 1] [--tmp DIR]

One spPlate of 1,000 fibres is tiled from the real BOSS spec files (``write_spplate``, as in
``bench_many_spectra.py``) and linked under ``N / 1000`` plate names laid out as on the archive
(``PLATE/spPlate-PLATE-60000.fits``: the ingester joins by file name, and the page cache holds one file, so what is
measured is ingest's own work, not the disk); an spAll-like catalog of ``N`` rows (PLATE, MJD, FIBERID, CLASS,
SUBCLASS, Z, ZWARNING) names every fibre. Each size runs ``redsift ingest`` in a fresh process under
``/usr/bin/time -v`` (wall time and the peak resident memory of the process and its largest child) and prints a
Markdown table: spectra, plates, wall s, ms per spectrum, the marginal ms per spectrum from the previous size, and
peak MB. The dataset is written to the temporary directory and removed (nothing real is kept).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from astropy.table import Table

import redsift
from redsift.io.sdss import write_spplate

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_io import tiled_plate  # noqa: E402  (the reader benchmark's plate)

MJD = 60000
FIBRES = 1000


def _layout(root: Path, plate_file: str, n: int) -> Path:
    """``n / 1000`` plates under ``root/plates`` (links to ``plate_file``) and their catalog; returns its path."""
    nplate = int(np.ceil(n / FIBRES))
    plates = 10000 + np.arange(nplate)
    for p in plates:
        d = root / "plates" / str(p)
        d.mkdir(parents=True, exist_ok=True)
        os.symlink(plate_file, d / f"spPlate-{p}-{MJD}.fits")
    rng = np.random.default_rng(n)
    plate = np.repeat(plates, FIBRES)[:n].astype(np.int32)
    fiber = np.tile(np.arange(1, FIBRES + 1), nplate)[:n].astype(np.int32)
    cls = rng.choice(np.array(["QSO", "STAR", "GALAXY"]), n)
    cat = Table({"PLATE": plate, "MJD": np.full(n, MJD, np.int32), "FIBERID": fiber, "CLASS": cls,
                 "SUBCLASS": np.full(n, ""), "Z": rng.uniform(0, 3, n), "ZWARNING": np.zeros(n, np.int32)})
    path = root / "spAll-bench.fits"
    cat.write(path)
    return path


def _timed_ingest(catalog: Path, spectra: Path, out: Path, jobs: int) -> tuple[float, float, str]:
    exe = shutil.which("redsift") or str(Path(sys.executable).with_name("redsift"))
    cmd = ["/usr/bin/time", "-v", exe, "ingest", "--catalog", str(catalog), "--spectra", str(spectra), "-o", str(out),
           "-j", str(jobs)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"ingest failed ({r.returncode}): {r.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", r.stderr)
    h, m, s = (float(g) if g else 0.0 for g in wall.groups())
    rss = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)[1]) / 1024
    last = [ln for ln in (r.stdout + r.stderr).splitlines() if "written" in ln]
    return 3600 * h + 60 * m + s, rss, last[-1].strip() if last else ""


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--tmp", default=None, help="where the plates' links and the datasets go (default: $TMPDIR)")
    a = ap.parse_args(argv)
    specs = redsift.read(sorted(str(p) for p in (REAL / "boss").glob("spec-*.fits")))
    rows = []
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        plate_file = os.path.join(tmp, f"spPlate-9999-{MJD}.fits")
        write_spplate(tiled_plate(specs, FIBRES), plate_file)
        for n in a.sizes:
            root = Path(tmp) / f"n{n}"
            catalog = _layout(root, plate_file, n)
            wall, rss, said = _timed_ingest(catalog, root / "plates", root / "ds", a.jobs)
            rows.append((n, int(np.ceil(n / FIBRES)), wall, rss, said))
            shutil.rmtree(root)
            print(f"{n}: {wall:.1f} s, {rss:.0f} MB; {said}", file=sys.stderr, flush=True)
    print(f"redsift ingest, -j {a.jobs}, {os.cpu_count()} cores, one 1,000-fibre spPlate linked under every plate "
          "name (page cache warm)\n")
    print("| spectra | plates | wall s | ms / spectrum | marginal ms / spectrum | peak MB |\n|---:|---:|---:|---:|---:|---:|")
    prev = None
    for n, nplate, wall, rss, _ in rows:
        marg = f"{1000 * (wall - prev[1]) / (n - prev[0]):.3f}" if prev and n > prev[0] else "—"
        print(f"| {n:,} | {nplate} | {wall:.1f} | {1000 * wall / n:.3f} | {marg} | {rss:.0f} |")
        prev = (n, wall)


if __name__ == "__main__":
    main()
