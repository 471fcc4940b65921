import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from redsift.errors import CatalogError
from redsift.io.catalogs import read_catalog


def test_spall(real_dir):
    t = read_catalog(real_dir / "catalogs" / "spAll-plate3655.fits")
    assert t.meta["CATALOG"] == "spall" and len(t) == 93
    assert set(np.unique(t["CLASS"])) <= {"QSO", "STAR", "GALAXY", "UNKNOWN"}
    assert np.all(t["LABEL_SOURCE"] == "pipeline")
    row = t[(t["PLATE"] == 3655) & (t["FIBERID"] == 54)][0]
    assert row["TARGETID"] == 3655552400054 and row["CLASS"] == "QSO"
    assert row["Z"] == pytest.approx(0.8025, abs=1e-3)
    # one object, two observations (3655-0228 and 9367-0446): same THING_ID
    assert np.sum(t["THING_ID"] == 427878017) == 2


def test_dr14q_extract(real_dir):
    t = read_catalog(real_dir / "catalogs" / "DRQ_Pk1D.fits")
    assert t.meta["CATALOG"] == "dr14q" and len(t) == 8
    assert np.all(t["CLASS"] == "QSO") and np.all(t["THING_ID"] > 0)
    assert np.all(t["TARGETID"] == t["PLATE"] * 1_000_000_000 + t["MJD"] * 10_000 + t["FIBERID"])


def test_desi_redrock_and_qso_catalog(real_dir):
    rr = read_catalog(real_dir / "desi" / "redrock-4-80613-thru20210324.fits")
    assert rr.meta["CATALOG"] == "desi-redrock"
    assert rr["TARGETID"][0] == 39633345008634465 and rr["CLASS"][0] == "GALAXY"
    assert rr["Z"][0] == pytest.approx(0.369, abs=1e-3)
    bal = read_catalog(real_dir / "catalogs" / "baltestcat.fits.gz")
    assert bal.meta["CATALOG"] == "desi-qso-catalog" and len(bal) == 2
    assert list(bal["BAL_FLAG"]) == [0, 1]  # BI_CIV 0 and 1840 km/s


def test_labels_csv(real_dir):
    t = read_catalog(real_dir / "boss" / "labels.csv")
    assert t.meta["CATALOG"] == "labels-table" and len(t) == 22
    assert (t["CLASS"] == "QSO").sum() == 20


def _dr12q_superset(path):
    """A DR12Q-superset fixture built from its data model (Paris et al. 2017; no such file is in shared/):
    CLASS_PERSON, Z_VI, Z_CONF_PERSON, BAL_FLAG_VI, BI_CIV, THING_ID, PLATE, MJD, FIBERID (int32)."""
    t = Table({
        "SDSS_NAME": ["J000000.00+000000.0"] * 6,
        "THING_ID": np.array([1, 2, 3, 4, 5, 6], np.int32),
        "PLATE": np.array([10656, 3655, 3655, 3655, 3655, 3655], np.int32),
        "MJD": np.array([58163, 55240, 55240, 55240, 55240, 55240], np.int32),
        "FIBERID": np.array([366, 54, 104, 154, 184, 228], np.int32),
        "CLASS_PERSON": np.array([3, 30, 1, 4, 0, 7], np.int16),
        "Z_VI": [2.29, 1.9, 0.0, 0.3, -1.0, 1.0],
        "Z_CONF_PERSON": np.array([3, 3, 3, 2, 0, 1], np.int16),
        "BAL_FLAG_VI": np.array([0, 1, 0, 0, 0, 0], np.int16),
        "BI_CIV": [0.0, 2500.0, 0.0, 0.0, 0.0, 0.0],
    })
    t.write(path)


def test_dr12q_superset_mapping(tmp_path, caplog):
    p = tmp_path / "DR12Q_superset_fixture.fits"
    _dr12q_superset(p)
    t = read_catalog(p)
    assert t.meta["CATALOG"] == "dr12q-superset"
    assert list(t["CLASS"]) == ["QSO", "QSO", "STAR", "GALAXY", "UNKNOWN", "UNKNOWN"]
    assert list(t["BAL_FLAG"]) == [0, 1, 0, 0, 0, 0]
    assert t["SUBCLASS"][1] == "BAL" and t["BI_CIV"][1] == 2500.0
    assert list(t["Z_CONF"]) == [3, 3, 3, 2, 0, 1]
    assert t["TARGETID"][0] == 10656581630366  # int32 ids cast before the product
    assert np.all(t["LABEL_SOURCE"] == "visual")
    assert "CLASS_PERSON values [7]" in caplog.text  # unknown code reported, row kept


def test_dr16q_mapping(tmp_path):
    p = tmp_path / "DR16Q_fixture.fits"
    Table({"THING_ID": [1, 2], "PLATE": [3655, 3655], "MJD": [55240, 55240], "FIBERID": [54, 104],
           "Z": [0.8, 2.1], "Z_CONF": [3, 2], "BAL_PROB": [0.0, 0.99], "BI_CIV": [0.0, 900.0],
           "IS_QSO_FINAL": [1, 1]}).write(p)
    t = read_catalog(p)
    assert t.meta["CATALOG"] == "dr16q"
    assert list(t["BAL_FLAG"]) == [0, 1] and list(t["Z_CONF"]) == [3, 2]


def test_bad_catalogs(tmp_path):
    with pytest.raises(CatalogError, match="nope.fits: no such file"):
        read_catalog(tmp_path / "nope.fits")
    p = tmp_path / "other.fits"
    Table({"A": [1], "B": [2]}).write(p)
    with pytest.raises(CatalogError, match="other.fits: columns match no known catalog kind"):
        read_catalog(p)
    p = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((3, 3))).writeto(p)
    with pytest.raises(CatalogError, match="image.fits: not a readable catalog"):
        read_catalog(p)
    p = tmp_path / "dr12q_missing.fits"
    Table({"CLASS_PERSON": [3], "Z_CONF_PERSON": [3], "PLATE": [1], "MJD": [2], "FIBERID": [3]}).write(p)
    with pytest.raises(CatalogError, match="dr12q_missing.fits: missing column Z_VI"):
        read_catalog(p)
