"""The dataset store: sharded HDF5 files of spectra on one stated grid, plus a JSON index.

Layout of a dataset directory::

    DATASET/
      index.json          grid, binning, shards (file, rows, key), columns, provenance
      shard-00000.h5      flux, ivar (float32), mask (uint8): (rows, npix), chunked by rows;
      shard-00001.h5      group "meta": one dataset per metadata column
      ...

Every shard is written under a temporary name and renamed, and the index is
rewritten atomically under a lock after each shard, so a dataset is always
readable and appending (by a later run, or by a resumed one) never corrupts
it. Shards may carry a ``key`` (e.g. an ingestion chunk) so that an
interrupted run can skip what it has already written.

Reading is lazy: :class:`Dataset` loads only the index and, on request, the
metadata; spectra are read from the shards by row. HDF5 files are opened per
process on first use, so PyTorch DataLoader workers (fork or spawn) each get
their own handles. A 500,000-spectrum set on the QuasarNET grid is ~2.0 GB on
disk and never needs to be in memory at once.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sys

import numpy as np
from astropy.table import Table, vstack

from .._version import __version__
from ..errors import RedsiftError
from ..grid import LogGrid

__all__ = ["Dataset", "DatasetWriter", "INDEX_NAME"]

INDEX_NAME = "index.json"
FORMAT_NAME = "redsift-dataset"
FORMAT_VERSION = 1


@contextlib.contextmanager
def _locked(directory: str):
    """An exclusive advisory lock on the dataset directory (POSIX)."""
    path = os.path.join(directory, ".lock")
    with open(path, "a") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - non-POSIX
            pass
        yield


def _read_index(path: str) -> dict:
    ipath = os.path.join(path, INDEX_NAME)
    if not os.path.exists(ipath):
        raise RedsiftError(f"{path}: not a redsift dataset (no {INDEX_NAME})")
    try:
        with open(ipath) as f:
            index = json.load(f)
    except (OSError, ValueError) as exc:
        raise RedsiftError(f"{ipath}: unreadable dataset index ({exc})") from None
    if index.get("format") != FORMAT_NAME:
        raise RedsiftError(f"{ipath}: not a redsift dataset index")
    return index


def _write_index(path: str, index: dict):
    tmp = os.path.join(path, f".{INDEX_NAME}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(index, f, indent=1)
    os.replace(tmp, os.path.join(path, INDEX_NAME))


def _encode(col) -> np.ndarray:
    arr = np.asarray(col)
    if arr.dtype.kind == "U":
        return np.char.encode(arr, "utf-8") if arr.size else arr.astype("S1")
    if arr.dtype.kind == "O":
        return np.char.encode(arr.astype(str), "utf-8")
    return arr


def _decode(arr: np.ndarray) -> np.ndarray:
    return np.char.decode(arr, "utf-8") if arr.dtype.kind == "S" else arr


class DatasetWriter:
    """Write (or append to) a dataset.

    Parameters
    ----------
    path : str
        Dataset directory (created if needed).
    grid : LogGrid
        The grid every spectrum is on.
    binning : str
        How spectra were put on the grid (``"quasarnet"``, ``"flux_conserving"``, ``"native"``).
    provenance : dict
        How the set was made (command line, seed, ...); redsift's version and the date are added.
    mode : {"w", "a"}
        ``"w"`` refuses an existing dataset; ``"a"`` appends to one (grid must match).
    shard_size : int
        Rows per shard for :meth:`add` (``write_shard`` writes exactly what it is given).
    """

    def __init__(self, path, grid: LogGrid, binning: str, provenance: dict | None = None, mode: str = "w",
                 shard_size: int = 100_000):
        self.path = os.fspath(path)
        self.grid = grid
        self.shard_size = int(shard_size)
        self._buf: list[tuple] = []
        self._nbuf = 0
        exists = os.path.exists(os.path.join(self.path, INDEX_NAME))
        if exists and mode == "w":
            raise FileExistsError(f"{self.path}: dataset exists (append with mode='a' / --append)")
        os.makedirs(self.path, exist_ok=True)
        if exists:
            index = _read_index(self.path)
            if LogGrid.from_dict(index["grid"]) != grid:
                raise RedsiftError(f"{self.path}: grid {grid.describe()} differs from the dataset's "
                                   f"{LogGrid.from_dict(index['grid']).describe()}")
            if index["binning"] != binning:
                raise RedsiftError(f"{self.path}: binning {binning!r} differs from the dataset's {index['binning']!r}")
        else:
            prov = dict(provenance or {})
            prov.setdefault("redsift_version", __version__)
            prov.setdefault("created", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
            prov.setdefault("command", " ".join(sys.argv))
            with _locked(self.path):
                _write_index(self.path, {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                                         "grid": grid.to_dict(), "binning": binning, "shards": [],
                                         "columns": {}, "provenance": prov, "appends": []})
        if exists and provenance:
            with _locked(self.path):
                index = _read_index(self.path)
                index.setdefault("appends", []).append(dict(provenance))
                _write_index(self.path, index)

    def done_keys(self) -> set:
        """Keys of the shards already in the dataset (for resuming)."""
        return {s.get("key") for s in _read_index(self.path)["shards"] if s.get("key") is not None}

    def add(self, flux, ivar, mask, meta: Table):
        """Buffer rows; a shard is written each time ``shard_size`` rows are buffered."""
        self._buf.append((np.asarray(flux, np.float32), np.asarray(ivar, np.float32),
                          np.asarray(mask, np.uint8), Table(meta)))
        self._nbuf += len(meta)
        while self._nbuf >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, n: int | None = None):
        if not self._buf:
            return
        flux = np.concatenate([b[0] for b in self._buf])
        ivar = np.concatenate([b[1] for b in self._buf])
        mask = np.concatenate([b[2] for b in self._buf])
        meta = vstack([b[3] for b in self._buf], metadata_conflicts="silent")
        n = len(meta) if n is None else n
        self.write_shard(flux[:n], ivar[:n], mask[:n], meta[:n])
        rest = len(meta) - n
        self._buf = [(flux[n:], ivar[n:], mask[n:], meta[n:])] if rest else []
        self._nbuf = rest

    def write_shard(self, flux, ivar, mask, meta: Table, key=None) -> str:
        """Write one shard now (atomically) and register it in the index; returns its file name."""
        flux = np.asarray(flux, np.float32)
        n = len(meta)
        if flux.shape != (n, self.grid.npix):
            raise ValueError(f"flux {flux.shape} does not match {n} rows on a {self.grid.npix}-pixel grid")
        import h5py

        with _locked(self.path):
            index = _read_index(self.path)
            number = 1 + max([int(s["file"][6:11]) for s in index["shards"]], default=-1)
            name = f"shard-{number:05d}.h5"
            tmp = os.path.join(self.path, f".{name}.tmp")
            chunks = (max(1, min(256, n)), self.grid.npix)
            try:
                with h5py.File(tmp, "w") as f:
                    f.create_dataset("flux", data=flux, chunks=chunks)
                    f.create_dataset("ivar", data=np.asarray(ivar, np.float32), chunks=chunks)
                    f.create_dataset("mask", data=np.asarray(mask, np.uint8), chunks=chunks)
                    g = f.create_group("meta")
                    for col in meta.colnames:
                        g.create_dataset(col, data=_encode(meta[col]))
                    f.attrs["rows"] = n
                os.replace(tmp, os.path.join(self.path, name))
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            index["shards"].append({"file": name, "rows": n, "key": key})
            for col in meta.colnames:
                index["columns"].setdefault(col, str(np.asarray(meta[col]).dtype))
            _write_index(self.path, index)
        return name

    def close(self):
        self._flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()


class Dataset:
    """A dataset read lazily (see the module docstring).

    Examples
    --------
    >>> ds = Dataset("train.h5")                           # doctest: +SKIP
    >>> flux, ivar, mask = ds.read([0, 10, 5])             # doctest: +SKIP
    >>> loader = torch.utils.data.DataLoader(ds.torch(), batch_size=256, num_workers=2)  # doctest: +SKIP
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.index = _read_index(self.path)
        self.grid = LogGrid.from_dict(self.index["grid"])
        self.binning = self.index["binning"]
        self.shards = [s["file"] for s in self.index["shards"]]
        rows = np.array([s["rows"] for s in self.index["shards"]], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(rows)])
        self._meta = None
        self._handles: dict = {}
        self._pid = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        return f"<Dataset {self.path}: {len(self)} spectra in {len(self.shards)} shards on {self.grid.describe()}>"

    @property
    def provenance(self) -> dict:
        return self.index.get("provenance", {})

    @property
    def meta(self) -> Table:
        """All metadata (small: read once, kept)."""
        if self._meta is None:
            import h5py

            parts = []
            for name in self.shards:
                with h5py.File(os.path.join(self.path, name), "r") as f:
                    g = f["meta"]
                    parts.append(Table({c: _decode(g[c][()]) for c in g.keys()}))
            cols = list(self.index.get("columns", {}))
            self._meta = vstack(parts, metadata_conflicts="silent") if parts else Table()
            if cols and parts:
                self._meta = self._meta[[c for c in cols if c in self._meta.colnames]]
        return self._meta

    def meta_range(self, start: int, stop: int) -> Table:
        """The metadata of rows ``start:stop`` (the rows of :attr:`meta`), read from the shards holding them
        unless the whole table is already in memory: a pass over a survey-sized set in batches never holds
        all of its metadata (100,000 simulated spectra: 34 MB)."""
        start = max(0, int(start))
        stop = max(start, min(len(self), int(stop)))
        if self._meta is not None or not self.shards:
            return self.meta[start:stop]
        parts = []
        first = min(int(np.searchsorted(self.offsets, start, side="right")) - 1, len(self.shards) - 1)
        for k in range(first, len(self.shards)):
            a, b = int(self.offsets[k]), int(self.offsets[k + 1])
            if a >= stop and parts:
                break
            g = self._file(k)["meta"]
            lo, hi = max(start, a) - a, min(stop, b) - a
            parts.append(Table({c: _decode(g[c][lo:hi]) for c in g.keys()}))
        t = vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else parts[0]
        cols = list(self.index.get("columns", {}))
        return t[[c for c in cols if c in t.colnames]] if cols else t

    def meta_column(self, name: str) -> np.ndarray:
        """One metadata column of every row, read shard by shard with one file open at a time (a pass over every
        shard through :meth:`meta_range` keeps each shard's handle and its HDF5 caches, ~1 MB a shard, open)."""
        if self._meta is not None:
            return np.asarray(self._meta[name])
        import h5py

        parts = []
        for shard in self.shards:
            with h5py.File(os.path.join(self.path, shard), "r") as f:
                parts.append(_decode(f["meta"][name][()]))
        return np.concatenate(parts) if parts else np.zeros(0)

    # --- per-process HDF5 handles ------------------------------------------
    def _file(self, k: int):
        import h5py

        pid = os.getpid()
        if self._pid != pid:  # first use in this process (e.g. a DataLoader worker)
            self._handles = {}
            self._pid = pid
        if k not in self._handles:
            self._handles[k] = h5py.File(os.path.join(self.path, self.shards[k]), "r")
        return self._handles[k]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"], state["_pid"] = {}, None
        state["_arrays"] = None  # never shipped to worker processes: they read the shards
        return state

    def close(self, before: int | None = None):
        """Close the shards' HDF5 handles; with ``before``, only those of shards whose rows all lie before that
        row (a pass in row order: each open file holds HDF5's caches, ~1 MB, so a 100-shard set kept ~100 MB
        open)."""
        for k in list(self._handles):
            if before is None or self.offsets[k + 1] <= before:
                self._handles.pop(k).close()

    @property
    def nbytes(self) -> int:
        """Bytes the spectra take in memory (flux and ivar float32, mask bool)."""
        return len(self) * self.grid.npix * 9

    def load(self) -> "Dataset":
        """Read every shard once, sequentially, and serve :meth:`read` from memory from then on.

        Random rows from HDF5 shards chunked by rows cost a whole chunk each: a 256-row batch drawn from a
        120-shard, 1,844-pixel set takes a median 0.62 s from the shards (page cache warm) and 0.8 ms from
        memory (benchmarks/bench_train_read.py, docs/benchmarks.md); training sets that fit are loaded first."""
        if getattr(self, "_arrays", None) is None:
            flux = np.empty((len(self), self.grid.npix), np.float32)
            ivar = np.empty_like(flux)
            mask = np.empty(flux.shape, bool)
            for k in range(len(self.shards)):
                f = self._file(k)
                a, b = self.offsets[k], self.offsets[k + 1]
                flux[a:b], ivar[a:b], mask[a:b] = f["flux"][()], f["ivar"][()], f["mask"][()].astype(bool)
            self._arrays = (flux, ivar, mask)
        return self

    def read(self, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """flux, ivar (float32) and mask (bool) of the given rows, in the order given."""
        idx = np.atleast_1d(np.asarray(indices, np.int64))
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for a dataset of {len(self)} spectra")
        if getattr(self, "_arrays", None) is not None:
            return tuple(a[idx] for a in self._arrays)
        out = [np.empty((idx.size, self.grid.npix), np.float32) for _ in range(2)]
        mask = np.empty((idx.size, self.grid.npix), bool)
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        for k in np.unique(shard):
            sel = np.flatnonzero(shard == k)
            local = idx[sel] - self.offsets[k]
            order = np.argsort(local, kind="stable")
            uniq, inverse = np.unique(local[order], return_inverse=True)
            f = self._file(int(k))
            for arr, name in ((out[0], "flux"), (out[1], "ivar")):
                arr[sel[order]] = f[name][uniq][inverse]
            mask[sel[order]] = f["mask"][uniq][inverse].astype(bool)
        return out[0], out[1], mask

    def torch(self, indices=None, columns=()):
        """A ``torch.utils.data.Dataset`` view (batched fetching via ``__getitems__``).

        Items are dicts with ``flux``, ``ivar``, ``mask`` and the requested metadata ``columns``.
        """
        from .torchview import TorchView

        return TorchView(self, np.arange(len(self)) if indices is None else np.asarray(indices), columns)
