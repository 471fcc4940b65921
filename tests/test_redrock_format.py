"""Redrock-compatible output (:mod:`redsift.io.redrock_format`) against a file Redrock 0.21 itself wrote.

The reference, ``tests/data/redrock/redrock-0.21-reference.fits.gz``, was written by ``rrdesi`` of Redrock
0.21.0 on synthetic spectra and templates (``scripts/make_redrock_reference.py`` says how); Redrock and its
DESI dependencies are too heavy to install for the tests (numba, llvmlite, fitsio, desispec, healpy, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from redsift.catalog import HEAD, IDS, LOCATION, TAIL, finish, id_columns
from redsift.io.redrock_format import (
    DEFAULT_NCOEFF,
    GENERIC_FIBERMAP_COLUMNS,
    REDSHIFTS_COLUMNS,
    fibermap_from_meta,
    write_redrock,
)
from redsift.spectra import Spectra
from redsift.zwarning import ZWarningMask

REFERENCE = Path(__file__).parent / "data" / "redrock" / "redrock-0.21-reference.fits.gz"
FAMILY = [("IS_QSO", "bool"), ("C_LYA", "float32"), ("Z_LYA", "float64")]


@pytest.fixture(scope="module")
def ref():
    with fits.open(REFERENCE) as h:
        h.readall()
        yield h


def _layout(hdu):
    """Column names, FITS formats and dims, in order, and the numpy record dtype as read back."""
    cols = hdu.columns
    return [(c.name, c.format, c.dim) for c in cols], hdu.data.dtype


def _catalog(n=5, survey="sdss", nan_rows=(1, 3)) -> Table:
    """A redsift catalog as the pipeline makes it (catalog contract), with NaN Z in ``nan_rows``."""
    meta = Table({"TARGETID": np.arange(100, 100 + n, dtype=np.int64), "SURVEY": [survey] * n,
                  "PLATE": np.full(n, 7000), "MJD": np.full(n, 56000), "FIBERID": np.arange(1, n + 1),
                  "RA": np.linspace(10, 11, n), "DEC": np.linspace(-1, 1, n), "SOURCE": ["spec.fits"] * n,
                  "INDEX": np.arange(n)})
    nan_rows = [i for i in nan_rows if i < n]
    z = np.linspace(0.5, 3.0, n)
    z[nan_rows] = np.nan
    zwarn = np.zeros(n, np.int64)
    zwarn[nan_rows[:1]] = int(ZWarningMask.NODATA | ZWarningMask.BAD_INPUT)
    spectype = np.where(np.isfinite(z), "QSO", "NONQSO")
    cols = dict(id_columns(meta), Z=z, ZERR=np.where(np.isfinite(z), 0.001, np.nan), ZWARN=zwarn,
                SPECTYPE=spectype, SUBTYPE=np.where(np.arange(n) == 0, "BAL", ""), IS_QSO=np.isfinite(z),
                C_LYA=np.full(n, 0.9, np.float32), Z_LYA=z, ERROR=[""] * n)
    return finish(cols, list(HEAD) + list(IDS) + list(LOCATION) + FAMILY + list(TAIL))


def _write(tmp_path, catalog, name="redrock.fits", **kw):
    path = tmp_path / name
    assert write_redrock(catalog, path, **kw) == os.fspath(path)
    return path


# --- the reference --------------------------------------------------------------------------------------

def test_reference_was_written_by_redrock_021(ref):
    assert ref[0].header["RRVER"].startswith("0.21")
    assert [h.name for h in ref] == ["PRIMARY", "REDSHIFTS", "FIBERMAP", "EXP_FIBERMAP", "TSNR2"]
    assert [name for name, _ in REDSHIFTS_COLUMNS] == ref["REDSHIFTS"].columns.names


# --- layout against Redrock's -----------------------------------------------------------------------------

def test_redshifts_columns_order_dtypes_match_redrock(tmp_path, ref):
    path = _write(tmp_path, _catalog())
    with fits.open(path) as ours:
        assert _layout(ours["REDSHIFTS"]) == _layout(ref["REDSHIFTS"])   # names, order, TFORMs, TDIM, dtypes
        dt = ours["REDSHIFTS"].data.dtype
        assert dt["SPECTYPE"].itemsize == 6 and dt["SUBTYPE"].itemsize == 20 and dt["FITMETHOD"].itemsize == 4
        assert dt["COEFF"].shape == (DEFAULT_NCOEFF,) == ref["REDSHIFTS"].data.dtype["COEFF"].shape


def test_hdu_layout_matches_redrock(tmp_path, ref):
    cat = _catalog(n=len(ref["REDSHIFTS"].data))
    cat["TARGETID"] = ref["REDSHIFTS"].data["TARGETID"]
    with fits.open(_write(tmp_path, cat, "default.fits")) as ours:
        assert [h.name for h in ours] == ["PRIMARY", "REDSHIFTS", "FIBERMAP"] == [h.name for h in ref][:3]
        assert isinstance(ours[0], fits.PrimaryHDU) and ours[0].data is None
    # with the two optional HDUs, the layout is Redrock's exactly, and they pass through unchanged
    path = _write(tmp_path, cat, "full.fits", exp_fibermap=Table(ref["EXP_FIBERMAP"].data),
                  tsnr2=Table(ref["TSNR2"].data))
    with fits.open(path) as ours:
        assert [(h.name, type(h)) for h in ours] == [(h.name, type(h)) for h in ref]
        for name in ("EXP_FIBERMAP", "TSNR2"):
            assert _layout(ours[name]) == _layout(ref[name])
            assert ours[name].data.tobytes() == ref[name].data.tobytes()


def _desi_coadd(path, ref):
    """A DESI coadd whose FIBERMAP is the one Redrock copied into the reference (and its input header keys)."""
    hdr = fits.Header()
    for key in ("SPGRP", "SPGRPVAL", "TILEID", "SPECTRO", "PETAL", "NIGHT", "SURVEY", "PROGRAM"):
        hdr[key] = ref[0].header[key]
    n = len(ref["FIBERMAP"].data)
    hdus = [fits.PrimaryHDU(header=hdr), fits.BinTableHDU(ref["FIBERMAP"].data, name="FIBERMAP")]
    for arm, (lo, hi) in {"B": (3600, 5800), "R": (5760, 7620), "Z": (7520, 9824)}.items():
        wave = np.arange(lo, hi, 8.0)
        hdus += [fits.ImageHDU(wave, name=f"{arm}_WAVELENGTH"),
                 fits.ImageHDU(np.ones((n, wave.size), np.float32), name=f"{arm}_FLUX"),
                 fits.ImageHDU(np.ones((n, wave.size), np.float32), name=f"{arm}_IVAR")]
    fits.HDUList(hdus).writeto(path)


def test_desi_fibermap_is_the_inputs(tmp_path, ref):
    from redsift.io import read_file

    coadd = tmp_path / "coadd-synthetic.fits"
    _desi_coadd(coadd, ref)
    spectra = read_file(coadd)
    fm = fibermap_from_meta(spectra.meta)
    assert fm.colnames == ref["FIBERMAP"].columns.names      # reader's own and header-derived columns left out
    cat = _catalog(n=spectra.nspec, survey="desi")
    cat["TARGETID"] = spectra.meta["TARGETID"]
    path = _write(tmp_path, cat, fibermap=fm)
    with fits.open(path) as ours:
        assert _layout(ours["FIBERMAP"]) == _layout(ref["FIBERMAP"])
        assert ours["FIBERMAP"].data.tobytes() == ref["FIBERMAP"].data.tobytes()
        # Redrock copies the input's header keywords into PRIMARY and REDSHIFTS; those redsift keeps agree
        for ext in ("PRIMARY", "REDSHIFTS"):
            for key in ("SPGRP", "TILEID", "NIGHT", "SURVEY", "PROGRAM"):
                assert ours[ext].header[key] == ref[ext].header[key]
            assert "RRVER" not in ours[ext].header and "TEMNAM00" not in ours[ext].header
            assert ours[ext].header["RRFORMAT"] == "0.21"
            assert ours[ext].header["ZWBIT09"] == "NODATA"


def test_fibermap_meta_hint_names_columns():
    meta = Table({"TARGETID": [1, 2], "SURVEY": ["desi", "desi"], "FM_SURVEY": ["main", "main"],
                  "FIBER": np.array([3, 4], np.int32), "TILEID": np.array([7, 7], np.int32), "RA": [1.0, 2.0]})
    meta.meta["FIBERMAP_COLUMNS"] = ["TARGETID", "SURVEY", "FIBER", "TILEID"]
    fm = fibermap_from_meta(meta)
    assert fm.colnames == ["TARGETID", "SURVEY", "FIBER", "TILEID"]
    assert list(fm["SURVEY"]) == ["main", "main"] and fm["FIBER"].dtype == np.int32
    assert fm.meta["TILEID"] == 7


# --- content ---------------------------------------------------------------------------------------------

def test_round_trip_with_nan_redshifts(tmp_path):
    cat = _catalog(n=6, nan_rows=(1, 4))
    with fits.open(_write(tmp_path, cat)) as h:
        rs = h["REDSHIFTS"].data
        for name in ("TARGETID", "Z", "ZERR", "ZWARN"):
            np.testing.assert_array_equal(rs[name], cat[name])       # NaN Z and ZERR stay NaN
        assert np.isnan(rs["Z"][[1, 4]]).all() and (rs["ZWARN"][[1, 4]] != 0).all()
        assert list(rs["SPECTYPE"]) == list(cat["SPECTYPE"]) and list(rs["SUBTYPE"]) == list(cat["SUBTYPE"])
        # the template-fit columns hold their documented empty values
        assert np.isnan(rs["CHI2"]).all()
        assert (rs["DELTACHI2"] == 0).all() and (rs["COEFF"] == 0).all() and rs["COEFF"].shape == (6, DEFAULT_NCOEFF)
        assert (rs["NCOEFF"] == 0).all() and (rs["NPIXELS"] == 0).all() and set(rs["FITMETHOD"]) == {"NONE"}
    back = Table.read(tmp_path / "redrock.fits", hdu="REDSHIFTS")
    np.testing.assert_array_equal(back["Z"], cat["Z"])


def test_catalog_fit_columns_are_used(tmp_path):
    cat = _catalog(n=3, nan_rows=())
    cat["CHI2"] = [10.0, 20.0, 30.0]
    cat["COEFF"] = np.arange(12.0).reshape(3, 4)
    cat["NPIXELS"] = [4000, 4001, 4002]
    cat["DELTACHI2"] = [25.0, 100.0, 0.5]
    cat["FITMETHOD"] = ["PCA"] * 3
    with fits.open(_write(tmp_path, cat)) as h:
        rs = h["REDSHIFTS"].data
        np.testing.assert_array_equal(rs["COEFF"], cat["COEFF"])
        assert h["REDSHIFTS"].columns["COEFF"].format == "4D"
        assert list(rs["NCOEFF"]) == [4, 4, 4]                 # the width of the catalog's COEFF
        for name in ("CHI2", "NPIXELS", "DELTACHI2"):
            np.testing.assert_array_equal(rs[name], cat[name])
        assert set(rs["FITMETHOD"]) == {"PCA"}
    cat["DELTACHI2"] = [25.0, np.nan, -3.0]  # a row without one (the default's unmeasured rows): Redrock's 0.0
    cat["CHI2"] = [10.0, np.nan, 30.0]
    with fits.open(_write(tmp_path, cat, "nan.fits")) as h:
        rs = h["REDSHIFTS"].data
        assert list(rs["DELTACHI2"]) == [25.0, 0.0, -3.0]
        assert np.isnan(rs["CHI2"][1])  # CHI2's empty value is NaN


def test_spectype_values_kept_width_six(tmp_path):
    cat = _catalog(n=5, nan_rows=())
    cat["SPECTYPE"] = ["QSO", "NONQSO", "STAR", "GALAXY", ""]
    with fits.open(_write(tmp_path, cat, "a.fits")) as h:
        assert h["REDSHIFTS"].columns["SPECTYPE"].format == "6A"
        assert list(h["REDSHIFTS"].data["SPECTYPE"]) == ["QSO", "NONQSO", "STAR", "GALAXY", ""]
    cat["SPECTYPE"] = cat["SPECTYPE"].astype("U12")
    cat["SPECTYPE"][0] = "WHITE_DWARF"                          # longer than Redrock's 6: widened, not cut
    with fits.open(_write(tmp_path, cat, "b.fits")) as h:
        assert h["REDSHIFTS"].columns["SPECTYPE"].format == "11A"
        assert h["REDSHIFTS"].data["SPECTYPE"][0] == "WHITE_DWARF"


def test_fibermap_rows_match_redshifts(tmp_path):
    cat = _catalog(n=4)
    cat["TARGETID"] = [5, 3, 5, -1]                            # repeats and unknown ids keep their rows
    with fits.open(_write(tmp_path, cat)) as h:
        rs, fm = h["REDSHIFTS"].data, h["FIBERMAP"].data
        assert h["FIBERMAP"].columns.names == list(GENERIC_FIBERMAP_COLUMNS)
        np.testing.assert_array_equal(fm["TARGETID"], rs["TARGETID"])
        np.testing.assert_array_equal(fm["TARGET_RA"], cat["RA"])
        np.testing.assert_array_equal(fm["PLATE"], cat["PLATE"])
        assert (fm["OBSID"] == -1).all() and (fm["TILEID"] == -1).all()
    # the same from a batch's metadata (non-DESI): the ids the reader found
    meta = Table({"TARGETID": [7, 8], "OBSID": [11, 12], "RA": [1.5, 2.5], "DEC": [3.5, 4.5]})
    fm = fibermap_from_meta(Spectra(np.arange(3.0) + 4000, np.ones((2, 3)), np.ones((2, 3)), meta=meta).meta)
    assert fm.colnames == list(GENERIC_FIBERMAP_COLUMNS)
    assert list(fm["OBSID"]) == [11, 12] and list(fm["TARGET_DEC"]) == [3.5, 4.5] and list(fm["PLATE"]) == [-1, -1]


def test_fibermap_out_of_order_is_refused(tmp_path):
    cat = _catalog(n=3)
    fm = fibermap_from_meta(cat[::-1])
    with pytest.raises(ValueError, match="FIBERMAP row 0 has TARGETID 102"):
        write_redrock(cat, tmp_path / "x.fits", fibermap=fm)
    with pytest.raises(ValueError, match="rows for 3"):
        write_redrock(cat, tmp_path / "x.fits", tsnr2=Table({"TARGETID": [1]}))
    assert os.listdir(tmp_path) == []


def test_empty_catalog(tmp_path, ref):
    with fits.open(_write(tmp_path, _catalog(n=5)[:0])) as h:
        assert len(h["REDSHIFTS"].data) == 0 and len(h["FIBERMAP"].data) == 0
        assert _layout(h["REDSHIFTS"])[0] == _layout(ref["REDSHIFTS"])[0]


# --- atomic writes ---------------------------------------------------------------------------------------

def test_existing_file_needs_overwrite(tmp_path):
    path = tmp_path / "redrock.fits"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        write_redrock(_catalog(), path)
    assert path.read_bytes() == b"old"
    write_redrock(_catalog(), path, overwrite=True)
    with fits.open(path) as h:
        assert h[1].name == "REDSHIFTS"


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken(self, name, *args, **kwargs):
        with open(name, "wb") as f:
            f.write(b"SIMPLE  =                    T" + b" " * 100)   # half a file, then the disk fills
        raise OSError("No space left on device")

    monkeypatch.setattr(fits.HDUList, "writeto", broken)
    with pytest.raises(OSError, match="No space"):
        write_redrock(_catalog(), tmp_path / "redrock.fits")
    assert os.listdir(tmp_path) == []                           # neither the file nor a temporary one
    old = tmp_path / "old.fits"
    old.write_bytes(b"previous run")
    with pytest.raises(OSError):
        write_redrock(_catalog(), old, overwrite=True)
    assert os.listdir(tmp_path) == ["old.fits"] and old.read_bytes() == b"previous run"


# --- reading -----------------------------------------------------------------------------------------------

def test_readable_as_redrock_files_are_read(tmp_path):
    """Redrock 0.21 has no reader for this file (``redrock.results`` reads the HDF5 details file only); DESI's
    ``desispec.scripts.zcatalog.read_redrock`` reads REDSHIFTS and FIBERMAP by name and requires their
    TARGETIDs to agree row by row. Also for a gzipped file."""
    cat = _catalog()
    path = _write(tmp_path, cat, "redrock-test.fits.gz")
    with open(path, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"
    redshifts = Table.read(path, hdu="REDSHIFTS")
    fibermap = Table.read(path, hdu="FIBERMAP")
    assert np.all(redshifts["TARGETID"] == fibermap["TARGETID"])
    assert redshifts.colnames == [name for name, _ in REDSHIFTS_COLUMNS]
    with fits.open(path) as h:
        assert h[0].header["RSVER"] and h[0].header["DEPNAM00"] == "python"
