"""Simulator throughput (run by hand, not in the test suite).

    python benchmarks/bench_simulate.py [--repeat 3] [--templates ../shared/data/templates]

Spectra per second on one core (blocks of 1000, native grid, noise and truth
included), per survey and mode, as medians over ``--repeat`` rounds; then the
whole ``simulate`` command writing a QuasarNET-grid dataset with -j1 and -j2,
side by side.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import redsift
from redsift.simulate import simulate, simulate_block

MIX = {"QSO": 0.6, "STAR": 0.25, "GALAXY": 0.15}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--templates", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "templates"))
    args = p.parse_args(argv)
    rows = []
    for mode, tpl in (("templates", args.templates), ("parametric", None)):
        for survey in ("boss", "desi", "lamost"):
            simulate_block(0, 20, 0, survey, MIX, 0, tpl)  # warm up (library load)
            rates = []
            for r in range(args.repeat):
                t0 = time.perf_counter()
                simulate_block(r + 1, 1000, 0, survey, MIX, 0, tpl)
                rates.append(1000 / (time.perf_counter() - t0))
            rows.append((f"simulate_block, {survey}, {mode}, native grid, 1 core", statistics.median(rates),
                         min(rates), max(rates)))
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in (1, 2):
            rates = []
            for r in range(args.repeat):
                t0 = time.perf_counter()
                simulate(4000, "boss", os.path.join(tmp, f"j{jobs}-{r}"), MIX, seed=r, templates=args.templates,
                         jobs=jobs, progress=False)
                rates.append(4000 / (time.perf_counter() - t0))
            rows.append((f"redsift simulate -n 4000 --survey boss -j{jobs} (QuasarNET grid, written)",
                         statistics.median(rates), min(rates), max(rates)))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"numpy {np.__version__}, redsift {redsift.__version__}")
    print(f"command: python benchmarks/bench_simulate.py --repeat {args.repeat}")
    print()
    print("| what | spectra/s median | min | max |")
    print("|---|---:|---:|---:|")
    for name, med, lo, hi in rows:
        print(f"| {name} | {med:,.0f} | {lo:,.0f} | {hi:,.0f} |")


if __name__ == "__main__":
    main()
