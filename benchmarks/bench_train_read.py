"""Random training batches from a dataset: read from the shards vs after ``Dataset.load()`` (run by hand).

    python benchmarks/bench_train_read.py DATASET [--batches 20] [--batch-size 256]

Draws ``batches`` random batches (what the training loop's shuffled order asks for) and times
``Dataset.read`` on each, first from the HDF5 shards, then after loading the dataset into memory (the
training loop does this when the set fits in ``TrainConfig.memory_gb``). Prints the median seconds per
batch of each and their ratio, measured side by side in one run, and the load time.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from redsift.data import Dataset


def _median_read(ds, batches):
    times = []
    for idx in batches:
        t = time.perf_counter()
        ds.read(idx)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("dataset")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    a = p.parse_args(argv)
    ds = Dataset(a.dataset)
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(ds), a.batch_size, replace=False) for _ in range(a.batches)]
    shards = _median_read(ds, batches)
    t = time.perf_counter()
    ds.load()
    load = time.perf_counter() - t
    mem = _median_read(ds, batches)
    print(f"{ds}\nmachine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"median s per batch of {a.batch_size}: shards {shards:.4f}, loaded {mem:.5f}; ratio {shards / mem:.0f}x; "
          f"load {load:.1f} s ({ds.nbytes / 2**30:.2f} GB)")


if __name__ == "__main__":
    main()
