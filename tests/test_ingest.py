import json
import shutil

import numpy as np
import pytest
from astropy.table import Table

import redsift
from redsift.cli.main import main
from redsift.data import Dataset
from redsift.data import store as store_mod
from redsift.data.ingest import index_spectra, ingest, spectrum_index
from redsift.errors import RedsiftError
from redsift.io.sdss import write_spplate
from redsift.preprocess import bin_quasarnet


@pytest.fixture
def archive(tmp_path, boss_files):
    """BOSS spec files laid out as on the SDSS archive: PLATE/spec-PLATE-MJD-FIBER.fits."""
    root = tmp_path / "spectra"
    for f in boss_files:
        plate = f.name.split("-")[1]
        (root / plate).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / plate / f.name)
    return root


def test_ingest_spall_with_boss_spec_files(archive, real_dir, tmp_path):
    out = tmp_path / "ds"
    rep = ingest(real_dir / "catalogs" / "spAll-plate3655.fits", archive, out, rows_per_chunk=7, progress=False)
    # spAll-plate3655 has 93 rows; 21 of them have a spec file here (22 files; it lacks fiber 0660)
    assert rep.catalog_rows == 93 and rep.written == 21 and rep.missing_file == 72
    assert rep.written + len(rep.rejected) == rep.catalog_rows  # every row accounted for
    ds = Dataset(out)
    assert len(ds) == 21 and len(ds.shards) == 3
    rej = Table.read(out / "rejected.csv")
    assert len(rej) == 72 and set(rej["REASON"]) == {"no spectrum file"}
    assert json.loads((out / "ingest_report.json").read_text())["written"] == 21
    meta = ds.meta
    k = int(np.flatnonzero(meta["FIBERID"] == 54)[0])
    assert meta["CLASS"][k] == "QSO" and abs(meta["Z"][k] - 0.8025) < 1e-3 and meta["THING_ID"][k] > 0
    # the stored flux is QuasarNET's binning of that file
    s = redsift.read(meta["SOURCE"][k])
    np.testing.assert_allclose(ds.read([k])[0][0], bin_quasarnet(s).flux[0], rtol=1e-6)
    assert ds.provenance["catalog_kind"] == "spall"


def test_ingest_from_spplate(boss_files, real_dir, tmp_path):
    root = tmp_path / "plates" / "3655"
    root.mkdir(parents=True)
    specs = redsift.read([f for f in boss_files if f.name.startswith("spec-3655-")])
    write_spplate(specs, root / "spPlate-3655-55240.fits")
    rep = ingest(real_dir / "catalogs" / "spAll-plate3655.fits", tmp_path / "plates", tmp_path / "ds",
                 progress=False)
    # the spPlate holds the 17 fibers it was built from; 16 are in the catalog (it lacks 0660)
    assert rep.written == 16 and rep.missing_file == 93 - 16
    ds = Dataset(tmp_path / "ds")
    assert set(ds.meta["INDEX"]) <= set(range(17)) and set(ds.meta["SOURCE"]) == {str(root / "spPlate-3655-55240.fits")}


def test_ingest_desi_redrock(real_dir, tmp_path):
    root = tmp_path / "desi"
    root.mkdir()
    shutil.copy(real_dir / "desi" / "coadd-4-80613-thru20210324.fits", root)
    rep = ingest(real_dir / "desi" / "redrock-4-80613-thru20210324.fits", root, tmp_path / "ds", progress=False)
    assert rep.written == 1
    ds = Dataset(tmp_path / "ds")
    assert ds.meta["CLASS"][0] == "GALAXY" and ds.meta["SURVEY"][0] == "desi"


def test_bad_rows_are_counted_never_dropped(archive, tmp_path, capsys):
    # labels table: a duplicated TARGETID, an unknown class name, a row without file, a corrupt spectrum
    bad = archive / "3655" / "spec-3655-55240-0054.fits"
    bad.write_bytes(bad.read_bytes()[:20000])
    cat = tmp_path / "labels.csv"
    Table({"plate": [3655, 3655, 3655, 3655, 3655], "mjd": [55240] * 5, "fiber": [104, 104, 154, 9, 54],
           "cls": ["QSO", "QSO", "ALIEN", "STAR", "QSO"], "z": [1.0, 1.0, 2.0, 0.0, 0.8]}).write(cat)
    out = tmp_path / "ds"
    assert main(["ingest", "--catalog", str(cat), "--spectra", str(archive), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert ("5 catalog rows: 2 written (0 with no valid data, flagged NODATA), 1 without a spectrum file, "
            "1 unreadable, 1 duplicated TARGETID, 1 of unknown class (kept as UNKNOWN)") in text
    rej = Table.read(out / "rejected.csv")
    assert list(rej["ROW"]) == [1, 3, 4]
    assert rej["REASON"][0] == "duplicated TARGETID" and rej["REASON"][1] == "no spectrum file"
    assert rej["REASON"][2].startswith("unreadable spectrum: truncated FITS file")
    assert sorted(Dataset(out).meta["CLASS"]) == ["QSO", "UNKNOWN"]


def test_catalog_with_missing_columns_fails_with_one_line(archive, tmp_path, capsys):
    cat = tmp_path / "dr12q.fits"
    Table({"CLASS_PERSON": [3], "Z_CONF_PERSON": [3], "PLATE": [3655], "MJD": [55240], "FIBERID": [54]}).write(cat)
    assert main(["ingest", "--catalog", str(cat), "--spectra", str(archive), "-o", str(tmp_path / "ds")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"redsift: error: {cat}: missing column Z_VI"
    assert not (tmp_path / "ds").exists()


def test_resume_after_interruption_gives_the_same_dataset(archive, real_dir, tmp_path, monkeypatch):
    cat = real_dir / "catalogs" / "spAll-plate3655.fits"
    ingest(cat, archive, tmp_path / "full", rows_per_chunk=4, progress=False)
    full = Dataset(tmp_path / "full")

    real_write = store_mod.DatasetWriter.write_shard
    calls = {"n": 0}

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_write(self, *a, **kw)

    monkeypatch.setattr(store_mod.DatasetWriter, "write_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        ingest(cat, archive, tmp_path / "part", rows_per_chunk=4, progress=False)
    monkeypatch.undo()
    assert len(Dataset(tmp_path / "part")) == 8  # two shards of 4 survived
    with pytest.raises(RedsiftError, match="resume it with --chunk 4"):  # other chunks would not be the run's
        ingest(cat, archive, tmp_path / "part", rows_per_chunk=5, resume=True, progress=False)
    rep = ingest(cat, archive, tmp_path / "part", resume=True, progress=False)  # (the run's own size, recorded)
    assert rep.skipped_chunks == 2 and rep.written == 21
    # a run from before the record: resumed only with its size given
    index = json.loads((tmp_path / "full" / "index.json").read_text())
    del index["provenance"]["rows_per_chunk"]
    (tmp_path / "full" / "index.json").write_text(json.dumps(index))
    with pytest.raises(RedsiftError, match="does not record its chunk size"):
        ingest(cat, archive, tmp_path / "full", resume=True, progress=False)
    assert ingest(cat, archive, tmp_path / "full", rows_per_chunk=4, resume=True, progress=False).skipped_chunks == 6
    part = Dataset(tmp_path / "part")
    np.testing.assert_array_equal(part.meta["TARGETID"], full.meta["TARGETID"])
    np.testing.assert_array_equal(part.read(np.arange(21))[0], full.read(np.arange(21))[0])


def test_parallel_ingest_equals_serial(archive, real_dir, tmp_path):
    cat = real_dir / "catalogs" / "spAll-plate3655.fits"
    ingest(cat, archive, tmp_path / "j1", rows_per_chunk=6, jobs=1, progress=False)
    ingest(cat, archive, tmp_path / "j2", rows_per_chunk=6, jobs=2, progress=False)
    a, b = Dataset(tmp_path / "j1"), Dataset(tmp_path / "j2")
    np.testing.assert_array_equal(a.meta["TARGETID"], b.meta["TARGETID"])
    np.testing.assert_array_equal(a.read(np.arange(len(a)))[0], b.read(np.arange(len(b)))[0])


def test_spectrum_index_prefers_spec_files_and_joins_by_arrays(archive, boss_files, tmp_path):
    """A fibre in both a spec file and an spPlate is read from the spec file (the first found wins); keys the
    index lacks come back as -1; the dict view says the same as the arrays."""
    specs = redsift.read([f for f in boss_files if f.name.startswith("spec-3655-")])
    (archive / "3655").mkdir(exist_ok=True)
    write_spplate(specs, archive / "3655" / "spPlate-3655-55240.fits")
    idx = spectrum_index(archive)
    fibers = np.asarray(specs.meta["FIBERID"], np.int64)
    value = (np.int64(3655) << 40) | (np.int64(55240) << 20) | fibers
    f, r = idx.lookup(np.zeros(len(fibers) + 1, np.int8), np.r_[value, value[0] + 5000])
    assert f[-1] == -1 and r[-1] == -1
    got = [idx.paths[i] for i in f[:-1]]
    assert all(p.endswith(f"spec-3655-55240-{fb:04d}.fits") for p, fb in zip(got, fibers))
    assert np.all(r[:-1] == 0)
    # a catalog key the packing cannot hold matches nothing (as its tuple did), whatever the fibre of -1 packs to
    from redsift.data.ingest import _keys

    kind, _ = _keys(Table({"TARGETID": [1, 2, 3], "PLATE": [3655, 3655, 0], "MJD": [55240, 55240, 0],
                           "FIBERID": [int(fibers[0]), -1, 0]}), np.arange(3))
    np.testing.assert_array_equal(kind, [0, 2, 1])
    d = index_spectra(archive)
    assert d[("sdss", 3655, 55240, int(fibers[0]))] == (got[0], 0)
    assert len(d) == len(idx.value)


def test_compact_labels_give_the_catalogs_rows():
    """While the chunks run the catalog's labels are held as codes (text) and arrays: any rows come back with the
    catalog's own columns, dtypes and values."""
    from redsift.data.ingest import _Labels

    cat = Table({"TARGETID": np.arange(6, dtype=np.int64), "CLASS": ["QSO", "STAR", "QSO", "GALAXY", "", "STAR"],
                 "SUBCLASS": ["", "K5", "BAL", "", "", "M0V"], "Z": np.linspace(0, 2.5, 6)})
    labels = _Labels(cat, ["TARGETID", "CLASS", "SUBCLASS", "Z"])
    for rows in (np.array([5, 0, 3, 3]), np.arange(6), np.zeros(0, np.int64)):
        got, want = labels.rows(rows), cat[rows]
        assert got.colnames == want.colnames
        for c in want.colnames:
            assert got[c].dtype == want[c].dtype and list(got[c]) == list(want[c])
