"""The catalog contract (docs/catalog.md): one schema per model whatever the inputs, ids carried, ZWARN == 0
only with a measured Z, and inputs a user mistypes caught before any work."""

import numpy as np
import pytest
from astropy.table import Table, vstack

import redsift
from redsift.catalog import IDS, schema
from redsift.cli.main import main
from redsift.io.output import write_catalog
from redsift.models import get_family, load_model
from redsift.predict import EXIT_PARTIAL, predict_catalog
from redsift.simulate import simulate
from redsift.zwarning import ZWarningMask

MODEL = "quasarnet-qn6_100f-quasarnp"


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("contract") / "sim"
    simulate(40, "boss", out, seed=13, block=40, progress=False)
    return str(out)


def _signature(t):
    """Names and dtypes; strings of unbounded length (SOURCE, ERROR) by kind only."""
    return [(n, t[n].dtype.kind if n in ("SOURCE", "ERROR") else t[n].dtype.str) for n in t.colnames]


def test_schema_is_identical_for_every_kind_of_input(model, real_dir, dataset, tmp_path):
    boss = sorted(str(p) for p in (real_dir / "boss").glob("spec-*.fits"))
    desi = [str(real_dir / "desi" / "coadd-quasarnp-test.fits"), str(real_dir / "desi" / "coadd-4-80613-thru20210324.fits")]
    lamost = sorted(str(p) for p in (real_dir / "lamost").glob("spec-*.fits.gz"))
    bad = tmp_path / "spec-bad.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b" " * 100)
    runs = {"boss": boss[:3], "desi": desi, "lamost": lamost, "sdss1": [str(real_dir / "sdss1")],
            "mixed": [boss[0], desi[0], lamost[0]], "dataset": [dataset], "bad only": [str(bad)],
            "spectra": [redsift.read(boss[:2])]}
    cats = {name: predict_catalog(model, inputs, progress=False) for name, inputs in runs.items()}
    expected = schema(get_family(model), model)
    ref = _signature(cats["boss"])
    assert [n for n, _ in ref] == [n for n, _ in expected]
    for name, cat in cats.items():
        assert _signature(cat) == ref, name
        z, zw = np.asarray(cat["Z"], float), np.asarray(cat["ZWARN"])
        assert not np.any((zw == 0) & ~np.isfinite(z)), name  # ZWARN == 0 means a measured Z
    # ids the inputs carry, sentinels where they carry none
    b = cats["boss"]
    assert np.all(b["PLATE"] > 0) and np.all(b["OBSID"] == -1) and np.all(b["TILEID"] == -1)
    assert np.all(b["THING_ID"] > 0)  # from the spec file's id table (HDU2), ids only
    lam = cats["lamost"]
    assert np.all(lam["OBSID"] > 0) and np.all(lam["TARGETID"] == lam["OBSID"]) and np.all(lam["PLATE"] == -1)
    d = cats["desi"]
    full = d[np.asarray(d["SOURCE"]).astype(str) == desi[1]]
    assert len(full) and np.all(full["TARGETID"] > 0) and np.all(full["TILEID"] == 80613)
    assert np.all(np.isfinite(full["RA"]))
    assert cats["bad only"]["ZWARN"][0] & ZWarningMask.BAD_INPUT and cats["bad only"]["ERROR"][0]
    # catalogs of different runs stack without masked cells
    written = []
    for name in ("boss", "lamost", "dataset"):
        path = tmp_path / f"{name}.fits"
        write_catalog(cats[name], path)
        written.append(Table.read(path))
    stacked = vstack(written, metadata_conflicts="silent")  # each run keeps its own DATE card
    assert len(stacked) == sum(len(cats[n]) for n in ("boss", "lamost", "dataset"))
    assert [c for c in stacked.colnames] == [n for n, _ in expected]


def test_ids_are_in_the_contract_in_order():
    names = [n for n, _ in IDS]
    assert names[:6] == ["SURVEY", "PLATE", "MJD", "FIBERID", "OBSID", "THING_ID"]


def test_missing_input_is_an_error_before_any_work(tmp_path, capsys, real_dir):
    out = tmp_path / "out.fits"
    assert main(["predict", "/no/such.fits", "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "redsift: error: /no/such.fits: no such file or directory" and not out.exists()
    pattern = str(tmp_path / "spec-*.fits")
    assert main(["predict", pattern, "-o", str(out), "--quiet"]) == 1
    assert capsys.readouterr().err.strip() == f"redsift: error: {pattern}: no file matches this pattern"
    assert not out.exists()
    # a missing path among good ones stops the run too (nothing written)
    good = str(real_dir / "boss" / "spec-3655-55240-0054.fits")
    assert main(["predict", good, str(tmp_path / "typo.fits"), "-o", str(out), "--quiet"]) == 1
    assert not out.exists()
    # a quoted glob that matches is expanded, sorted
    assert main(["predict", str(real_dir / "boss" / "spec-3655-*.fits"), "-o", str(out), "--quiet"]) == 0
    assert len(Table.read(out)) == 17


def test_directory_contributes_only_spectra(tmp_path, capsys, real_dir, caplog):
    out = tmp_path / "out.fits"
    assert main(["-v", "predict", str(real_dir / "boss"), "-o", str(out), "--quiet"]) == 0
    t = Table.read(out)
    assert len(t) == 22  # 22 spec files; labels.csv is skipped, not a row
    assert not any(str(s).endswith("labels.csv") for s in t["SOURCE"])
    assert "labels.csv: skipped" in capsys.readouterr().err


def test_unreadable_named_input_writes_catalog_and_exits_partial(tmp_path, capsys, real_dir):
    bad = tmp_path / "spec-trunc.fits"
    src = (real_dir / "boss" / "spec-3655-55240-0054.fits").read_bytes()
    bad.write_bytes(src[: len(src) // 3])
    out = tmp_path / "out.fits"
    rc = main(["predict", str(real_dir / "boss" / "spec-3655-55240-0104.fits"), str(bad), "-o", str(out), "--quiet"])
    assert rc == EXIT_PARTIAL == 3
    t = Table.read(out)
    assert len(t) == 2 and t["ZWARN"][1] & ZWarningMask.BAD_INPUT and t["ZWARN"][1] & ZWarningMask.NODATA
    assert "truncated" in t["ERROR"][1] and t["INDEX"][1] == -1
    assert "1 input(s) could not be read" in capsys.readouterr().err


def test_redrock_output_from_the_command_line(tmp_path, real_dir):
    """``--redrock``: REDSHIFTS with Redrock's columns, one row per catalog row, and the inputs' FIBERMAP."""
    from astropy.io import fits

    from redsift.io.redrock_format import REDSHIFTS_COLUMNS

    desi = str(real_dir / "desi" / "coadd-4-80613-thru20210324.fits")
    boss = str(real_dir / "boss" / "spec-3655-55240-0054.fits")
    out, rr = tmp_path / "cat.fits", tmp_path / "redrock.fits"
    assert main(["predict", desi, boss, "-o", str(out), "--redrock", str(rr), "--quiet"]) == 0
    cat = Table.read(out)
    with fits.open(rr) as h:
        assert [x.name for x in h] == ["PRIMARY", "REDSHIFTS", "FIBERMAP"]
        z = h["REDSHIFTS"].data
        assert list(z.columns.names) == [n for n, _ in REDSHIFTS_COLUMNS]
        assert len(z) == len(cat) and list(z["TARGETID"]) == list(cat["TARGETID"])
        assert list(h["FIBERMAP"].data["TARGETID"]) == list(cat["TARGETID"])
        assert "TILEID" in h["FIBERMAP"].columns.names
    # an existing Redrock file is not overwritten without --overwrite, and nothing is written
    assert main(["predict", boss, "-o", str(tmp_path / "c2.fits"), "--redrock", str(rr), "--quiet"]) == 1
    assert not (tmp_path / "c2.fits").exists()


def test_boss_thing_id_is_read_from_the_spec_file(real_dir):
    """THING_ID comes from HDU2 of spec files, equal to astropy's full parse of that table; one object
    observed twice (3655-0228 and 9367-0446) has one THING_ID, so a join to DR16Q or a split by object works."""
    from astropy.io import fits

    files = sorted((real_dir / "boss").glob("spec-*.fits"))
    s = redsift.read(files)
    for f, tid in zip(files, s.meta["THING_ID"]):
        with fits.open(f) as h:
            assert tid == int(h[2].data["THING_ID"][0])
    by_name = dict(zip((f.name for f in files), s.meta["THING_ID"]))
    assert by_name["spec-3655-55240-0228.fits"] == by_name["spec-9367-57758-0446.fits"] == 427878017
    # the SDSS-I file (DR8-era data model) has no THING_ID column: the sentinel
    assert redsift.read(real_dir / "sdss1" / "spec-0266-51602-0001.fits").meta["THING_ID"][0] == -1
