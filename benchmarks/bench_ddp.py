"""Training throughput: one process against torchrun with N processes on the same machine (run by hand).

    python benchmarks/bench_ddp.py [--n 4096] [--steps 12] [--batch-size 256] [--nproc 2]

Simulates a QuasarNET training set (seeded), then times ``redsift train quasarnet`` for ``--steps`` steps
of the same global batch: one process with ``--nproc`` torch threads, then ``torchrun --nproc_per_node
NPROC`` with one thread each (gloo on CPUs). Wall time of the whole command minus that of a 1-step run of
the same kind (start-up, dataset load and model build excluded: the marginal cost of the steps). Prints one
Markdown table with spectra/s and the ratio, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _time(cmd, env) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--nproc", type=int, default=2)
    a = p.parse_args(argv)
    from redsift.simulate import simulate

    d = Path(tempfile.mkdtemp())
    simulate(a.n, "boss", d / "train", seed=9, grid="quasarnet", progress=False)
    simulate(256, "boss", d / "val", seed=10, grid="quasarnet", progress=False)
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def args(out, steps, threads):
        return ["train", "quasarnet", "--data", str(d / "train"), "--val", str(d / "val"), "-o", str(out),
                "--batch-size", str(a.batch_size), "--epochs", "1", "--max-steps", str(steps), "--threads",
                str(threads), "--quiet"]

    one = [sys.executable, "-m", "redsift"]
    many = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(a.nproc), "-m",
            "redsift"]
    single = _time(one + args(d / "s", a.steps, a.nproc), env) - _time(one + args(d / "s1", 1, a.nproc), env)
    ddp = _time(many + args(d / "m", a.steps, 1), env) - _time(many + args(d / "m1", 1, 1), env)
    n = (a.steps - 1) * a.batch_size
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; QuasarNET, global batch {a.batch_size}, "
          f"{a.steps - 1} marginal steps")
    print(f"command: python benchmarks/bench_ddp.py --n {a.n} --steps {a.steps} --batch-size {a.batch_size} "
          f"--nproc {a.nproc}")
    print()
    print("| run | spectra/s | ratio |")
    print("|---|---:|---:|")
    print(f"| one process, {a.nproc} torch threads | {n / single:.0f} | 1.00 |")
    print(f"| torchrun, {a.nproc} processes x 1 thread (gloo) | {n / ddp:.0f} | {single / ddp:.2f} |")


if __name__ == "__main__":
    main()
