"""Make Redrock 0.21 itself write the reference file ``tests/data/redrock/redrock-0.21-reference.fits``.

``tests/test_redrock_format.py`` compares the files of :func:`redsift.io.redrock_format.write_redrock` with this
one (HDU names and order, column names, order, dtypes, string widths, COEFF shape). Everything in it is
synthetic: three made-up templates (GALAXY with 10 basis vectors, as DESI's default ``GALAXY-None-v2.6``;
QSO:::HIZ with 4; STAR:::K with 5), written to a temporary directory and not kept, and a made-up
4-target DESI coadd (B/R/Z arms, FIBERMAP, EXP_FIBERMAP, SCORES; target 4 has no valid pixel). Redrock is
then run exactly as in production, through ``rrdesi`` (``redrock.external.desi.rrdesi``), which writes the
file with its own ``write_zbest``; the file is then gzipped byte for byte (40 KB -> a few KB; astropy
reads ``.fits.gz`` directly).

Redrock and its DESI dependencies are heavy (numba, fitsio, desiutil, desispec with healpy, desitarget,
desimodel, ...), so this runs in a throwaway virtual environment, never in the project's::

    python3 -m venv /tmp/rrvenv
    /tmp/rrvenv/bin/pip install redrock==0.21.0 desispec==0.70.0 desiutil==4.0.1
    /tmp/rrvenv/bin/python scripts/make_redrock_reference.py tests/data/redrock/redrock-0.21-reference.fits.gz

(measured here: 30 s for redrock with numba/llvmlite/fitsio/h5py, 22 s more for desispec and its
dependencies, 806 MB in all; the run itself takes about a minute, mostly numba compilation).
"""

from __future__ import annotations

import gzip
import os
import sys
import tempfile

import numpy as np
from astropy.io import fits
from astropy.table import Table

SEED = 21
ARMS = {"B": (3600.0, 5800.0), "R": (5760.0, 7620.0), "Z": (7520.0, 9824.0)}
NDIAG = 11


def _template(path, rrtype, subtype, nbasis, redshifts, seed):
    """A redrock template file: smooth made-up basis vectors on a 1 A grid from 500 to 11000 A."""
    rng = np.random.default_rng(seed)
    wave = np.arange(500.0, 11000.0, 1.0)
    x = (wave - wave.mean()) / np.ptp(wave)
    basis = [np.ones_like(wave)]
    for k in range(1, nbasis):
        phase = rng.uniform(0, np.pi)
        line = rng.uniform(1200, 7000)
        basis.append(np.cos(np.pi * k * x + phase) + 0.3 * np.exp(-0.5 * ((wave - line) / 15) ** 2))
    flux = np.array(basis[:nbasis])
    hdr = fits.Header()
    hdr["CRVAL1"] = wave[0]
    hdr["CDELT1"] = 1.0
    hdr["LOGLAM"] = 0
    hdr["RRTYPE"] = rrtype
    hdr["RRSUBTYP"] = subtype
    hdr["RRVER"] = "synthetic"
    hdr["VERSION"] = "0.0"
    hdr["RRIGM"] = "None"
    hdr["EXTNAME"] = "BASIS_VECTORS"
    fits.HDUList([fits.PrimaryHDU(),
                  fits.ImageHDU(flux.astype(np.float64), header=hdr, name="BASIS_VECTORS"),
                  fits.ImageHDU(np.asarray(redshifts, np.float64), name="REDSHIFTS")]).writeto(path, overwrite=True)
    return wave, flux


def _resolution(npix, sigma=1.0):
    x = np.arange(NDIAG // 2, -(NDIAG // 2) - 1, -1)
    kern = np.exp(-0.5 * (x / sigma) ** 2)
    kern /= kern.sum()
    return np.repeat(kern[:, None], npix, axis=1).astype(np.float32)


def _coadd(path, templates):
    """A 4-target DESI coadd whose spectra are made from the synthetic templates plus noise."""
    rng = np.random.default_rng(SEED)
    n = 4
    tid = np.array([39627000000000001, 39627000000000002, 39627000000000003, 39627000000000004], np.int64)
    truth = [("GALAXY", 0.35, [5.0, 1.0, -0.5, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0]),
             ("QSO", 2.1, [4.0, 2.0, 1.0, 0.5]),
             ("STAR", 0.0, [6.0, 1.0, 0.5, 0.2, 0.1]),
             ("GALAXY", 0.5, [1.0] + [0.0] * 9)]
    fm = Table()
    fm["TARGETID"] = tid
    fm["PETAL_LOC"] = np.zeros(n, np.int16)
    fm["DEVICE_LOC"] = np.arange(10, 10 + n, dtype=np.int32)
    fm["LOCATION"] = fm["DEVICE_LOC"].astype(np.int64)
    fm["FIBER"] = np.arange(n, dtype=np.int32)
    fm["COADD_FIBERSTATUS"] = np.zeros(n, np.int32)
    fm["TARGET_RA"] = np.array([150.1, 150.2, 150.3, 150.4])
    fm["TARGET_DEC"] = np.array([2.1, 2.2, 2.3, 2.4])
    fm["OBJTYPE"] = np.array(["TGT"] * n)
    fm["DESI_TARGET"] = np.array([1, 4, 2**60, 1], np.int64)
    fm["TILEID"] = np.full(n, 1000, np.int32)
    fm["COADD_NUMEXP"] = np.full(n, 2, np.int16)
    fm["COADD_EXPTIME"] = np.full(n, 1800.0, np.float32)
    efm = Table()
    efm["TARGETID"] = np.repeat(tid, 2)
    efm["NIGHT"] = np.full(2 * n, 20240101, np.int32)
    efm["EXPID"] = np.tile(np.array([100001, 100002], np.int32), n)
    efm["TILEID"] = np.full(2 * n, 1000, np.int32)
    efm["FIBER"] = np.repeat(fm["FIBER"], 2)
    efm["FIBERSTATUS"] = np.zeros(2 * n, np.int32)
    efm["EXPTIME"] = np.full(2 * n, 900.0)
    scores = Table()
    scores["TARGETID"] = tid
    for t in ("ELG", "LRG", "QSO", "BGS", "LYA"):
        for band in ("B", "R", "Z"):
            scores[f"TSNR2_{t}_{band}"] = rng.uniform(1, 10, n).astype(np.float32)
        scores[f"TSNR2_{t}"] = sum(scores[f"TSNR2_{t}_{b}"] for b in "BRZ").astype(np.float32)
    scores["OTHER_SCORE"] = np.ones(n, np.float32)   # not a TSNR2 column: redrock drops it

    hdr = fits.Header()
    for key, value in (("SPGRP", "cumulative"), ("SPGRPVAL", 20240101), ("TILEID", 1000), ("SPECTRO", 0),
                       ("PETAL", 0), ("NIGHT", 20240101), ("SURVEY", "main"), ("PROGRAM", "dark")):
        hdr[key] = value
    hdus = [fits.PrimaryHDU(header=hdr), fits.table_to_hdu(fm)]
    hdus[-1].name = "FIBERMAP"
    hdus.append(fits.table_to_hdu(efm))
    hdus[-1].name = "EXP_FIBERMAP"
    hdus.append(fits.table_to_hdu(scores))
    hdus[-1].name = "SCORES"
    for arm, (lo, hi) in ARMS.items():
        wave = np.arange(lo, hi + 0.4, 0.8)
        flux = np.zeros((n, wave.size), np.float32)
        ivar = np.full((n, wave.size), 4.0, np.float32)
        for i, (kind, z, coeff) in enumerate(truth):
            twave, tflux = templates[kind]
            model = np.asarray(coeff) @ tflux
            flux[i] = np.interp(wave, twave * (1 + z), model) + rng.normal(0, 0.5, wave.size)
        ivar[3] = 0.0     # target 4: no valid pixel (redrock's NODATA)
        mask = np.zeros((n, wave.size), np.int32)
        mask[0, :5] = 1
        hdus.append(fits.ImageHDU(wave, name=f"{arm}_WAVELENGTH"))
        hdus.append(fits.ImageHDU(flux, name=f"{arm}_FLUX"))
        hdus.append(fits.ImageHDU(ivar, name=f"{arm}_IVAR"))
        hdus.append(fits.ImageHDU(mask, name=f"{arm}_MASK"))
        hdus.append(fits.ImageHDU(np.repeat(_resolution(wave.size)[None], n, axis=0), name=f"{arm}_RESOLUTION"))
    fits.HDUList(hdus).writeto(path, overwrite=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = os.path.abspath(argv[0] if argv else "tests/data/redrock/redrock-0.21-reference.fits.gz")
    import redrock

    assert redrock.__version__.startswith("0.21"), f"needs redrock 0.21, not {redrock.__version__}"
    with tempfile.TemporaryDirectory() as tmp:
        tdir = os.path.join(tmp, "templates")
        os.makedirs(tdir)
        templates = {
            "GALAXY": _template(os.path.join(tdir, "rrtemplate-GALAXY-None-v0.0.fits"), "GALAXY", "", 10,
                                np.linspace(0.0, 1.0, 201), 1),
            "QSO": _template(os.path.join(tdir, "rrtemplate-QSO-HIZ-v0.0.fits"), "QSO", "HIZ", 4,
                             np.linspace(1.5, 3.0, 151), 2),
            "STAR": _template(os.path.join(tdir, "rrtemplate-STAR-K-v0.0.fits"), "STAR", "K", 5,
                              np.linspace(-0.001, 0.001, 21), 3),
        }
        os.environ["RR_TEMPLATE_DIR"] = "synthetic"   # recorded in the header (DEPNAM/DEPVER); the -t files are used
        coadd = os.path.join(tmp, "coadd-synthetic.fits")
        _coadd(coadd, templates)
        from redrock.external.desi import rrdesi

        tfiles = sorted(os.path.join(tdir, f) for f in os.listdir(tdir))
        written = os.path.join(tmp, "redrock-synthetic.fits")
        rrdesi(["-i", coadd, "-o", written, "-t", *tfiles, "--mp", "1"])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(written, "rb") as src, open(out, "wb") as raw:
            if out.endswith(".gz"):
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as dst:   # reproducible bytes
                    dst.write(src.read())
            else:
                raw.write(src.read())
    with fits.open(out) as h:
        h.info()
        for hdu in h[1:]:
            print(hdu.name, hdu.columns)
        print(Table(h["REDSHIFTS"].data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
