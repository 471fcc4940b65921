import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from redsift import LogGrid, ZWarningMask, __version__
from redsift.io import output
from redsift.io.output import order_columns, provenance, write_catalog
from redsift.zwarning import describe


def _catalog(n=3):
    return Table({"EXTRA": np.arange(n), "INDEX": np.arange(n), "SOURCE": ["a.fits"] * n,
                  "SPECTYPE": ["QSO"] * n, "Z": np.linspace(1, 2, n), "ZWARN": np.zeros(n, np.int64),
                  "PLATE": np.full(n, 3655), "SUBTYPE": [""] * n, "ZERR": np.full(n, 1e-3),
                  "TARGETID": np.arange(n, dtype=np.int64) + 100})


def test_column_order_follows_redrock():
    t = order_columns(_catalog())
    assert t.colnames == ["TARGETID", "Z", "ZERR", "ZWARN", "SPECTYPE", "SUBTYPE", "PLATE", "SOURCE", "INDEX",
                          "EXTRA"]


def test_fits_catalog_has_provenance(tmp_path):
    p = tmp_path / "cat.fits"
    prov = provenance(model="quasarnet", weights_sha256="abc123", grid=LogGrid.quasarnet(),
                      command="redsift predict " + "x" * 120)
    write_catalog(_catalog(), p, prov)
    with fits.open(p) as h:
        assert h[1].name == "REDSHIFTS"
        hdr = h[1].header
        assert hdr["RSVER"] == __version__ and hdr["MODEL"] == "quasarnet" and hdr["WHASH"] == "abc123"
        assert "443 px" in hdr["GRID"]
        assert hdr["COMMAND"].endswith("x" * 120)  # long values survive (CONTINUE cards)
        assert hdr["ZWBIT09"] == "NODATA" and hdr["ZWBIT20"] == "BAD_INPUT"
        assert h[1].columns.names[:6] == ["TARGETID", "Z", "ZERR", "ZWARN", "SPECTYPE", "SUBTYPE"]
        assert h[0].header["MODEL"] == "quasarnet"


@pytest.mark.parametrize("ext", ["csv", "ecsv", "parquet"])
def test_other_formats_by_extension(tmp_path, ext):
    if ext == "parquet":
        pytest.importorskip("pyarrow")
    p = tmp_path / f"cat.{ext}"
    write_catalog(_catalog(), p, provenance(model="m"))
    if ext == "parquet":  # read with pyarrow itself (astropy's parquet reader also wants pandas)
        import pyarrow.parquet as pq

        pt = pq.read_table(p)
        back = Table({name: pt.column(name).to_numpy() for name in pt.column_names})
        back.meta = {k.decode(): v.decode() for k, v in (pt.schema.metadata or {}).items()}
        back.meta.update(_astropy_meta(back.meta))
    else:
        back = Table.read(p, format={"csv": "ascii.csv", "ecsv": "ascii.ecsv"}[ext])
    assert back.colnames[0] == "TARGETID" and len(back) == 3
    np.testing.assert_allclose(back["Z"], _catalog()["Z"])
    if ext in ("ecsv", "parquet"):
        assert back.meta["model"] == "m"


def _astropy_meta(raw: dict) -> dict:
    """astropy keeps table meta in the parquet schema under 'table_meta_yaml'."""
    import yaml

    text = raw.get("table_meta_yaml", "")
    if not text:
        return {}
    doc = yaml.safe_load("\n".join(line for line in text.splitlines() if not line.startswith("%")))
    return (doc or {}).get("meta", {}) if isinstance(doc, dict) else {}


def test_existing_catalog_is_not_overwritten_by_default(tmp_path):
    p = tmp_path / "cat.fits"
    write_catalog(_catalog(), p)
    with pytest.raises(FileExistsError, match="cat.fits: exists"):
        write_catalog(_catalog(), p)
    write_catalog(_catalog(5), p, overwrite=True)
    assert len(Table.read(p)) == 5


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    p = tmp_path / "cat.fits"
    write_catalog(_catalog(3), p)
    before = p.read_bytes()

    def boom(table, path, prov, extname):
        with open(path, "wb") as f:
            f.write(b"SIMPLE  = half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(output, "_write_fits", boom)
    with pytest.raises(KeyboardInterrupt):
        write_catalog(_catalog(7), p, overwrite=True)
    assert p.read_bytes() == before  # the old catalog is intact
    assert [f for f in os.listdir(tmp_path) if f != "cat.fits"] == []  # no temporary left behind


def test_required_columns():
    with pytest.raises(ValueError, match="ZWARN"):
        write_catalog(Table({"TARGETID": [1]}), "never-written.fits")
    assert not os.path.exists("never-written.fits")


def test_zwarn_bits_keep_redrock_meanings():
    assert ZWarningMask.SKY == 1 and ZWarningMask.LITTLE_COVERAGE == 2 and ZWarningMask.SMALL_DELTA_CHI2 == 4
    assert ZWarningMask.NODATA == 512
    # redrock 0.21's own names for bits 0-11 (its py/redrock/zwarning.py)
    redrock = ["SKY", "LITTLE_COVERAGE", "SMALL_DELTA_CHI2", "NEGATIVE_MODEL", "MANY_OUTLIERS", "Z_FITLIMIT",
               "NEGATIVE_EMISSION", "UNPLUGGED", "BAD_TARGET", "NODATA", "BAD_MINFIT", "POORDATA"]
    assert [m.name for m in ZWarningMask if m.value < 2**12] == redrock
    own = [m for m in ZWarningMask if m.value >= 2**12]
    # DESI uses 16-19 of the afterburner range 16-23; redsift 20-23, and 24 and 25 once that range was full
    assert [int(np.log2(m.value)) for m in own] == [20, 21, 22, 23, 24, 25]
    assert describe(512 | 2**20) == ["NODATA", "BAD_INPUT"]
