"""Serial prediction against a local Dask cluster on the same files and cores (run by hand; issue 20).

    python benchmarks/bench_distributed.py [--copies 20] [--model quasarnet-boss-sim] [--workers 2]

The real BOSS spec files are linked ``--copies`` times under new names (a larger set on the same bytes;
the page cache is warm after the first pass). Times, side by side in one run: the serial pipeline
(``predict_catalog``, torch threads = all cores), and ``predict_distributed`` with ``--workers`` worker
processes of one thread each, total wall time including the cluster's start and each worker's model load,
and the same again with ``resume`` (every shard done: the merge alone). Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--copies", type=int, default=20)
    p.add_argument("--model", default="quasarnet-boss-sim")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--files-per-task", type=int, default=64)
    a = p.parse_args(argv)
    from redsift.models import load_model
    from redsift.predict import predict_catalog
    from redsift.predict.distributed import predict_distributed

    src = sorted((REPO.parent / "shared" / "data" / "real" / "boss").glob("spec-*.fits"))
    d = Path(tempfile.mkdtemp())
    files = []
    for c in range(a.copies):
        for f in src:
            q = d / f"spec-{c:03d}{f.name[4:]}"
            os.symlink(f, q)
            files.append(str(q))
    model = load_model(a.model)
    predict_catalog(model, files[:5], progress=False)  # warm up (imports, page cache)
    t = time.perf_counter()
    predict_catalog(model, files, progress=False)
    serial = time.perf_counter() - t
    out = str(d / "cat.fits")
    t = time.perf_counter()
    predict_distributed(a.model, files, out, workers=a.workers, files_per_task=a.files_per_task, progress=False)
    dist = time.perf_counter() - t
    t = time.perf_counter()
    predict_distributed(a.model, files, out, workers=a.workers, files_per_task=a.files_per_task, progress=False,
                        resume=True)
    merge = time.perf_counter() - t
    n = len(files)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; model {a.model}; {n} files")
    print(f"command: python benchmarks/bench_distributed.py --copies {a.copies} --model {a.model} --workers {a.workers}")
    print()
    print("| run | seconds | spectra/s | ratio to serial |")
    print("|---|---:|---:|---:|")
    print(f"| serial pipeline | {serial:.1f} | {n / serial:.0f} | 1.00 |")
    print(f"| Dask LocalCluster, {a.workers} workers (start + model loads included) | {dist:.1f} | {n / dist:.0f} | "
          f"{serial / dist:.2f} |")
    print(f"| resume with every shard done (the merge alone) | {merge:.1f} | | |")


if __name__ == "__main__":
    main()
