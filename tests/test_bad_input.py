"""Bad input: clear one-line errors naming the file; batches go on and keep a row for every input."""

import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import redsift
from redsift.cli.main import main
from redsift.errors import SpectrumFileError, UnknownFormatError
from redsift.preprocess import prepare
from redsift.zwarning import ZWarningMask, describe


@pytest.fixture
def bad_files(tmp_path, boss_files, real_dir):
    src = boss_files[0].read_bytes()
    files = {}
    files["truncated"] = tmp_path / "spec-truncated.fits"
    files["truncated"].write_bytes(src[: len(src) // 2])
    files["corrupt"] = tmp_path / "spec-corrupt.fits"
    files["corrupt"].write_bytes(src[:2880] + bytes(np.random.default_rng(0).integers(0, 256, 9000, np.uint8)))
    files["empty"] = tmp_path / "empty.fits"
    files["empty"].write_bytes(b"")
    files["other_kind"] = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(files["other_kind"])
    gz = (real_dir / "lamost" / "spec-55859-F5902_sp01-002.fits.gz").read_bytes()
    files["truncated_gz"] = tmp_path / "spec-lamost.fits.gz"
    files["truncated_gz"].write_bytes(gz[: len(gz) // 2])
    files["missing"] = tmp_path / "does-not-exist.fits"
    files["directory_entry_text"] = tmp_path / "notes.txt"
    files["directory_entry_text"].write_text("just some notes\n")
    return files


EXPECTED = {
    "truncated": "truncated FITS file",
    "corrupt": "corrupt FITS file",
    "empty": "empty file",
    "other_kind": "unrecognised format: a FITS file of no known spectrum format",
    "truncated_gz": "truncated or corrupt gzip file",
    "missing": "no such file",
    "directory_entry_text": "unrecognised format: a text file without wavelength/flux/ivar columns",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_read_raises_one_line_error_naming_the_file(bad_files, kind):
    path = bad_files[kind]
    with pytest.raises(SpectrumFileError) as exc:
        redsift.read(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and EXPECTED[kind] in msg
    assert "\n" not in msg


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_cli_info_single_bad_file(bad_files, kind, capsys):
    path = bad_files[kind]
    assert main(["info", str(path)]) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"redsift: error: {path}: ") and EXPECTED[kind] in lines[0]
    assert "Traceback" not in err and out == ""


def test_cli_debug_shows_traceback(bad_files):
    with pytest.raises(SpectrumFileError):
        main(["--debug", "info", str(bad_files["truncated"])])


def test_batch_read_continues_and_keeps_a_row_per_input(bad_files, boss_files):
    inputs = [boss_files[0], bad_files["truncated"], boss_files[1], bad_files["missing"], bad_files["empty"]]
    s = redsift.read(inputs, errors="flag")
    assert s.nspec == 5
    assert list(s.meta["SOURCE"]) == [str(p) for p in inputs]
    zw = np.asarray(s.meta["ZWARN"])
    assert list(zw[[0, 2]]) == [0, 0]
    for k in (1, 3, 4):
        assert set(describe(zw[k])) == {"NODATA", "BAD_INPUT"}
        assert s.meta["INDEX"][k] == -1 and s.meta["ERROR"][k] != ""
    assert "truncated FITS file" in s.meta["ERROR"][1] and s.meta["ERROR"][3] == "no such file"
    # preprocessing keeps every row and flags the placeholders as having no data
    X, ivar, zwarn = prepare(s)
    assert X.shape[0] == 5 and np.all(zwarn[[1, 3, 4]] & ZWarningMask.NODATA)
    assert np.all(zwarn[[1, 3, 4]] & ZWarningMask.BAD_INPUT)


def test_batch_read_raise_mode_stops(bad_files, boss_files):
    with pytest.raises(SpectrumFileError, match="truncated"):
        redsift.read([boss_files[0], bad_files["truncated"]])


def test_cli_info_batch_reports_and_goes_on(bad_files, boss_files, capsys):
    args = ["info", str(boss_files[0]), str(bad_files["corrupt"]), str(boss_files[1]), str(bad_files["missing"])]
    assert main(args) == 1
    out, _ = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[-1] == "4 files, 2 read, 2 failed"
    assert f"{bad_files['corrupt']}: ERROR corrupt FITS file" in out
    assert f"{bad_files['missing']}: ERROR no such file" in out
    assert out.count("sdss-spec (boss)") == 2


def _spec_with(tmp_path, boss_file, name, edit):
    dst = tmp_path / name
    shutil.copy(boss_file, dst)
    with fits.open(dst, mode="update") as h:
        edit(h[1].data)
    return dst


def test_nan_and_inf_flux_are_masked_and_flagged(tmp_path, boss_files, capsys):
    def edit(d):
        d["FLUX"][100:120] = np.nan
        d["IVAR"][200:210] = np.inf

    p = _spec_with(tmp_path, boss_files[0], "spec-nan.fits", edit)
    s = redsift.read(p)
    assert s.nspec == 1 and describe(s.meta["ZWARN"][0]) == ["BAD_VALUES"]
    assert s.mask[0, 100:120].all() and s.mask[0, 200:210].all()
    assert np.all(np.isfinite(s.flux)) and np.all(np.isfinite(s.ivar))
    X, _, zwarn = prepare(s)
    assert np.all(np.isfinite(X)) and zwarn[0] == ZWarningMask.BAD_VALUES
    assert main(["info", str(p)]) == 0
    assert "NaN/inf flux or ivar (masked, BAD_VALUES)" in capsys.readouterr().out


def test_all_zero_ivar_is_nodata(tmp_path, boss_files, capsys):
    def edit(d):
        d["IVAR"][:] = 0

    p = _spec_with(tmp_path, boss_files[0], "spec-zero-ivar.fits", edit)
    s = redsift.read(p)
    assert s.nspec == 1 and s.meta["ZWARN"][0] & ZWarningMask.NODATA
    X, _, zwarn = prepare(s)
    assert set(describe(zwarn[0])) == {"NODATA", "LITTLE_COVERAGE"}
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "1 spectrum(s) with no valid pixel (NODATA)" in out and "median S/N n/a" in out


def test_spectrum_outside_the_model_grid(tmp_path, capsys):
    p = tmp_path / "red.csv"
    w = np.linspace(10100, 11000, 300)
    Table({"wave": w, "flux": np.ones(300), "ivar": np.ones(300)}).write(p, format="ascii.csv")
    s = redsift.read(p)
    _, _, zwarn = prepare(s)
    assert set(describe(zwarn[0])) == {"NODATA", "LITTLE_COVERAGE"}
    assert main(["info", str(p)]) == 0
    assert "QuasarNET-grid coverage 0%" in capsys.readouterr().out


def test_format_that_cannot_load_names_the_reader(tmp_path):
    # identified as an SDSS spec file, but the COADD table is empty
    p = tmp_path / "spec-empty-coadd.fits"
    cols = [fits.Column(name=n, format="E", array=np.zeros(0)) for n in ("FLUX", "LOGLAM", "IVAR")]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(p)
    with pytest.raises(SpectrumFileError, match=r"spec-empty-coadd.fits: cannot read as sdss-spec \(HDU1"):
        redsift.read(p)


def test_unknown_forced_format(boss_files):
    with pytest.raises(redsift.errors.RedsiftError, match="unknown format 'nope'"):
        redsift.read(boss_files[0], format="nope")


def test_unknown_format_is_a_spectrum_file_error(bad_files):
    with pytest.raises(UnknownFormatError):
        redsift.read(bad_files["other_kind"])
