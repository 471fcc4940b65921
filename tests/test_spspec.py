"""SDSS DR1-DR7 spSpec files (``redsift.io.sdss_legacy``).

No real spSpec file is kept in shared/data. The fixtures here are built from the DR7 data model
(http://classic.sdss.org/dr7/dm/flatFiles/spSpec.html): HDU0 a float32 image of 4 rows (flux,
continuum-subtracted flux, error, mask) with COEFF0/COEFF1 and the spSpec header cards, then six
binary tables (line and index tables, with dummy rows). The main fixture carries the content of the
real SDSS-I spectrum spec-0266-51602-0001.fits (same plate-mjd-fiber, DR8-era data model), so the
two files must give the same spectrum.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import redsift
from redsift.cli.main import main
from redsift.errors import SpectrumFileError
from redsift.io.registry import identify_format, iter_read, readers
from redsift.io.sdss import write_spplate
from redsift.io.sdss_legacy import SP_MASK_EMLINE
from redsift.spectra import Spectra
from redsift.zwarning import ZWarningMask

PIPELINE_LABELS = {"Z", "Z_ERR", "Z_CONF", "Z_STATUS", "Z_WARNIN", "SPEC_CLN", "CLASS", "SUBCLASS",
                   "ZWARNING", "VEL_DIS"}
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "PCOUNT", "GCOUNT"}


def _line_tables(nrow: int = 3) -> list[fits.BinTableHDU]:
    """HDU1-6 of an spSpec file, as the data model lists them; rows are dummies (never read)."""
    line_cols = ["wave", "waveErr", "waveMin", "waveMax", "sigma", "sigmaErr", "height", "heightErr",
                 "ew", "ewErr", "ewMin", "continuum", "continuumErr", "nsigma", "chisq", "restWave",
                 "weight", "z", "zErr"]
    lines = Table({c: np.zeros(nrow, np.float32) for c in line_cols})
    lines["lineID"] = np.arange(nrow, dtype=np.int32)
    lines["category"] = np.ones(nrow, np.int32)
    elz = Table({"z": np.zeros(1, np.float32), "zErr": np.zeros(1, np.float32),
                 "nLines": np.zeros(1, np.int32), "conf": np.zeros(1, np.float32)})
    xcz = Table({"z": np.zeros(nrow, np.float32), "zErr": np.zeros(nrow, np.float32),
                 "rVal": np.zeros(nrow, np.float32), "tempNo": np.arange(nrow, dtype=np.int32)})
    index = Table({"name": np.array(["Lick_CN1", "Lick_Ca4227", "Lick_G4300"][:nrow]),
                   "ew": np.zeros(nrow, np.float32), "ewErr": np.zeros(nrow, np.float32),
                   "mag": np.zeros(nrow, np.float32), "magErr": np.zeros(nrow, np.float32)})
    maskres = Table({"resolution": np.ones(nrow, np.float32), "mask": np.zeros(nrow, np.int32)})
    names = ["ELZ_LINES", "LINES", "ELZ", "XCZ", "INDICES", "MASKRES"]
    return [fits.BinTableHDU(t, name=n) for t, n in zip([lines, lines, elz, xcz, index, maskres], names)]


def build_spspec(path, flux, err, mask, loglam0, header: dict, dloglam: float = 1e-4, nrows: int = 4):
    """Write an spSpec file from the DR7 data model; ``header`` holds the cards to add to HDU0."""
    npix = len(flux)
    rows = [flux, flux - np.median(flux), err, mask]  # row 1, the continuum-subtracted flux, is not read
    img = np.zeros((nrows, npix), np.float32)
    for k in range(min(nrows, 4)):
        img[k] = rows[k]
    h0 = fits.PrimaryHDU(img)
    for k, v in header.items():
        h0.header[k] = v
    h0.header["COEFF0"] = (loglam0, "Center wavelength (log10) of first pixel")
    h0.header["COEFF1"] = (dloglam, "Log10 dispersion per pixel")
    h0.header["CRVAL1"], h0.header["CD1_1"], h0.header["CRPIX1"] = loglam0, dloglam, 1
    h0.header["CTYPE1"], h0.header["DC-FLAG"] = "LINEAR", 1
    fits.HDUList([h0, *_line_tables()]).writeto(path, overwrite=True)
    return path


@pytest.fixture(scope="module")
def sdss1(real_dir):
    """The real DR8-era file, what redsift reads from it, and its raw header/AND mask/labels."""
    src = real_dir / "sdss1" / "spec-0266-51602-0001.fits"
    spec = redsift.read(src)
    with fits.open(src) as h:
        hdr = h[0].header.copy()
        and_mask = np.asarray(h[1].data["and_mask"]).copy()
        labels = {k: h[2].data[k][0] for k in ("Z", "Z_ERR", "ZWARNING", "CLASS")}
    return src, spec, hdr, and_mask, labels


def _spspec_header(hdr, labels, z=None, spec_cln=2) -> dict:
    """The real header cards, renamed to the DR7 spSpec ones, plus spectro1d's answer (Z, SPEC_CLN)."""
    out = {k: hdr[k] for k in hdr if k not in _STRUCTURAL and k not in ("PLUG_RA", "PLUG_DEC", "COMMENT", "HISTORY")}
    out.update({
        "NAME": "0266-51602-01", "OBJID": "1 1 1 1 1", "OBJTYPE": "GALAXY",
        "RAOBJ": (hdr["PLUG_RA"], "RA (deg) of object"), "DECOBJ": (hdr["PLUG_DEC"], "DEC (deg) of object"),
        "FIBERID": hdr["FIBERID"],
        "Z": float(labels["Z"]) if z is None else z, "Z_ERR": float(labels["Z_ERR"]), "Z_CONF": 0.99,
        "Z_STATUS": 4, "Z_WARNIN": int(labels["ZWARNING"]), "SPEC_CLN": spec_cln,
    })
    return out


def _write_from_real(sdss1, path, emline=True, **kw):
    _, spec, hdr, and_mask, labels = sdss1
    ivar = spec.ivar[0].astype(np.float64)
    err = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1)), 0.0).astype(np.float32)
    mask = and_mask.astype(np.int64)
    if emline:
        # spectro1d marks the lines it finds (here H-alpha/[NII] of this z=0.021 galaxy): not bad pixels
        near = np.abs(spec.wave - 6563 * (1 + float(labels["Z"]))) < 25
        mask[near] |= SP_MASK_EMLINE
    return build_spspec(path, spec.flux[0], err, mask.astype(np.float32), float(np.log10(spec.wave[0])),
                        _spspec_header(hdr, labels, **kw))


# --- the real spectrum in DR7 spSpec form ---------------------------------------------------------
def test_spspec_round_trip_matches_dr8_spec_file(sdss1, tmp_path):
    _, spec, hdr, and_mask, _ = sdss1
    p = _write_from_real(sdss1, tmp_path / "spSpec-51602-0266-001.fit")
    assert identify_format(p).name == "sdss-spspec"
    s = redsift.read(p)
    m = s.meta[0]
    assert s.nspec == 1 and s.npix == spec.npix
    assert m["FORMAT"] == "sdss-spspec" and m["SURVEY"] == "sdss" and m["INDEX"] == 0
    assert (m["PLATE"], m["MJD"], m["FIBERID"]) == (266, 51602, 1)
    assert m["TARGETID"] == spec.meta["TARGETID"][0] == 266 * 1_000_000_000 + 51602 * 10_000 + 1
    for col in ("TARGETID", "PLATE", "MJD", "FIBERID", "INDEX"):
        assert s.meta[col].dtype == np.int64
    # the object's position (RAOBJ/DECOBJ), not the boresight in the RA/DEC cards
    assert m["RA"] == pytest.approx(hdr["PLUG_RA"]) and m["DEC"] == pytest.approx(hdr["PLUG_DEC"])
    assert abs(m["RA"] - hdr["RA"]) > 0.5
    assert not m["AIRTOVAC"]
    np.testing.assert_allclose(s.wave, spec.wave, rtol=1e-6)
    np.testing.assert_allclose(np.diff(np.log10(s.wave)), 1e-4, rtol=1e-9)
    np.testing.assert_array_equal(s.flux, spec.flux)
    np.testing.assert_allclose(s.ivar, spec.ivar, rtol=1e-6, atol=0)
    assert np.array_equal(s.ivar == 0, spec.ivar == 0)
    # mask: any spectro bit but EMLINE, exactly as AND_MASK != 0 in the DR8-era file
    with fits.open(p) as h:
        row3 = h[0].data[3].astype(np.int64)
    assert ((row3 & SP_MASK_EMLINE) != 0)[~spec.mask[0]].sum() > 10, "fixture must mark lines on good pixels"
    np.testing.assert_array_equal(s.mask, spec.mask)
    np.testing.assert_array_equal(s.mask[0], and_mask != 0)
    assert s.mask.any()
    np.testing.assert_allclose(s.weights, spec.weights, rtol=1e-6, atol=0)
    assert s.meta["ZWARN"][0] == spec.meta["ZWARN"][0]


def test_spspec_never_reads_pipeline_redshift_or_class(sdss1, tmp_path):
    a = redsift.read(_write_from_real(sdss1, tmp_path / "spSpec-a.fit"))
    b = redsift.read(_write_from_real(sdss1, tmp_path / "spSpec-b.fit", z=2.71828, spec_cln=3))
    assert not (PIPELINE_LABELS & set(a.meta.colnames)), "pipeline labels must not reach meta"
    for v in a.meta[0]:
        assert not (isinstance(v, (float, np.floating)) and v == pytest.approx(0.0213, abs=1e-3))
    np.testing.assert_array_equal(a.flux, b.flux)
    np.testing.assert_array_equal(a.ivar, b.ivar)
    np.testing.assert_array_equal(a.mask, b.mask)
    same = [c for c in a.meta.colnames if c != "SOURCE"]
    assert a.meta[same].as_array().tolist() == b.meta[same].as_array().tolist()


def test_cli_info_on_spspec(sdss1, tmp_path, capsys):
    p = _write_from_real(sdss1, tmp_path / "spSpec-51602-0266-001.fit")
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "sdss-spspec (sdss) 1 spectra x 3835 px" in out


def _check_truncated(path, tmp_path):
    cut = tmp_path / "spSpec-51602-0266-002.fit"
    raw = path.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])  # cuts into the HDU0 image
    with pytest.raises(SpectrumFileError) as exc:
        redsift.read(cut)
    msg = str(exc.value)
    assert msg.startswith(str(cut) + ": truncated FITS file") and "\n" not in msg
    # in a batch the file keeps its one row, flagged NODATA | BAD_INPUT, with the reason
    rows = list(iter_read([cut], errors="flag"))
    assert len(rows) == 1 and rows[0][1].nspec == 1
    zw = int(rows[0][1].meta["ZWARN"][0])
    assert zw & ZWarningMask.NODATA and zw & ZWarningMask.BAD_INPUT
    assert rows[0][1].meta["ERROR"][0].startswith("truncated FITS file")


def test_truncated_spspec_gives_one_line_error(sdss1, tmp_path):
    _check_truncated(_write_from_real(sdss1, tmp_path / "spSpec-51602-0266-001.fit"), tmp_path)


def test_truncated_synthetic_spspec_gives_one_line_error(tmp_path):
    p, _ = _synthetic(tmp_path, npix=4000)
    _check_truncated(p, tmp_path)


# --- identification against spPlate files ----------------------------------------------------------
def test_spspec_is_asked_before_spplate():
    order = [r.name for r in readers()]
    assert order.index("sdss-spspec") < order.index("sdss-spplate")
    spspec = next(r for r in readers() if r.name == "sdss-spspec")
    assert spspec.survey == "sdss" and spspec.priority > 10


def _plate_batch(nfiber, npix=400):
    rng = np.random.default_rng(nfiber)
    wave = 10 ** (3.5800 + 1e-4 * np.arange(npix))
    meta = Table({"PLATE": np.full(nfiber, 266), "MJD": np.full(nfiber, 51602),
                  "FIBERID": np.arange(1, nfiber + 1)})
    return Spectra(wave, rng.normal(5, 1, (nfiber, npix)), np.ones((nfiber, npix)), None, meta)


@pytest.mark.parametrize("nfiber", [4, 5, 640])
def test_spplate_is_still_spplate(tmp_path, nfiber):
    """spPlate files written by write_spplate, with 4 (the spSpec row count), 5 and 640 fibers."""
    p = tmp_path / "spPlate-0266-51602.fits"
    batch = _plate_batch(nfiber)
    write_spplate(batch, p)
    assert identify_format(p).name == "sdss-spplate"
    s = redsift.read(p)
    assert s.meta["FORMAT"][0] == "sdss-spplate" and s.nspec == nfiber
    np.testing.assert_array_equal(s.flux, batch.flux)


def test_spplate_with_four_fibers_and_a_fiberid_card_is_not_spspec(tmp_path):
    p = tmp_path / "spPlate-0266-51602.fits"
    write_spplate(_plate_batch(4), p)
    with fits.open(p, mode="update") as h:
        h[0].header["FIBERID"] = 1  # even then: HDU1 is an image, not a line table
    assert identify_format(p).name == "sdss-spplate"


# --- the data model on synthetic content (no shared data needed) -----------------------------------
def _synthetic(tmp_path, name="spSpec-52000-0400-123.fit", nrows=4, npix=200, header=None):
    flux = np.linspace(1, 2, npix).astype(np.float32)
    err = np.full(npix, 0.5, np.float32)
    err[10:15] = 0  # err = 0: bad, ivar 0
    err[20] = np.nan
    mask = np.zeros(npix, np.int64)
    mask[30:33] = SP_MASK_EMLINE  # emission line found: not bad
    mask[40:42] = 1 << 22  # NOSKY
    mask[50] = SP_MASK_EMLINE | (1 << 25)  # COMBINEREJ inside a line: bad
    mask[60] = 1  # NOPLUG (fibre-level bit): bad
    hdr = {"PLATEID": 400, "MJD": 52000, "FIBERID": 123, "RA": 10.0, "DEC": -5.0,
           "RAOBJ": 11.25, "DECOBJ": -4.5, "TELESCOP": "SDSS 2.5-M", "Z": 1.5, "SPEC_CLN": 3}
    hdr.update(header or {})
    return build_spspec(tmp_path / name, flux, err, mask.astype(np.float32), 3.5791, hdr, nrows=nrows), flux


@pytest.mark.parametrize("nrows", [4, 5])
def test_synthetic_spspec_from_data_model(tmp_path, nrows):
    p, flux = _synthetic(tmp_path, nrows=nrows)
    s = redsift.read(p)
    m = s.meta[0]
    assert m["FORMAT"] == "sdss-spspec" and m["SURVEY"] == "sdss"
    assert m["TARGETID"] == 400 * 1_000_000_000 + 52000 * 10_000 + 123
    assert (m["RA"], m["DEC"]) == (11.25, -4.5)
    np.testing.assert_allclose(np.log10(s.wave), 3.5791 + 1e-4 * np.arange(200), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(s.flux[0][:20], flux[:20])
    assert np.all(s.ivar[0][10:15] == 0) and s.ivar[0][9] == pytest.approx(4.0)
    # NaN error: masked and flagged by the Spectra constructor
    assert s.mask[0][20] and s.ivar[0][20] == 0 and m["ZWARN"] & ZWarningMask.BAD_VALUES
    assert not s.mask[0][30:33].any()
    assert s.mask[0][40:42].all() and s.mask[0][50] and s.mask[0][60]
    assert s.mask[0].sum() == 1 + 2 + 1 + 1
    assert not (PIPELINE_LABELS & set(s.meta.colnames))


def test_non_spspec_images_are_not_taken(tmp_path):
    # 3 or 6 rows, or no FIBERID card: not an spSpec
    for k, (nrows, drop) in enumerate([(3, None), (6, None), (4, "FIBERID"), (4, "COEFF1")]):
        p, _ = _synthetic(tmp_path, name=f"x{k}.fit", nrows=nrows)
        if drop:
            with fits.open(p, mode="update") as h:
                del h[0].header[drop]
        try:
            name = identify_format(p).name
        except SpectrumFileError:
            name = None
        assert name != "sdss-spspec", (nrows, drop)


def test_forced_format_on_wrong_file_is_one_line(tmp_path):
    p = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.zeros((4, 10), np.float32)).writeto(p)
    with pytest.raises(SpectrumFileError) as exc:
        redsift.read(p, format="sdss-spspec")
    msg = str(exc.value)
    assert msg.startswith(str(p)) and "\n" not in msg and "COEFF0" in msg
