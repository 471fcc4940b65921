"""End-to-end prediction from BOSS spec files, the whole process timed from outside.

    python benchmarks/bench_predict_files.py [--repeat 20] [--model quasarnet-boss-sim]

Predicts the 22 real BOSS spec files of ../shared/data/real/boss, each listed --repeat times, and prints
the files per second to stderr. Used to compare two checkouts side by side, A B A B ..., e.g. with
``/usr/bin/time -v`` on ``python benchmarks/bench_predict_files.py`` and on the same command with
``PYTHONPATH=OTHER_CHECKOUT/src`` (docs/benchmarks.md, "Family plug-ins").
"""

import argparse
import sys
import time
from pathlib import Path

from redsift.models import load_model
from redsift.predict import predict_catalog

p = argparse.ArgumentParser()
p.add_argument("--repeat", type=int, default=20)
p.add_argument("--model", default="quasarnet-boss-sim")
a = p.parse_args()
boss = sorted((Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "boss").glob("spec-*.fits"))
files = [str(f) for f in boss] * a.repeat
model = load_model(a.model)
t0 = time.perf_counter()
cat = predict_catalog(model, files, progress=False)
print(f"{len(cat)} rows, {len(files) / (time.perf_counter() - t0):.0f} files/s", file=sys.stderr)
