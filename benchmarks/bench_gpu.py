"""The GPU rows of issues 19 and 20, prepared for a session lent a device (run there by hand, in one call).

    PYTHONPATH=src python3 benchmarks/bench_gpu.py [--n 4000] [--reps 3] [--device cuda] [--out $OUT/gpu.json]

(The device image has torch, numpy, scipy, h5py, numba and onnxruntime but, as last listed, not astropy: carry its
wheels -- astropy, pyerfa, astropy-iers-data, pyyaml if missing -- as the device tool's README says, and put them on
``PYTHONPATH`` or ``pip install --no-index`` them there first.)

Nothing has to travel but the repository: the spectra are simulated in parametric mode (no templates: the
device machine has no ``../shared``; a mix of quasars, stars and galaxies on BOSS pixels, seed 4242), the
released models are in the package. On the same prepared arrays, side by side in one process, the medians of
``--reps`` rounds:

* the eigen scan (``eigen-boss-sim``, issue 19): ms per spectrum over the quasar classes' whole redshift range
  and over every class, the CPU with one torch thread (the issue's "per core") against the device;
* end to end from the simulated dataset (``predict_catalog``: read, grid, model, catalog columns; issue 20):
  spectra/s of QuasarNET (``quasarnet-boss-sim``) and of the default (``redsift-sim``), on the CPU (all its cores)
  and on the device, and whether the two catalogs agree (types identical, ``Z`` within 1e-4 in 1 + z);
* the machine, the versions and the command, in the JSON written to ``--out`` and printed.

On a machine without CUDA ``--device cpu`` runs the same code twice on the CPU (a check of the script itself).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch


def _scan_rates(model, X, reps: int, batch: int = 256) -> dict:
    """Seconds per spectrum of the eigen scan over the quasar classes and over every class (medians)."""
    from redsift.models.eigen import scan

    q = [k for k, t in enumerate(model.config.tax.spectypes) if t == "QSO"]
    dev = model.templates.device
    with torch.inference_mode():
        scan(model, X[:batch])  # warm: FFT plans, kernels, caches
        out = {}
        for name, classes in (("qso", q), ("all", None)):
            runs = []
            for _ in range(reps):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                for s in range(0, len(X), batch):
                    scan(model, X[s:s + batch], classes=classes)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                runs.append((time.perf_counter() - t) / len(X))
            out[name] = statistics.median(runs)
    return out


def _predict_rate(name: str, device: str, data: str, reps: int):
    """Spectra/s of ``predict_catalog`` on the dataset (median of ``reps`` after a warm call) and its catalog."""
    from redsift.models import load_model
    from redsift.predict import predict_catalog

    model = load_model(name, device=device)
    cat = predict_catalog(model, [data], progress=False)  # warm
    runs = []
    for _ in range(reps):
        t = time.perf_counter()
        cat = predict_catalog(model, [data], progress=False)
        runs.append(len(cat) / (time.perf_counter() - t))
    return statistics.median(runs), cat


def _agree(a, b) -> dict:
    ta, tb = (np.char.strip(np.asarray(c["SPECTYPE"]).astype(str)) for c in (a, b))
    za, zb = np.asarray(a["Z"], float), np.asarray(b["Z"], float)
    both = np.isfinite(za) & np.isfinite(zb)
    return {"types_identical": bool(np.array_equal(ta, tb)),
            "z_within_1e-4": float(np.mean(np.abs(za - zb)[both] / (1 + zb[both]) < 1e-4)) if both.any() else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args(argv)
    from redsift.data.store import Dataset
    from redsift.models import get_family, load_model
    from redsift.simulate import simulate

    tmp = tempfile.mkdtemp()
    data = os.path.join(tmp, "sim")
    os.environ.pop("REDSIFT_TEMPLATES", None)  # parametric mode, whatever this machine has
    simulate(a.n, "boss", data, mix={"QSO": 0.5, "STAR": 0.3, "GALAXY": 0.2}, seed=4242, grid="boss", progress=False)
    ds = Dataset(data)
    flux, ivar, _ = ds.read(np.arange(len(ds)))
    fam = get_family("eigen")
    cpu_model = load_model("eigen-boss-sim")
    X = fam.prepare_gridded(cpu_model, flux, ivar, np.zeros(len(flux), np.int64))["X"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cpu = _scan_rates(cpu_model, X, a.reps)
    torch.set_num_threads(threads)
    dev = _scan_rates(load_model("eigen-boss-sim", device=a.device), X, a.reps)
    res = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
           "device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu",
           "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "n_spectra": len(X),
           "eigen_scan_ms_per_spectrum": {"cpu_1_thread": {k: 1e3 * v for k, v in cpu.items()},
                                          f"on_{a.device}": {k: 1e3 * v for k, v in dev.items()}},
           "end_to_end_spectra_per_s": {}, "catalogs_agree": {}}
    for name in ("quasarnet-boss-sim", "redsift-sim"):
        r_cpu, c_cpu = _predict_rate(name, "cpu", data, a.reps)
        r_dev, c_dev = _predict_rate(name, a.device, data, a.reps)
        res["end_to_end_spectra_per_s"][name] = {"cpu": r_cpu, f"on_{a.device}": r_dev, "ratio": r_dev / r_cpu}
        res["catalogs_agree"][name] = _agree(c_dev, c_cpu)
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
