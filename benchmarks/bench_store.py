"""Dataset store read throughput and memory (run by hand).

    python benchmarks/bench_store.py [--n 200000]

Writes a dataset of ``n`` spectra on the QuasarNET grid (random values; the
store does not care), then reads it through a shuffled PyTorch DataLoader
(batch 256) with 0 and 2 workers, reporting spectra/s and the peak resident
memory of the reading process next to the dataset's size on disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time

import numpy as np
import torch
from astropy.table import Table

from redsift import LogGrid
from redsift.data import Dataset, DatasetWriter
from redsift.data.torchview import identity


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--batches", type=int, default=200)
    args = p.parse_args(argv)
    grid = LogGrid.quasarnet()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        path = os.path.join(tmp, "ds")
        with DatasetWriter(path, grid, "quasarnet", shard_size=50_000) as w:
            for start in range(0, args.n, 50_000):
                k = min(50_000, args.n - start)
                flux = rng.normal(size=(k, grid.npix)).astype(np.float32)
                ivar = rng.uniform(0, 2, (k, grid.npix)).astype(np.float32)
                meta = Table({"TARGETID": np.arange(start, start + k, dtype=np.int64), "Z": rng.uniform(0, 5, k)})
                w.add(flux, ivar, ivar <= 0, meta)
                del flux, ivar
        size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) / 1e9
        ds = Dataset(path)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}")
        print(f"command: python benchmarks/bench_store.py --n {args.n} --batches {args.batches}")
        print(f"dataset: {len(ds)} spectra, {size:.2f} GB on disk")
        print()
        print("| DataLoader (shuffled, batch 256) | spectra/s | peak RSS of the reader |")
        print("|---|---:|---:|")
        for workers in (0, 2):
            loader = torch.utils.data.DataLoader(ds.torch(columns=("Z",)), batch_size=256, shuffle=True,
                                                 num_workers=workers, collate_fn=identity,
                                                 generator=torch.Generator().manual_seed(0))
            t0 = time.perf_counter()
            n = 0
            for k, batch in enumerate(loader):
                n += batch["flux"].shape[0]
                if k + 1 >= args.batches:
                    break
            rate = n / (time.perf_counter() - t0)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
            print(f"| {workers} workers, {n} spectra | {rate:,.0f} | {rss:.2f} GB |")


if __name__ == "__main__":
    main()
