"""``redsift demo``: the main job on built-in example spectra.

Writes example spectra in survey formats (a BOSS spPlate and a generic HDF5
file), reads them back through the format registry, writes the input catalog
(ZWARN bits for every spectrum), then classifies them and measures their
redshifts with the default released model, writing ``catalog.fits`` and a
plot of every spectrum with its detected lines.
"""

from __future__ import annotations

import os

import numpy as np
from astropy.table import Table

from ..demo import example_spectra
from ..grid import LogGrid
from ..io.generic import write_generic
from ..io.output import provenance, write_catalog
from ..io.registry import read
from ..io.sdss import write_spplate
from ..preprocess import coverage, prepare, snr_median
from ..zwarning import describe


def cmd_demo(args) -> int:
    out = args.output
    os.makedirs(out, exist_ok=True)
    spectra, truth = example_spectra(seed=args.seed)
    spplate = os.path.join(out, "spPlate-9999-60000.fits")
    write_spplate(spectra, spplate, overwrite=True)
    generic = os.path.join(out, "example.h5")
    # the generic file carries the raw arrays of two spectra, one with a run of NaN flux
    raw_flux = spectra.flux[5:7].copy()
    raw_flux[1, 1000:1100] = np.nan
    write_generic(generic, spectra.wave, raw_flux, spectra.ivar[5:7])
    print(f"wrote example spectra: {spplate}, {generic}")

    batch = read([spplate, generic], errors="flag")
    grid = LogGrid.quasarnet()
    X, ivar, zwarn = prepare(batch, grid)
    cat = Table()
    cat["TARGETID"] = batch.meta["TARGETID"]
    cat["ZWARN"] = zwarn
    for c in ("SURVEY", "PLATE", "MJD", "FIBERID", "RA", "DEC", "SOURCE", "INDEX", "FORMAT"):
        cat[c] = batch.meta[c]
    cat["SNR_MEDIAN"] = snr_median(batch.flux, batch.weights).astype(np.float32)
    cat["COVERAGE"] = coverage(ivar).astype(np.float32)
    catalog = os.path.join(out, "inputs.fits")
    write_catalog(cat, catalog, provenance(model="none (inputs only)", grid=grid, command="redsift demo"),
                  overwrite=True)
    print(f"wrote input catalog: {catalog} ({len(cat)} rows)")
    for row in cat:
        flags = ",".join(describe(row["ZWARN"])) or "-"
        print(f"  {row['TARGETID']:>16d}  {os.path.basename(row['SOURCE']):24s} row {row['INDEX']:2d}  "
              f"S/N {row['SNR_MEDIAN']:6.2f}  coverage {row['COVERAGE']:.2f}  ZWARN {row['ZWARN']} ({flags})")

    # the main job: classify and measure redshifts with the default released model
    from ..evaluate.plots import new_axes
    from ..models import get_family, load_model, resolve_model_name
    from ..predict import catalog_provenance, predict_spectra

    name = resolve_model_name("default")
    model = load_model(name)
    pred = predict_spectra(model, batch)
    out_cat = os.path.join(out, "catalog.fits")
    write_catalog(pred, out_cat, catalog_provenance(model, name, "redsift demo"), overwrite=True)
    print(f"wrote catalog: {out_cat} (model {name})")
    for k, row in enumerate(pred):
        truth_txt = f"{truth['CLASS'][k]} z={truth['Z'][k]:.2f}" if k < len(truth) else "(generic file)"
        z = "   -  " if not np.isfinite(row["Z"]) else f"{row['Z']:.4f}"
        if np.isfinite(row["Z"]) and np.isfinite(row["ZERR"]):
            z += f" +- {row['ZERR']:.1e}"
        print(f"  row {k}: truth {truth_txt:18s} -> {row['SPECTYPE']:6s} z={z}  ZWARN {row['ZWARN']} "
              f"({','.join(describe(row['ZWARN'])) or '-'})")
    fig, _ = new_axes(figsize=(10, 2.4 * len(truth)))
    fig.clear()
    axes = fig.subplots(len(truth), 1)
    for k, ax in enumerate(axes):
        get_family(model).plot(model, batch, k, pred[k], ax=ax)
        ax.set_title(f"example {k} (truth {truth['CLASS'][k]} z={truth['Z'][k]:.2f}): " + ax.get_title(), fontsize=9)
    png = os.path.join(out, "spectra.png")
    fig.savefig(png, dpi=90)
    print(f"wrote plot: {png}")
    return 0
