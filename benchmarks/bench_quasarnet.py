"""QuasarNET inference throughput on the CPU (run by hand, not in the test suite).

    python benchmarks/bench_quasarnet.py [--model quasarnet|DIR] [--repeat 5] [--threads 2]

Side by side in one run, medians over ``--repeat`` rounds:
* the ceiling: a large float32 matrix product (GFLOP/s) -> spectra/s at 2 x 17.6 M flop per spectrum;
* from preprocessed arrays (batch 4096): eager PyTorch (inference mode), TorchScript frozen, ONNX Runtime
  (the plain export of the model, and redsift's inference form: BN folded, 1 x k 2-D convolutions);
* end to end: BOSS spec files (read + QuasarNET binning + model + catalog rows) and a 1000-fiber spPlate.
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
import torch

import redsift
from redsift.models import create_model, load_model
from redsift.predict import infer as predict_arrays
from redsift.predict import onnx_session, predict_catalog


def med(fn, repeat):
    xs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        xs.append(n / (time.perf_counter() - t0))
    return statistics.median(xs), min(xs), max(xs)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None, help="released model or directory (default: an untrained one)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model) if args.model else create_model("quasarnet").eval()
    flops = 0
    with torch.no_grad():  # count multiply-adds of the convolutions and dense layers
        L, cin = model.config.logrid.npix, 1
        for conv, pad in zip(model.convs, model._pads):
            L = (L + sum(pad) - conv.kernel_size[0]) // conv.stride[0] + 1
            flops += L * conv.out_channels * cin * conv.kernel_size[0]
            cin = conv.out_channels
        flops += model.fc.in_features * model.fc.out_features
        flops += 2 * model.config.nfinders * model.config.fc * model.config.nboxes
    rows = []
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    a @ b

    def matmul():
        a @ b
        return 1

    mm = med(matmul, args.repeat)
    gflops = 2 * 2048**3 * mm[0] / 1e9
    ceiling = gflops * 1e9 / (2 * flops)
    rows.append(("ceiling: float32 2048^3 matmul", f"{gflops:.0f} GFLOP/s -> {ceiling:,.0f} spectra/s", ""))
    X = np.random.default_rng(0).normal(size=(4096, model.config.logrid.npix)).astype(np.float32)

    def eager():
        predict_arrays(model, X, batch_size=4096, backend="torch")
        return len(X)

    eager()
    e = med(eager, args.repeat)
    rows.append(("from arrays: eager PyTorch, inference mode, batch 4096", f"{e[0]:,.0f}", f"{e[0] / e[0]:.2f}"))
    try:
        with torch.inference_mode():
            traced = torch.jit.freeze(torch.jit.trace(model.eval(), torch.from_numpy(X[:8])))

        def ts():
            with torch.inference_mode():
                traced(torch.from_numpy(X))
            return len(X)

        ts()
        t = med(ts, args.repeat)
        rows.append(("from arrays: TorchScript traced + frozen", f"{t[0]:,.0f}", f"{t[0] / e[0]:.2f}"))
    except Exception as exc:  # pragma: no cover
        rows.append(("from arrays: TorchScript", f"failed: {exc}", ""))
    if onnx_session(model, args.threads) is not None:
        # the plain export of the training module (1-D convolutions, batch norm as its own nodes):
        # what redsift used before the inference form, kept here as the reference
        plain = onnx_session(model, args.threads, form="plain")

        def ort_plain():
            plain.run(None, {"x": X})
            return len(X)

        ort_plain()
        o = med(ort_plain, args.repeat)
        rows.append(("from arrays: ONNX Runtime, plain 1-D export, batch 4096", f"{o[0]:,.0f}", f"{o[0] / e[0]:.2f}"))
        for bs in (256, 1024, 4096):
            def ort(bs=bs):
                predict_arrays(model, X, batch_size=bs, backend="onnx")
                return len(X)

            ort()
            o = med(ort, args.repeat)
            rows.append((f"from arrays: ONNX Runtime, inference form, batch {bs}", f"{o[0]:,.0f}", f"{o[0] / e[0]:.2f}"))
    boss = sorted((Path(args.data) / "real" / "boss").glob("spec-*.fits"))
    if boss:
        files = [str(f) for f in boss] * 5

        def e2e():
            predict_catalog(model, files, progress=False)
            return len(files)

        r = med(e2e, max(1, args.repeat // 2))
        rows.append((f"end to end: {len(files)} BOSS spec files (read, bin, model, catalog)", f"{r[0]:,.0f}", ""))

        def read_only():
            for f in files:
                redsift.read(f)
            return len(files)

        r2 = med(read_only, max(1, args.repeat // 2))
        rows.append(("   the same files, reading alone", f"{r2[0]:,.0f}", ""))
        from redsift.io.sdss import write_spplate

        specs = redsift.read(boss)
        k = int(np.ceil(1000 / specs.nspec))
        big = redsift.Spectra(specs.wave, np.tile(specs.flux, (k, 1))[:1000], np.tile(specs.ivar, (k, 1))[:1000])
        big.meta["PLATE"], big.meta["MJD"], big.meta["FIBERID"] = np.full(1000, 9999), np.full(1000, 60000), np.arange(1, 1001)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "spPlate-9999-60000.fits")
            write_spplate(big, path)

            def plate():
                predict_catalog(model, [path], progress=False)
                return 1000

            r3 = med(plate, max(1, args.repeat // 2))
            rows.append(("end to end: spPlate with 1000 fibers", f"{r3[0]:,.0f}", ""))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({args.threads} threads), redsift {redsift.__version__}; {flops / 1e6:.1f} M multiply-adds per spectrum")
    print(f"command: python benchmarks/bench_quasarnet.py --repeat {args.repeat} --threads {args.threads}"
          + (f" --model {args.model}" if args.model else ""))
    print()
    print("| what | spectra/s (median) | ratio to eager |")
    print("|---|---:|---:|")
    for name, v, r in rows:
        print(f"| {name} | {v} | {r} |")


if __name__ == "__main__":
    main()
