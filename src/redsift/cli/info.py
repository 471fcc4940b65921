"""``redsift info`` and ``redsift formats``."""

from __future__ import annotations

import json

import numpy as np

from ..errors import SpectrumFileError, UnknownFormatError
from ..grid import LogGrid
from ..io.registry import expand_paths, read_file, readers
from ..preprocess import coverage, snr_median, to_grid
from ..zwarning import ZWarningMask, describe


def describe_spectra_file(path: str, fmt: str | None = None) -> dict:
    """Summary of one spectrum file (raises SpectrumFileError)."""
    s = read_file(path, fmt)
    zw = np.asarray(s.meta["ZWARN"])
    snr = snr_median(s.flux, s.weights)
    valid = s.weights > 0
    wave = np.broadcast_to(s.wave, s.flux.shape)
    wmin = float(np.min(np.where(valid, wave, np.inf))) if valid.any() else float("nan")
    wmax = float(np.max(np.where(valid, wave, -np.inf))) if valid.any() else float("nan")
    qn = to_grid(s, LogGrid.quasarnet(), "quasarnet")
    cov = coverage(qn.ivar)
    problems = []
    n_nodata = int(np.sum(zw & ZWarningMask.NODATA > 0))
    if n_nodata:
        problems.append(f"{n_nodata} spectrum(s) with no valid pixel (NODATA)")
    n_bad = int(np.sum(zw & ZWarningMask.BAD_VALUES > 0))
    if n_bad:
        problems.append(f"{n_bad} spectrum(s) with NaN/inf flux or ivar (masked, BAD_VALUES)")
    n_low = int(np.sum((cov < 0.5) & (cov > 0)))
    if n_low:
        problems.append(f"{n_low} spectrum(s) cover < 50% of the QuasarNET grid (LITTLE_COVERAGE)")
    frac_masked = float(1 - valid.mean()) if valid.size else 1.0
    if frac_masked > 0.2:
        problems.append(f"{100 * frac_masked:.0f}% of pixels masked or zero-ivar")
    if np.any(s.meta["AIRTOVAC"]):
        problems.append("air wavelengths converted to vacuum")
    if np.any(np.asarray(s.meta["TARGETID"]) < 0):
        problems.append("no TARGETID in the file (rows identified by SOURCE and INDEX)")
    return {
        "file": path, "kind": "spectra", "format": str(s.meta["FORMAT"][0]),
        "survey": str(s.meta["SURVEY"][0]), "nspec": int(s.nspec), "npix": int(s.npix),
        "wave_min": round(wmin, 1), "wave_max": round(wmax, 1),
        "median_snr": None if np.all(np.isnan(snr)) else round(float(np.nanmedian(snr)), 2),
        "qn_grid_coverage": round(float(np.median(cov)), 3),
        "zwarn_bits": sorted({b for z in np.unique(zw) for b in describe(z)}),
        "problems": problems,
    }


def describe_catalog_file(path: str) -> dict:
    from ..io.catalogs import read_catalog

    t = read_catalog(path)
    classes = {str(k): int(v) for k, v in zip(*np.unique(np.asarray(t["CLASS"]), return_counts=True))}
    z = np.asarray(t["Z"], float)
    problems = []
    dup = len(t) - len(np.unique(np.asarray(t["TARGETID"])))
    if dup:
        problems.append(f"{dup} duplicated TARGETID(s)")
    thing = np.asarray(t["THING_ID"])
    thing = thing[thing > 0]
    if thing.size and thing.size != np.unique(thing).size:
        problems.append(f"{thing.size - np.unique(thing).size} object(s) observed more than once (THING_ID)")
    return {"file": path, "kind": "catalog", "format": t.meta["CATALOG"], "nrows": len(t),
            "classes": classes, "z_min": round(float(np.nanmin(z)), 4) if np.isfinite(z).any() else None,
            "z_max": round(float(np.nanmax(z)), 4) if np.isfinite(z).any() else None,
            "label_source": str(t["LABEL_SOURCE"][0]) if len(t) else "", "problems": problems}


def _text(d: dict) -> str:
    name = d["file"]
    if d["kind"] == "error":
        return f"{name}: ERROR {d['error']}"
    if d["kind"] == "catalog":
        cls = ", ".join(f"{k} {v}" for k, v in d["classes"].items())
        line = (f"{name}: catalog [{d['format']}] {d['nrows']} rows; classes: {cls}; "
                f"z {d['z_min']}-{d['z_max']}; labels: {d['label_source']}")
    else:
        snr = "n/a" if d["median_snr"] is None else f"{d['median_snr']:.2f}"
        line = (f"{name}: {d['format']} ({d['survey']}) {d['nspec']} spectra x {d['npix']} px; "
                f"{d['wave_min']:.1f}-{d['wave_max']:.1f} A; median S/N {snr}; "
                f"QuasarNET-grid coverage {100 * d['qn_grid_coverage']:.0f}%")
    if d["problems"]:
        line += "\n    problems: " + "; ".join(d["problems"])
    return line


def cmd_info(args) -> int:
    paths = expand_paths(args.files)
    failed = 0
    single = len(paths) == 1
    for path in paths:
        try:
            try:
                d = describe_spectra_file(path, args.format)
            except UnknownFormatError as spectra_exc:
                if args.format:
                    raise
                from ..errors import CatalogError

                try:
                    d = describe_catalog_file(path)
                except CatalogError:
                    raise spectra_exc from None
        except SpectrumFileError as exc:
            if single:
                raise  # one file: main() prints the one-line error and exits 1
            failed += 1
            d = {"file": path, "kind": "error", "error": exc.cause}
        if args.json:
            print(json.dumps(d))
        else:
            print(_text(d))
    if not single:
        msg = f"{len(paths)} files, {len(paths) - failed} read, {failed} failed"
        print(msg if not args.json else json.dumps({"summary": msg}))
    return 1 if failed else 0


def cmd_formats(args) -> int:
    for r in readers():
        print(f"{r.name:18s} {r.survey:8s} {r.description}")
    return 0
