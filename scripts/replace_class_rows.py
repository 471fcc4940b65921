#!/usr/bin/env python
"""Replace one class's rows of a dataset by as many rows of the same class (per survey) appended after them,
keeping the class mix: ``train_clsr`` of docs/classifier.md (the training set's galaxies swapped for galaxies
of a newer simulator, appended to a copy of the set with ``redsift simulate --append``).

    python scripts/replace_class_rows.py SRC --first-new N --cls GALAXY -o OUT

Rows ``0 .. N-1`` are the original set, rows from ``N`` the appended ones; OUT holds every original row not of
``--cls`` and, per survey, the first appended rows of ``--cls``, as many as the original had.
"""

from __future__ import annotations

import argparse

import numpy as np

from redsift.data.store import Dataset, DatasetWriter


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("--first-new", type=int, required=True, help="index of the first appended row")
    ap.add_argument("--cls", default="GALAXY")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args(argv)
    src = Dataset(a.src)
    meta = src.meta
    cls = np.asarray(meta["CLASS"]).astype(str)
    survey = np.asarray(meta["SURVEY"]).astype(str)
    idx = np.arange(len(src))
    old = idx < a.first_new
    keep = old & (cls != a.cls)
    for s in np.unique(survey):
        n = int((old & (cls == a.cls) & (survey == s)).sum())
        new = np.flatnonzero(~old & (cls == a.cls) & (survey == s))
        if len(new) < n:
            ap.error(f"{s}: {n} original {a.cls} rows but only {len(new)} appended")
        keep[new[:n]] = True
        print(f"{s}: {n} {a.cls} rows replaced")
    rows = np.flatnonzero(keep)
    with DatasetWriter(a.output, src.grid, src.binning, shard_size=1000,
                       provenance={"made_by": f"replace_class_rows.py {a.src} --first-new {a.first_new} --cls {a.cls}"}) as w:
        for start in range(0, len(rows), 5000):
            r = rows[start:start + 5000]
            flux, ivar, mask = src.read(r)
            w.add(flux, ivar, mask, meta[r])
    print(Dataset(a.output))


if __name__ == "__main__":
    main()
