"""Prediction on a real Dask LocalCluster (2 worker processes on loopback; issue 20): the distributed catalog
is the serial one row for row, a corrupt input changes nothing else, a worker killed mid-run loses and
duplicates nothing, resume reruns only missing shards, and the faults that can be checked early are."""

import os
import time

import numpy as np
import pytest

pytest.importorskip("dask.distributed", reason="dask.distributed not installed (pip install 'redsift[dist]')")

from redsift.errors import RedsiftError  # noqa: E402
from redsift.models import load_model  # noqa: E402
from redsift.predict import predict_catalog  # noqa: E402
from redsift.predict.distributed import plan_tasks, predict_distributed  # noqa: E402
from redsift.predict.pipeline import resolve_inputs  # noqa: E402

MODEL = "quasarnet-boss-sim"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, real_dir):
    d = tmp_path_factory.mktemp("dist")
    files = [str(p) for p in sorted((real_dir / "boss").glob("spec-*.fits"))[:9]]
    bad = d / "spec-corrupt.fits"
    bad.write_bytes(open(files[0], "rb").read()[:5000])  # truncated
    return files[:4] + [str(bad)] + files[4:]


def _equal(a, b):
    assert a.colnames == b.colnames
    assert len(a) == len(b)
    for c in a.colnames:
        x, y = np.asarray(a[c]), np.asarray(b[c])
        assert x.dtype == y.dtype, (c, x.dtype, y.dtype)
        assert np.array_equal(x, y) or (x.dtype.kind == "f" and np.array_equal(x, y, equal_nan=True)), c


def test_distributed_equals_serial_even_when_a_worker_dies(inputs, tmp_path):
    serial = predict_catalog(load_model(MODEL), inputs, progress=False)
    out = str(tmp_path / "cat.fits")
    # task 1's first attempt kills its worker process (os._exit) mid-run: the scheduler reruns it elsewhere
    cat = predict_distributed(MODEL, inputs, out, workers=2, files_per_task=3, progress=False, _kill_task=1)
    _equal(cat, serial)
    assert os.path.exists(f"{out}.shards/.kill-1")  # the kill happened
    assert int(np.sum(np.asarray(cat["ZWARN"]) & 2**20 > 0)) == 1  # the corrupt file: one BAD_INPUT row, in place
    assert str(cat["ERROR"][4]).startswith(inputs[4].split("/")[-1]) or "truncated" in str(cat["ERROR"][4])


def test_resume_reruns_only_missing_shards(inputs, tmp_path):
    out = str(tmp_path / "cat.fits")
    first = predict_distributed(MODEL, inputs, out, workers=2, files_per_task=4, progress=False)
    shards = sorted(p for p in os.listdir(f"{out}.shards") if p.startswith("shard-"))
    assert len(shards) == len(plan_tasks(resolve_inputs(inputs), 4)) == 3
    os.remove(f"{out}.shards/{shards[1]}")
    before = {s: os.path.getmtime(f"{out}.shards/{s}") for s in (shards[0], shards[2])}
    time.sleep(0.05)
    again = predict_distributed(MODEL, inputs, out, workers=2, files_per_task=4, progress=False, resume=True)
    _equal(again, first)
    assert {s: os.path.getmtime(f"{out}.shards/{s}") for s in before} == before
    # `redsift predict --workers` writes the shards into one file one at a time: the serial catalog's file
    from redsift.io.output import provenance, write_catalog, write_catalog_parts

    paths = predict_distributed(MODEL, inputs, out, workers=2, files_per_task=4, progress=False, resume=True,
                                merge=False)
    prov = provenance(model=MODEL, command="test")
    write_catalog_parts(paths, tmp_path / "parts.fits", prov)
    write_catalog(predict_catalog(load_model(MODEL), inputs, progress=False), tmp_path / "held.fits", prov)
    assert (tmp_path / "parts.fits").read_bytes() == (tmp_path / "held.fits").read_bytes()
    with pytest.raises(RedsiftError, match="cannot resume"):  # other inputs: the shards are not reused
        predict_distributed(MODEL, inputs[:3], out, workers=2, files_per_task=4, progress=False, resume=True)


def test_early_faults(inputs, tmp_path):
    t = time.perf_counter()
    with pytest.raises(RedsiftError, match="unreachable"):
        predict_distributed(MODEL, inputs, str(tmp_path / "c.fits"), scheduler="tcp://127.0.0.1:9", connect_timeout=2,
                            progress=False)
    assert time.perf_counter() - t < 30
    blocker = tmp_path / "a-file"  # an output whose directory cannot exist (root ignores permission bits)
    blocker.write_text("x")
    t = time.perf_counter()
    with pytest.raises(RedsiftError, match="cannot write the shards"):
        predict_distributed(MODEL, inputs, str(blocker / "c.fits"), workers=2, progress=False)
    assert time.perf_counter() - t < 10  # before any cluster starts


def test_simulate_on_a_cluster_writes_the_serial_dataset(tmp_path):
    from redsift.data.store import Dataset
    from redsift.simulate import simulate

    simulate(45, "boss", tmp_path / "serial", seed=4, block=15, progress=False)
    simulate(45, "boss", tmp_path / "dask", seed=4, block=15, progress=False, workers=2)
    a, b = Dataset(tmp_path / "serial"), Dataset(tmp_path / "dask")
    fa, ia, ma = a.read(range(45))
    fb, ib, mb = b.read(range(45))
    assert np.array_equal(fa, fb) and np.array_equal(ia, ib) and np.array_equal(ma, mb)
    for c in a.meta.colnames:
        x, y = np.asarray(a.meta[c]), np.asarray(b.meta[c])
        assert np.array_equal(x, y) or (x.dtype.kind == "f" and np.array_equal(x, y, equal_nan=True)), c


def test_ingest_on_a_cluster_writes_the_serial_dataset(real_dir, boss_files, tmp_path):
    """``ingest --workers 2``: chunks read on a real LocalCluster, written in chunk order by the driver: the
    serial dataset, rows, arrays and rejections alike."""
    import shutil

    from redsift.data.ingest import ingest
    from redsift.data.store import Dataset

    archive = tmp_path / "archive" / "3655"
    archive.mkdir(parents=True)
    for f in boss_files:
        if f.name.startswith("spec-3655-"):
            shutil.copy(f, archive / f.name)
    (archive / "spec-3655-55240-0960.fits").write_bytes(b"SIMPLE  = T")  # unreadable: rejected either way
    cat = real_dir / "catalogs" / "spAll-plate3655.fits"
    r1 = ingest(cat, archive.parent, tmp_path / "serial", rows_per_chunk=5, progress=False)
    r2 = ingest(cat, archive.parent, tmp_path / "dask", rows_per_chunk=5, progress=False, workers=2)
    assert r1.summary() == r2.summary() and r1.unreadable == 1 and r1.written > 10
    assert sorted(r1.rejected) == sorted(r2.rejected)
    a, b = Dataset(tmp_path / "serial"), Dataset(tmp_path / "dask")
    for x, y in zip(a.read(np.arange(len(a))), b.read(np.arange(len(b)))):
        assert np.array_equal(x, y)
    for c in a.meta.colnames:
        x, y = np.asarray(a.meta[c]), np.asarray(b.meta[c])
        assert np.array_equal(x, y) or (x.dtype.kind == "f" and np.array_equal(x, y, equal_nan=True)), c


def test_a_dataset_is_cut_into_row_ranges(tmp_path):
    """A dataset spreads over the workers as row-range tasks; the merged catalog is the serial one."""
    from redsift.simulate import simulate

    simulate(30, "boss", tmp_path / "ds", seed=5, block=30, progress=False)
    tasks = plan_tasks(resolve_inputs([str(tmp_path / "ds")]), 64, rows_per_task=8)
    assert [t[0].rows for t in tasks] == [(0, 8), (8, 16), (16, 24), (24, 30)]
    serial = predict_catalog(load_model(MODEL), [str(tmp_path / "ds")], progress=False)
    cat = predict_distributed(MODEL, [str(tmp_path / "ds")], str(tmp_path / "c.fits"), workers=2,
                              rows_per_task=8, progress=False)
    _equal(serial, cat)
