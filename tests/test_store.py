import os

import numpy as np
import pytest
import torch
from astropy.table import Table

from redsift import LogGrid
from redsift.data import Dataset, DatasetWriter, kfold, object_ids, random_splits, split
from redsift.data.torchview import identity
from redsift.errors import RedsiftError

GRID = LogGrid.quasarnet()


def _rows(n, start=0, seed=0):
    rng = np.random.default_rng(seed)
    flux = rng.normal(size=(n, GRID.npix)).astype(np.float32)
    ivar = rng.uniform(0.5, 1, (n, GRID.npix)).astype(np.float32)
    meta = Table({"TARGETID": np.arange(start, start + n, dtype=np.int64),
                  "THING_ID": (np.arange(start, start + n) // 2 + 1).astype(np.int64),
                  "CLASS": np.array(["QSO", "STAR", "GALAXY"])[np.arange(n) % 3],
                  "Z": rng.uniform(0, 4, n)})
    return flux, ivar, ivar <= 0, meta


def test_write_read_roundtrip_and_shards(tmp_path):
    flux, ivar, mask, meta = _rows(250)
    with DatasetWriter(tmp_path / "ds", GRID, "quasarnet", {"seed": 3}, shard_size=100) as w:
        w.add(flux[:120], ivar[:120], mask[:120], meta[:120])
        w.add(flux[120:], ivar[120:], mask[120:], meta[120:])
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == 250 and len(ds.shards) == 3  # 100 + 100 + 50
    assert ds.grid == GRID and ds.binning == "quasarnet" and ds.provenance["seed"] == 3
    assert "redsift_version" in ds.provenance and "created" in ds.provenance
    # a range of rows' metadata read from the shards holding it (a fresh handle: the whole table not loaded)
    fresh = Dataset(tmp_path / "ds")
    for a, b in ((0, 250), (95, 205), (100, 200), (240, 400), (7, 7)):
        part = fresh.meta_range(a, b)
        assert part.colnames == list(meta.colnames) and fresh._meta is None
        assert list(part["CLASS"]) == list(meta["CLASS"][a:b]) and part["CLASS"].dtype.kind in "U" or not len(part)
        np.testing.assert_array_equal(part["TARGETID"], meta["TARGETID"][a:b])
    # one column of every row, one shard open at a time (no handle kept)
    col = Dataset(tmp_path / "ds")
    np.testing.assert_array_equal(col.meta_column("TARGETID"), meta["TARGETID"])
    assert list(col.meta_column("CLASS")) == list(meta["CLASS"]) and not col._handles and col._meta is None
    idx = [249, 0, 101, 101, 57]
    f, iv, m = ds.read(idx)
    np.testing.assert_array_equal(f, flux[idx])
    np.testing.assert_array_equal(iv, ivar[idx])
    assert list(ds.meta["CLASS"]) == list(meta["CLASS"]) and ds.meta["CLASS"].dtype.kind == "U"
    np.testing.assert_array_equal(ds.meta["TARGETID"], meta["TARGETID"])
    with pytest.raises(IndexError):
        ds.read([250])
    # loaded into memory (training sets that fit): the same rows, and copies of them
    ds.load()
    f2, iv2, m2 = ds.read(idx)
    np.testing.assert_array_equal(f2, flux[idx])
    np.testing.assert_array_equal(iv2, ivar[idx])
    np.testing.assert_array_equal(m2, mask[idx].astype(bool))
    f2[:] = -1
    assert np.array_equal(ds.read(idx)[0], flux[idx])
    with pytest.raises(IndexError):
        ds.read([250])


def test_append_and_grid_checks(tmp_path):
    flux, ivar, mask, meta = _rows(30)
    path = tmp_path / "ds"
    with DatasetWriter(path, GRID, "quasarnet") as w:
        w.add(flux, ivar, mask, meta)
    with pytest.raises(FileExistsError, match="dataset exists"):
        DatasetWriter(path, GRID, "quasarnet")
    with pytest.raises(RedsiftError, match="grid"):
        DatasetWriter(path, LogGrid.boss(), "quasarnet", mode="a")
    f2, i2, m2, meta2 = _rows(20, start=1000, seed=1)
    with DatasetWriter(path, GRID, "quasarnet", {"note": "more"}, mode="a") as w:
        w.add(f2, i2, m2, meta2)
    ds = Dataset(path)
    assert len(ds) == 50 and ds.index["appends"][0]["note"] == "more"
    np.testing.assert_array_equal(ds.read([40])[0][0], f2[10])


def test_interrupted_shard_write_leaves_dataset_readable(tmp_path, monkeypatch):
    flux, ivar, mask, meta = _rows(20)
    path = tmp_path / "ds"
    w = DatasetWriter(path, GRID, "quasarnet")
    w.write_shard(flux[:10], ivar[:10], mask[:10], meta[:10])
    import h5py

    def boom(self, name, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(h5py.Group, "create_dataset", boom)
    with pytest.raises(KeyboardInterrupt):
        w.write_shard(flux[10:], ivar[10:], mask[10:], meta[10:])
    monkeypatch.undo()
    ds = Dataset(path)
    assert len(ds) == 10 and ds.read([9])[0].shape == (1, GRID.npix)
    assert not [f for f in os.listdir(path) if f.endswith(".tmp")]  # the partial shard was removed


def test_not_a_dataset(tmp_path):
    with pytest.raises(RedsiftError, match="not a redsift dataset"):
        Dataset(tmp_path)


def test_torch_dataloader_with_several_workers(tmp_path):
    flux, ivar, mask, meta = _rows(300)
    with DatasetWriter(tmp_path / "ds", GRID, "quasarnet", shard_size=64) as w:
        w.add(flux, ivar, mask, meta)
    ds = Dataset(tmp_path / "ds")
    view = ds.torch(columns=("Z", "CLASS"))
    sampler = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(view), batch_size=32, drop_last=False)
    loader = torch.utils.data.DataLoader(view, sampler=sampler, batch_size=None, num_workers=2,
                                         collate_fn=identity, multiprocessing_context="spawn")
    seen = []
    for batch in loader:
        rows = batch["row"].numpy()
        np.testing.assert_array_equal(batch["flux"].numpy(), flux[rows])
        np.testing.assert_allclose(batch["Z"].numpy(), meta["Z"][rows])
        assert batch["CLASS"] == list(meta["CLASS"][rows])
        seen.extend(rows.tolist())
    assert sorted(seen) == list(range(300))
    item = view[5]
    assert item["flux"].shape == (GRID.npix,) and int(item["row"]) == 5


def test_splits_are_deterministic_disjoint_and_by_object():
    n = 5000
    meta = Table({"TARGETID": np.arange(n, dtype=np.int64), "THING_ID": (np.arange(n) // 2 + 1).astype(np.int64)})
    s1 = split(meta, seed=7)
    s2 = split(meta[::-1], seed=7)  # row order does not matter
    assert sorted(meta["TARGETID"][s1["test"]]) == sorted(meta[::-1]["TARGETID"][s2["test"]])
    allidx = np.concatenate(list(s1.values()))
    assert np.array_equal(np.sort(allidx), np.arange(n))
    ids = object_ids(meta)
    sides = [set(ids[v]) for v in s1.values()]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    frac = len(s1["train"]) / n
    assert 0.77 < frac < 0.83
    assert split(meta, seed=8)["test"].tolist() != s1["test"].tolist()


def test_kfold_and_random_splits():
    meta = Table({"TARGETID": np.arange(1000, dtype=np.int64)})
    folds = kfold(meta, k=5)
    tests = np.concatenate([t for _, t in folds])
    assert np.array_equal(np.sort(tests), np.arange(1000))
    for train, test in folds:
        assert not set(train) & set(test)
    rs = random_splits(meta, n_splits=10, test_fraction=0.2)
    assert len(rs) == 10 and all(0.15 < len(t) / 1000 < 0.25 for _, t in rs)
    assert len({tuple(t[:5]) for _, t in rs}) > 1


def test_repeated_real_object_stays_on_one_side(real_dir):
    from redsift.io.catalogs import read_catalog

    cat = read_catalog(real_dir / "catalogs" / "spAll-plate3655.fits")
    for seed in range(20):
        for train, test in kfold(cat, k=5, seed=seed):
            tr = set(np.asarray(cat["THING_ID"])[train])
            assert 427878017 not in tr or 427878017 not in set(np.asarray(cat["THING_ID"])[test])


def test_torch_dataloader_getitems_path(tmp_path):
    flux, ivar, mask, meta = _rows(100)
    with DatasetWriter(tmp_path / "ds", GRID, "quasarnet", shard_size=30) as w:
        w.add(flux, ivar, mask, meta)
    view = Dataset(tmp_path / "ds").torch(indices=np.arange(10, 90))
    loader = torch.utils.data.DataLoader(view, batch_size=16, shuffle=True, collate_fn=identity,
                                         generator=torch.Generator().manual_seed(0))
    rows = []
    for batch in loader:
        np.testing.assert_array_equal(batch["flux"].numpy(), flux[batch["row"].numpy()])
        rows.extend(batch["row"].tolist())
    assert sorted(rows) == list(range(10, 90))
