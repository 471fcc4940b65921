"""``redsift evaluate``: a generic report of any catalog against the truth, then the family's section.

Inputs: a prediction catalog (``redsift predict``) and the truth, either a dataset (its metadata: CLASS,
Z, BAL_FLAG, BI_CIV, SNR) or a labelled catalog (:func:`redsift.io.catalogs.read_catalog`), joined on
TARGETID. Output, in the report directory: ``summary.md``, with a section every catalog gets (classes
given per true class, redshifts where ZWARN == 0, pulls) and the section of the family named in the
catalog header's ``MODEL`` (:meth:`redsift.models.family.Family.report`; QuasarNET's is
:mod:`redsift.evaluate.quasarnet`, with its figures).
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
from astropy.table import Table, join

from ..errors import RedsiftError
from ..metrics import nmad, pull_metrics, velocity_difference

__all__ = ["load_truth", "joined", "write_report"]


def load_truth(path) -> Table:
    from ..data.store import INDEX_NAME, Dataset

    if os.path.isdir(path) and os.path.exists(os.path.join(path, INDEX_NAME)):
        meta = Dataset(path).meta
    else:
        from ..io.catalogs import read_catalog

        meta = read_catalog(path)
    keep = [c for c in ("TARGETID", "CLASS", "Z", "BAL_FLAG", "BI_CIV", "SNR", "SUBCLASS", "SURVEY", "ANOMALY")
            if c in meta.colnames]  # ANOMALY: injected anomalies (scripts/eigen_anomalies.py)
    t = Table(meta[keep], copy=True)
    for c in keep[1:]:
        t.rename_column(c, f"TRUE_{c}")
    return t


def joined(cat: Table, truth: Table) -> Table:
    cat = Table(cat, copy=True)
    for c in cat.colnames:
        if hasattr(cat[c], "filled"):
            cat[c] = cat[c].filled(np.nan if cat[c].dtype.kind == "f" else cat[c].fill_value)
    t = join(cat, truth, keys="TARGETID", join_type="inner")
    if len(t) == 0:
        raise RedsiftError("no TARGETID in common between the catalog and the truth")
    return t


def _generic(t: Table) -> list[str]:
    """The section every catalog gets: classes against the truth, redshifts where Z was measured."""
    cls = np.asarray(t["TRUE_CLASS"]).astype(str)
    spectype = np.asarray(t["SPECTYPE"]).astype(str) if "SPECTYPE" in t.colnames else np.full(len(t), "")
    z = np.asarray(t["Z"], float) if "Z" in t.colnames else np.full(len(t), np.nan)
    zwarn = np.asarray(t["ZWARN"], np.int64)
    lines = ["## Every row", "", "| true class | spectra | SPECTYPE given (counts) | Z measured | ZWARN == 0 |",
             "|---|---:|---|---:|---:|"]
    for c in sorted(set(cls)):
        sel = cls == c
        given = ", ".join(f"{k} {v}" for k, v in sorted(Counter(spectype[sel]).items(), key=lambda kv: -kv[1]))
        lines.append(f"| {c} | {int(sel.sum())} | {given} | {int(np.isfinite(z[sel]).sum())} | "
                     f"{int((zwarn[sel] == 0).sum())} |")
    ok = np.isfinite(z) & (zwarn == 0)
    if ok.any():
        dv = velocity_difference(z[ok], t["TRUE_Z"][ok])
        lines += ["", f"Rows with ZWARN == 0 (a measured Z): {int(ok.sum())}; dv = c (z - z_true) / (1 + z_true): "
                      f"median {np.median(dv):.0f}, NMAD {nmad(dv):.0f} km/s, |dv| > 3000 km/s: "
                      f"{100 * np.mean(np.abs(dv) > 3000):.2f}%."]
    if "ZERR" in t.colnames and np.isfinite(np.asarray(t["ZERR"], float)[ok]).any():
        m = pull_metrics(t["Z"], t["ZERR"], t["TRUE_Z"], ok)
        lines.append(f"Pulls (z - z_true) / ZERR: std {m['pull_std']:.2f}, NMAD {m['pull_nmad']:.2f}.")
    return lines


def write_report(cat_path, truth_path, out, family=None, overrides: dict | None = None, label: str = "") -> str:
    """Compute everything, write the PNGs and summary.md into ``out``; return the Markdown.

    The generic section covers any catalog; the section of ``family`` (the adapter of the family named
    in the catalog header's ``MODEL = FAMILY:NAME``, found by the caller in the registry) follows.
    ``overrides`` are the user's ``--set KEY=VALUE`` values, handed to the family."""
    from astropy.table import Table as T

    os.makedirs(out, exist_ok=True)
    cat = T.read(cat_path)
    fam = family
    t = joined(cat, load_truth(truth_path))
    lines = [f"# Evaluation{(': ' + label) if label else ''}", "",
             f"catalog `{cat_path}` (model {cat.meta.get('MODEL', 'unknown')}), truth `{truth_path}`: {len(t)} "
             f"spectra joined on TARGETID.", ""]
    lines += _generic(t)
    if fam is not None:
        # (the families' figures are titled with the run's label)
        given = {"label": label} if label else {}
        lines += [""] + fam.report(t, out, dict(cat.meta), {**given, **(overrides or {})}, str(truth_path))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    return text
