"""End to end from BOSS spec files: redsift's CLI against QuasarNP, whole processes, side by side (issue 20).

    python benchmarks/bench_vs_quasarnp.py --copies 250 --qnp-python /tmp/venv-qnp/bin/python [--rounds 2]

Links the real BOSS spec files of ../shared/data/real/boss ``--copies`` times into a temporary directory
(``spec-...-rNNN.fits``), then runs, alternately in each round, QuasarNP as the project measures it
(``../shared/peers/quasarnp_boss.py``, the published qn6_100f weights) and ``redsift predict --model
quasarnet-boss-sim`` with ``-j 1`` and ``-j 2``, each as a fresh process timed from outside (start-up, model
load and the catalog write included), page cache warm. Prints the files per second of each run and the
median ratio to QuasarNP.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=250)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--qnp-python", default="/tmp/venv-qnp/bin/python")
    ap.add_argument("--model", default="quasarnet-boss-sim")
    a = ap.parse_args()
    src = sorted((SHARED / "data" / "real" / "boss").glob("spec-*.fits"))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "files"
        d.mkdir()
        for r in range(a.copies):
            for f in src:
                os.symlink(f.resolve(), d / f"{f.stem}-r{r:04d}.fits")
        files = sorted(str(p) for p in d.iterdir())
        n = len(files)
        redsift = str(Path(sys.executable).with_name("redsift"))
        runs = {
            "QuasarNP (quasarnp_boss.py, qn6_100f)": [a.qnp_python, str(SHARED / "peers" / "quasarnp_boss.py"),
                                                      "--weights", "qn6_100f", "--files", *files,
                                                      "--out", f"{tmp}/qnp.fits"],
            f"redsift predict --model {a.model} -j 1": [redsift, "predict", str(d), "--model", a.model, "-o",
                                                        f"{tmp}/rs1.fits", "--overwrite", "-j", "1"],
            f"redsift predict --model {a.model} -j 2": [redsift, "predict", str(d), "--model", a.model, "-o",
                                                        f"{tmp}/rs2.fits", "--overwrite", "-j", "2"],
        }
        rates = {k: [] for k in runs}
        for _ in range(a.rounds):
            for name, cmd in runs.items():
                t = time.perf_counter()
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                rates[name].append(n / (time.perf_counter() - t))
                print(f"{name}: {rates[name][-1]:.0f} files/s", file=sys.stderr)
        base = statistics.median(rates[next(iter(runs))])
        print(f"\n{n} files, {a.rounds} rounds, medians\n\n| run | files/s | ratio to QuasarNP |\n|---|---:|---:|")
        for name, r in rates.items():
            m = statistics.median(r)
            print(f"| {name} | {m:.0f} | {m / base:.2f} |")


if __name__ == "__main__":
    main()
