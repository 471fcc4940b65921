"""The eigen family's chi-square scan against Redrock, marginal cost per spectrum on one core (run by hand).

    taskset -c 0 python benchmarks/bench_eigen.py --model MODEL --files DIR/spec-*.fits \\
        [--redrock-python /tmp/venv-rr/bin/python] [--reps 3]

redsift: the files are read and prepared once (not timed), then the scan runs ``reps`` times on the arrays
with one torch thread, with the native stage's compiled kernel (``redsift.models.eigen_kernels``, numba) and,
alternated in the same run, with the torch path it replaces; quoted are the medians per spectrum of (a) the
quasar classes only over their whole
redshift range (the issue's "full quasar redshift range at native BOSS resolution") and (b) every class
(what Redrock does). Redrock: ``../shared/peers/redrock_boss.py`` (Redrock 0.21, its templates) run on 12
and on 2 of the same files, wall time of the whole process; the marginal cost is ``(T12 - T2) / 10`` so
start-up and template loading do not count, as the project measures it. Redrock runs between the redsift
repetitions, side by side, pinned to the same core by the caller's ``taskset``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _redrock(python, files, n) -> float:
    out = os.path.join(tempfile.mkdtemp(), "rr.csv")
    t = time.perf_counter()
    subprocess.run([python, str(REPO.parent / "shared" / "peers" / "redrock_boss.py"), "--files", *files[:n], "--out", out,
                    "--ncpu", "1"], check=True, capture_output=True)
    return time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--files", nargs="+", required=True)
    p.add_argument("--redrock-python")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from redsift.io import read
    from redsift.models import get_family, load_model
    from redsift.models.eigen import scan

    files = sorted(f for pat in a.files for f in glob.glob(pat))
    model = load_model(a.model)
    fam = get_family("eigen")
    X = np.concatenate([fam.prepare(model, read(f))["X"] for f in files])
    q = [k for k, t in enumerate(model.config.tax.spectypes) if t == "QSO"]
    scan(model, X[:8])
    from redsift.models import eigen_kernels

    compiled = eigen_kernels.AVAILABLE
    res = {"qso": [], "all": [], "qso_torch": [], "all_torch": [], "redrock": []}
    for rep in range(a.reps):
        # with the compiled native kernel and (same run, alternated) with the torch path it replaces
        for name, classes, kern in (("qso", q, True), ("all", None, True), ("qso_torch", q, False),
                                    ("all_torch", None, False)):
            if kern and not compiled:
                continue
            eigen_kernels.AVAILABLE = kern
            t = time.perf_counter()
            with torch.inference_mode():
                for s in range(0, len(X), a.batch):
                    scan(model, X[s:s + a.batch], classes=classes)
            res[name].append((time.perf_counter() - t) / len(X))
        eigen_kernels.AVAILABLE = compiled
        if a.redrock_python:
            t12 = _redrock(a.redrock_python, files, 12)
            t2 = _redrock(a.redrock_python, files, 2)
            res["redrock"].append((t12 - t2) / 10)
    med = {k: float(np.median(v)) for k, v in res.items() if v}
    out = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                      f"{os.cpu_count()} cores, torch {torch.__version__}, 1 thread",
           "command": " ".join(sys.argv), "n_spectra": len(X), "ncomp": model.config.ncomp,
           "ms_per_spectrum_qso": 1e3 * med.get("qso", med["qso_torch"]),
           "ms_per_spectrum_all": 1e3 * med.get("all", med["all_torch"]),
           "ms_per_spectrum_qso_torch_path": 1e3 * med["qso_torch"], "ms_per_spectrum_all_torch_path": 1e3 * med["all_torch"],
           "compiled_kernel": compiled, "raw": res}
    if "redrock" in med:
        out["redrock_ms_per_spectrum"] = 1e3 * med["redrock"]
        out["ratio_all"] = med["redrock"] / out["ms_per_spectrum_all"] * 1e3
        out["ratio_qso"] = med["redrock"] / out["ms_per_spectrum_qso"] * 1e3
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
