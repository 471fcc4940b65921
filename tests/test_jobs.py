"""``redsift predict -j N`` (issue 20): files read and gridded in forked reader processes give the serial
catalog row for row, unreadable inputs included, and the inputs' metadata in the same order."""

import numpy as np

from redsift.models import load_model
from redsift.predict import predict_catalog
from redsift.spectra import stack_meta


def test_reader_processes_give_the_serial_catalog(real_dir, tmp_path):
    files = [str(p) for p in sorted((real_dir / "boss").glob("spec-*.fits"))[:7]]
    bad = tmp_path / "spec-bad.fits"
    bad.write_bytes(b"SIMPLE  = T" + b" " * 100)
    inputs = files[:3] + [str(bad)] + files[3:] + [str(real_dir / "desi" / "coadd-quasarnp-test.fits")]
    model = load_model("quasarnet-boss-sim")
    m1, m2 = [], []
    one = predict_catalog(model, inputs, progress=False, input_meta=m1)
    two = predict_catalog(model, inputs, progress=False, input_meta=m2, jobs=2)
    assert one.colnames == two.colnames and len(one) == len(two) == 8 + 25
    for c in one.colnames:
        a, b = np.asarray(one[c]), np.asarray(two[c])
        assert np.array_equal(a, b) or (a.dtype.kind == "f" and np.array_equal(a, b, equal_nan=True)), c
    # the inputs' metadata in catalog order (cut into tables per batch of files, which may differ)
    s1, s2 = stack_meta(m1), stack_meta(m2)
    assert len(s1) == len(s2) == len(one)
    assert list(s1["SOURCE"]) == list(s2["SOURCE"]) == list(one["SOURCE"])
    assert int(np.sum(np.asarray(two["ZWARN"]) & 2**20 > 0)) == 1


def test_reuse_freed_memory_once_and_opt_out(monkeypatch):
    """The allocator setting of predict runs: applied once per process (the answer is remembered), never
    with REDSIFT_NO_MALLOPT=1, and a plain False where the C library has no mallopt."""
    import platform
    import sys

    from redsift.predict import pipeline

    monkeypatch.setattr(pipeline, "_MALLOPT", [])
    monkeypatch.setenv("REDSIFT_NO_MALLOPT", "1")
    assert pipeline.reuse_freed_memory() is False and pipeline._MALLOPT == [False]
    monkeypatch.delenv("REDSIFT_NO_MALLOPT")
    assert pipeline.reuse_freed_memory() is False  # remembered: not asked again
    monkeypatch.setattr(pipeline, "_MALLOPT", [])
    ok = pipeline.reuse_freed_memory()
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert ok is glibc and pipeline._MALLOPT == [ok]


def test_a_catalog_written_as_it_goes_is_the_one_held_in_memory(real_dir, tmp_path, monkeypatch):
    """``redsift predict`` to FITS spools finished rows to parts on disk and writes them into one file at the
    end (issue 20: a survey's catalog is never held in memory): the same file, byte for byte, as the catalog
    held in memory and written at once, for parts of a few rows mixing real files, an unreadable one and
    strings of different widths per part; the temporary parts are removed, also when the run fails."""
    import os

    import pytest

    from redsift.io.output import provenance, write_catalog
    from redsift.predict import pipeline, predict_to_file

    files = [str(p) for p in sorted((real_dir / "boss").glob("spec-*.fits"))[:5]]
    bad = tmp_path / "spec-bad-with-a-long-name.fits"
    bad.write_bytes(b"SIMPLE  = T" + b" " * 100)
    inputs = files[:2] + [str(bad)] + files[2:] + [str(real_dir / "desi" / "coadd-quasarnp-test.fits")]
    model = load_model("quasarnet-boss-sim")
    prov = provenance(model="quasarnet-boss-sim", command="test")
    write_catalog(predict_catalog(model, inputs, progress=False), tmp_path / "held.fits", prov)
    out = tmp_path / "out" / "streamed.fits"
    summary = predict_to_file(model, inputs, out, prov, progress=False, spool_rows=3)
    assert out.read_bytes() == (tmp_path / "held.fits").read_bytes()
    assert summary["rows"] == 6 + 25 and summary["bad_input"] == 1 and sum(summary["spectype"].values()) == 31
    assert os.listdir(out.parent) == ["streamed.fits"]  # no parts left behind
    with pytest.raises(FileExistsError):
        predict_to_file(model, inputs, out, prov, progress=False)

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("redsift.io.output.write_catalog_parts", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        predict_to_file(model, inputs, tmp_path / "out" / "failed.fits", prov, progress=False, spool_rows=3)
    assert os.listdir(out.parent) == ["streamed.fits"]
    assert pipeline.SPOOL_ROWS >= pipeline.BATCH_ROWS


def test_catalog_parts_written_as_one_file(tmp_path):
    """:func:`redsift.io.output.write_catalog_parts`: parts whose strings differ in width give the file
    :func:`write_catalog` writes of them stacked; parts with other columns are refused."""
    import pytest
    from astropy.table import Table, vstack

    from redsift.io.output import provenance, write_catalog, write_catalog_parts

    def part(n, text, z0):
        return Table({"TARGETID": np.arange(n, dtype=np.int64) + z0, "Z": np.full(n, 0.5), "ZWARN": np.zeros(n, np.int64),
                      "SPECTYPE": ["QSO"] * n, "ERROR": [text] * n, "COEFF": np.ones((n, 3), np.float32),
                      "FLAG": np.arange(n) % 2 == 0})

    parts = [part(4, "", 0), part(1, "a much longer reason than the others", 10), part(3, "short", 20)]
    paths = []
    for k, p in enumerate(parts):
        paths.append(str(tmp_path / f"p{k}.fits"))
        write_catalog(p, paths[-1])
    prov = provenance(model="m", command="c")
    write_catalog(vstack(parts), tmp_path / "whole.fits", prov)
    write_catalog_parts(paths, tmp_path / "parts.fits", prov)
    assert (tmp_path / "parts.fits").read_bytes() == (tmp_path / "whole.fits").read_bytes()
    odd = part(2, "", 30)
    odd.remove_column("FLAG")
    write_catalog(odd, tmp_path / "odd.fits")
    with pytest.raises(ValueError, match="columns differ"):
        write_catalog_parts(paths + [str(tmp_path / "odd.fits")], tmp_path / "bad.fits", prov)
    assert not (tmp_path / "bad.fits").exists()
