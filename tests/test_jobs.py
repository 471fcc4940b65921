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
