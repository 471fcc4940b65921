"""``redsift ingest``: join a labelled catalog to spectra files and write a dataset.

Spectra are found under a directory laid out as on the survey archives (any
depth): SDSS ``PLATE/spec-PLATE-MJD-FIBER.fits`` (or flat), BOSS
``spPlate-PLATE-MJD.fits`` (fiber ``F`` is row ``F-1``), DESI
``coadd-*.fits``/``spectra-*.fits`` (matched by ``TARGETID`` in their
FIBERMAP). Every catalog row ends in exactly one of: written to the dataset,
or listed in ``rejected.csv`` with the reason (no spectrum file, unreadable
spectrum, duplicated TARGETID). ``ingest_report.json`` has the counts.

Work is split into chunks of files processed in parallel (``jobs`` local processes, or a Dask cluster:
``workers``/``scheduler``); each
chunk becomes one shard keyed by its number, so an interrupted run resumes
where it stopped (``resume=True``) and produces the same dataset.
"""

from __future__ import annotations

import json
import logging
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from ..errors import RedsiftError, SpectrumFileError
from ..grid import LogGrid
from ..io.catalogs import read_catalog
from ..io.registry import read_file
from ..memory import release_freed
from ..preprocess import coverage_zwarn, spectra_snr, to_grid
from ..zwarning import ZWarningMask
from .store import DatasetWriter

__all__ = ["ingest", "index_spectra", "spectrum_index", "SpectrumIndex", "IngestReport", "LABEL_COLUMNS"]

log = logging.getLogger(__name__)

#: Catalog rows per chunk (one shard) by default: one chunk is the working set (a 1,000-fibre spPlate)
ROWS_PER_CHUNK = 1000

LABEL_COLUMNS = ("CLASS", "SUBCLASS", "Z", "Z_CONF", "BAL_FLAG", "BI_CIV", "LABEL_SOURCE")
_SPEC = re.compile(r"^spec-(\d+)-(\d+)-(\d+)\.fits(\.gz)?$")
_SPPLATE = re.compile(r"^spPlate-(\d+)-(\d+)\.fits(\.gz)?$")
_DESI = re.compile(r"^(coadd|spectra)-.*\.fits(\.gz)?$")


@dataclass
class IngestReport:
    catalog_rows: int = 0
    written: int = 0
    missing_file: int = 0
    unreadable: int = 0
    duplicates: int = 0
    unknown_class: int = 0
    nodata: int = 0
    skipped_chunks: int = 0
    rejected: list = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.catalog_rows} catalog rows: {self.written} written ({self.nodata} with no valid data, "
                f"flagged NODATA), {self.missing_file} without a spectrum file, {self.unreadable} unreadable, "
                f"{self.duplicates} duplicated TARGETID, {self.unknown_class} of unknown class (kept as UNKNOWN)"
                + (f"; {self.skipped_chunks} chunk(s) already done (resumed)" if self.skipped_chunks else ""))


def index_spectra(directory) -> dict:
    """Map spectrum keys to (path, row) for every spectrum file under ``directory``.

    Keys: ``("sdss", plate, mjd, fiber)`` and ``("desi", targetid)``; where two files hold one key the first
    found wins (spec files over plate files). A dict view of :func:`spectrum_index` (ingest joins on the arrays).
    """
    idx = spectrum_index(directory)
    out: dict = {}
    for kind, sel in ((0, idx.kind == 0), (1, idx.kind == 1)):
        for v, f, r in zip(idx.value[sel].tolist(), idx.file[sel].tolist(), idx.row[sel].tolist()):
            key = ("sdss", v >> 40, (v >> 20) & 0xFFFFF, v & 0xFFFFF) if kind == 0 else ("desi", v)
            out[key] = (idx.paths[f], r)
    return out


@dataclass
class SpectrumIndex:
    """Every spectrum under a directory as arrays (a few tens of bytes a spectrum, not a Python tuple each):
    ``kind`` 0 for SDSS keys (``value`` = plate << 40 | mjd << 20 | fiber), 1 for DESI (``value`` = TARGETID);
    ``file`` (into ``paths``, sorted by path) and ``row`` in it. One entry per key, sorted by (kind, value)."""

    paths: list
    kind: np.ndarray
    value: np.ndarray
    file: np.ndarray
    row: np.ndarray

    def lookup(self, kind, value) -> tuple[np.ndarray, np.ndarray]:
        """``(file, row)`` of each key (``file`` -1 where no spectrum has it)."""
        kind, value = np.asarray(kind, np.int8), np.asarray(value, np.int64)
        f = np.full(len(value), -1, np.int64)
        r = np.full(len(value), -1, np.int64)
        for k in (0, 1):
            q = np.flatnonzero(kind == k)
            lo, hi = np.searchsorted(self.kind, [k, k + 1])
            vals = self.value[lo:hi]
            if not len(q) or not len(vals):
                continue
            at = np.clip(np.searchsorted(vals, value[q]), 0, len(vals) - 1)
            hit = vals[at] == value[q]
            f[q[hit]] = self.file[lo:hi][at[hit]]
            r[q[hit]] = self.row[lo:hi][at[hit]]
        return f, r


def _sdss_value(plate, mjd, fiber) -> np.ndarray:
    return (np.asarray(plate, np.int64) << 40) | (np.asarray(mjd, np.int64) << 20) | np.asarray(fiber, np.int64)


def spectrum_index(directory) -> SpectrumIndex:
    """Every spectrum file under ``directory`` (SDSS spec, BOSS spPlate, DESI coadd/spectra), as arrays."""
    from astropy.io import fits

    parts = []  # (kind, values, path, rows), in the order found: the first entry of a key wins
    plates = []
    for root, _, files in os.walk(directory):
        for name in sorted(files):
            path = os.path.join(root, name)
            m = _SPEC.match(name)
            if m:
                parts.append((0, _sdss_value([int(m[1])], [int(m[2])], [int(m[3])]), path, np.zeros(1, np.int64)))
                continue
            m = _SPPLATE.match(name)
            if m:
                plates.append((path, int(m[1]), int(m[2])))
                continue
            if _DESI.match(name):
                try:
                    with fits.open(path, memmap=False) as h:
                        tids = np.asarray(h["FIBERMAP"].data["TARGETID"], np.int64)
                except Exception as exc:
                    log.warning("%s: cannot read FIBERMAP (%s); skipped", path, exc)
                    continue
                parts.append((1, tids, path, np.arange(len(tids), dtype=np.int64)))
    for path, plate, mjd in plates:  # spec files take precedence over the plate file
        try:
            with fits.open(path, memmap=False) as h:
                nfiber = int(h[0].header["NAXIS2"])
                plug = h[5].data if len(h) > 5 else None
                names = [c.upper() for c in plug.columns.names] if plug is not None else []
                fibers = (np.asarray(plug[plug.columns.names[names.index("FIBERID")]])
                          if "FIBERID" in names else np.arange(1, nfiber + 1))
        except Exception as exc:
            log.warning("%s: cannot read header or plug map (%s); skipped", path, exc)
            continue
        parts.append((0, _sdss_value(np.full(len(fibers), plate), np.full(len(fibers), mjd), fibers), path,
                      np.arange(len(fibers), dtype=np.int64)))
    paths = sorted({p for _, _, p, _ in parts})
    fid = {p: i for i, p in enumerate(paths)}
    if not parts:
        e = np.zeros(0, np.int64)
        return SpectrumIndex(paths, e.astype(np.int8), e, e, e)
    kind = np.concatenate([np.full(len(v), k, np.int8) for k, v, _, _ in parts])
    value = np.concatenate([v for _, v, _, _ in parts])
    file = np.concatenate([np.full(len(v), fid[p], np.int64) for _, v, p, _ in parts])
    row = np.concatenate([r for _, _, _, r in parts])
    order = np.lexsort((np.arange(len(value)), value, kind))  # stable: the first found of a key comes first
    kind, value, file, row = kind[order], value[order], file[order], row[order]
    first = np.ones(len(value), bool)
    first[1:] = (kind[1:] != kind[:-1]) | (value[1:] != value[:-1])
    return SpectrumIndex(paths, kind[first], value[first], file[first].astype(np.int32), row[first].astype(np.int32))


def _keys(cat: Table, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The spectrum key of each catalog row in ``rows`` as :class:`SpectrumIndex` arrays ``(kind, value)``: SDSS
    (plate, mjd, fiber) where the row has a plate, else DESI's TARGETID; read from whole columns (a catalog of a
    million rows is not walked row object by row object)."""
    tid = np.asarray(cat["TARGETID"], np.int64)[rows]
    if "PLATE" not in cat.colnames:
        return np.ones(len(rows), np.int8), tid
    plate = np.asarray(cat["PLATE"], np.int64)[rows]
    mjd = np.asarray(cat["MJD"], np.int64)[rows]
    fiber = np.asarray(cat["FIBERID"], np.int64)[rows]
    sdss = plate > 0
    # a key the packing cannot hold (a fibre of -1, an MJD of 2^20) matches nothing (kind 2), as its tuple did
    fits = (plate < 2**23) & (mjd >= 0) & (mjd < 2**20) & (fiber >= 0) & (fiber < 2**20)
    value = np.where(sdss & fits, _sdss_value(np.where(sdss & fits, plate, 0), np.where(fits, mjd, 0),
                                              np.where(fits, fiber, 0)), tid)
    return np.where(sdss, np.where(fits, 0, 2), 1).astype(np.int8), value


class _Labels:
    """The catalog's label columns held compactly while the chunks run (the whole catalog is needed for the join,
    then only the rows' labels): each text column as codes into its distinct values, the others as arrays; a row
    ~0.24 KB -> ~0.09 KB (100,000 rows: ~30 -> ~9 MB; docs/benchmarks.md "Ingest from 1k to 100k spectra").
    :meth:`rows` gives the rows as the catalog's own table would (the same columns, dtypes and values)."""

    def __init__(self, cat: Table, names):
        self.cols = {}
        for name in names:
            a = np.asarray(cat[name])
            if a.dtype.kind in "US":
                values, codes = np.unique(a, return_inverse=True)
                self.cols[name] = (values, codes.astype(np.min_scalar_type(max(len(values) - 1, 0))))
            else:
                self.cols[name] = (None, a)

    def rows(self, idx) -> Table:
        return Table([c[idx] if v is None else v[c[idx]] for v, c in self.cols.values()], names=list(self.cols))


def _process_chunk(args):
    """Read, bin and label the spectra of one chunk (runs in a worker process)."""
    jobs, grid_dict, binning = args
    grid = LogGrid.from_dict(grid_dict)
    fluxes, ivars, masks, metas, failed = [], [], [], [], []
    for path, rows, labels in jobs:
        s = b = None  # (the previous file's arrays released before the next is read)
        try:
            s = read_file(path)
        except SpectrumFileError as exc:
            failed.extend((int(r), exc.cause) for r in labels["ROW"])
            continue
        rows = np.asarray(rows)
        if not (len(rows) == s.nspec and np.array_equal(rows, np.arange(s.nspec))):  # (a whole file: no copy)
            s = s[rows]
        b = to_grid(s, grid, binning)
        flux, ivar = b.flux, b.ivar
        meta = Table(labels, copy=True)
        meta["SURVEY"] = s.meta["SURVEY"]
        meta["SOURCE"] = s.meta["SOURCE"]
        meta["INDEX"] = s.meta["INDEX"]
        meta["SNR"] = spectra_snr(s).astype(np.float32)
        meta["ZWARN"] = np.asarray(s.meta["ZWARN"], np.int64) | coverage_zwarn(ivar)
        fluxes.append(flux)
        ivars.append(ivar)
        masks.append(ivar <= 0)
        metas.append(meta)
    if metas:
        from astropy.table import vstack

        return (np.concatenate(fluxes), np.concatenate(ivars), np.concatenate(masks),
                vstack(metas, metadata_conflicts="silent"), failed)
    return None, None, None, None, failed


def ingest(catalog, spectra_dir, output, grid: LogGrid | None = None, binning: str = "quasarnet",
           jobs: int = 1, rows_per_chunk: int | None = None, resume: bool = False, progress: bool = True,
           command: str = "", workers: int | None = None, scheduler: str | None = None) -> IngestReport:
    """Build a dataset from a catalog and a directory of spectra (see the module docstring).

    ``jobs``: local worker processes; ``workers``/``scheduler``: a Dask cluster instead (a local one of
    ``workers`` processes, or an existing one at ``scheduler``; the spectra must be readable at the same
    paths on every worker). Either way the chunks are written by this process in chunk order, so the
    dataset is the serial one. ``rows_per_chunk``: catalog rows per chunk (about: whole files; default
    :data:`ROWS_PER_CHUNK`); a resumed run takes the size it recorded (a different one is refused: its chunks would
    not be the run's)."""
    grid = grid or LogGrid.quasarnet()
    mode = "a" if resume and os.path.exists(os.path.join(os.fspath(output), "index.json")) else "w"
    if mode == "a":  # the chunks are the run's only if cut the same way
        with open(os.path.join(os.fspath(output), "index.json")) as fh:
            was = json.load(fh).get("provenance", {}).get("rows_per_chunk")
        if was is None and rows_per_chunk is None:
            raise RedsiftError(f"{output}: this run does not record its chunk size (it predates the record); resume "
                               f"it with the --chunk it was started with (the default was 5000 then)")
        if was is not None and rows_per_chunk is not None and int(was) != int(rows_per_chunk):
            raise RedsiftError(f"{output}: this run was cut into chunks of {was} catalog rows; resume it with "
                               f"--chunk {was} (or no --chunk)")
        rows_per_chunk = was if rows_per_chunk is None else rows_per_chunk
    rows_per_chunk = int(rows_per_chunk or ROWS_PER_CHUNK)
    if workers or scheduler:
        from ..predict.distributed import require_dask

        require_dask()  # before the output is touched
        spectra_dir = os.path.abspath(spectra_dir)  # workers elsewhere resolve the same paths
    cat = read_catalog(catalog)
    report = IngestReport(catalog_rows=len(cat))
    report.unknown_class = int(np.sum(cat["CLASS"] == "UNKNOWN"))

    # duplicated TARGETIDs: the first row is kept, the others rejected
    _, first = np.unique(np.asarray(cat["TARGETID"]), return_index=True)
    dup = np.ones(len(cat), bool)
    dup[first] = False
    for r in np.flatnonzero(dup):
        report.rejected.append((int(cat["ROW"][r]), int(cat["TARGETID"][r]), "duplicated TARGETID"))
    report.duplicates = int(dup.sum())

    index = spectrum_index(spectra_dir)
    keep = np.flatnonzero(~dup)
    fid, frow = index.lookup(*_keys(cat, keep))
    for r in keep[fid < 0]:
        report.rejected.append((int(cat["ROW"][r]), int(cat["TARGETID"][r]), "no spectrum file"))
    report.missing_file = int(np.sum(fid < 0))

    # chunks of whole files (files in path order, a file's spectra in row order), as catalog row numbers: a chunk's
    # labels are cut from the catalog when it is handed to a worker, rows first (selecting the label columns per
    # file first copied the whole catalog per file, time and memory growing as spectra x files: 100,000 spectra in
    # 100 spPlates held 514 MB before the first shard, 169 MB without); the join and the plan are arrays (a Python
    # tuple per spectrum held ~0.3 KB each; docs/benchmarks.md "Ingest from 1k to 100k spectra")
    label_cols = ["TARGETID", "THING_ID"] + [c for c in ("PLATE", "MJD", "FIBERID", "RA", "DEC")
                                             if c in cat.colnames] + list(LABEL_COLUMNS) + ["ROW"]
    hit = fid >= 0
    crow, fid, frow = keep[hit], fid[hit], frow[hit]
    order = np.lexsort((crow, frow, fid))
    crow, fid, frow = crow[order], fid[order], frow[order]
    starts = np.flatnonzero(np.r_[True, fid[1:] != fid[:-1]]) if len(fid) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(fid)].astype(np.int64)
    chunks, current, n = [], [], 0
    for a, b in zip(starts.tolist(), ends.tolist()):
        current.append((index.paths[fid[a]], frow[a:b], crow[a:b]))
        n += b - a
        if n >= rows_per_chunk:
            chunks.append(current)
            current, n = [], 0
    if current:
        chunks.append(current)
    del index, fid, frow, crow

    prov = {"command": command or "redsift ingest", "catalog": os.fspath(catalog),
            "catalog_kind": cat.meta.get("CATALOG", ""), "spectra_dir": os.fspath(spectra_dir),
            "binning": binning, "rows_per_chunk": rows_per_chunk}
    labels, tid = _Labels(cat, label_cols), np.asarray(cat["TARGETID"], np.int64)
    del cat
    release_freed()  # (reading the catalog left ~30 MB of freed pages in the heap at 100,000 rows: redsift.memory)
    writer = DatasetWriter(output, grid, binning, prov, mode=mode)
    done = writer.done_keys() if mode == "a" else set()
    todo = [(k, c) for k, c in enumerate(chunks) if f"chunk-{k:06d}" not in done]
    report.skipped_chunks = len(chunks) - len(todo)
    # (lazily: the serial path holds one chunk's labels at a time)
    args = (([(path, rows, labels.rows(crow)) for path, rows, crow in c], grid.to_dict(), binning) for _, c in todo)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="ingest", unit="chunk", disable=not progress)
    pool, close = None, (lambda: None)
    if (workers or scheduler) and todo:
        from ..predict.distributed import dask_map

        results, close = dask_map(_process_chunk, list(args), workers, scheduler)
    else:
        from ..parallel import fork_context

        pool = ProcessPoolExecutor(jobs, mp_context=fork_context()) if jobs > 1 else None
        results = pool.map(_process_chunk, args) if pool else map(_process_chunk, args)
    try:
        for (k, _), (flux, ivar, mask, meta, failed) in zip(todo, results):
            # failures are kept beside the dataset, so that a resumed run still reports them
            with open(os.path.join(os.fspath(output), f".failed-chunk-{k:06d}.json"), "w") as fh:
                json.dump([[row, int(tid[row]), cause] for row, cause in failed], fh)
            if meta is not None:
                writer.write_shard(flux, ivar, mask, meta, key=f"chunk-{k:06d}")
            del flux, ivar, mask, meta, failed
            release_freed()  # (and each chunk its file's arrays)
            bar.update()
    finally:
        bar.close()
        if pool:
            pool.shutdown()
        close()
    for k in range(len(chunks)):
        fpath = os.path.join(os.fspath(output), f".failed-chunk-{k:06d}.json")
        if os.path.exists(fpath):
            with open(fpath) as fh:
                failed = json.load(fh)
            report.rejected.extend((int(r), int(t), f"unreadable spectrum: {c}") for r, t, c in failed)
            report.unreadable += len(failed)
    from .store import Dataset

    ds = Dataset(output)
    report.written = len(ds)
    # (one column, one shard open at a time: every shard's metadata through open handles held ~90 MB at 100 shards)
    report.nodata = int(np.sum(np.asarray(ds.meta_column("ZWARN"), np.int64) & int(ZWarningMask.NODATA) > 0))
    _write_report(output, report)
    return report


def _write_report(output, report: IngestReport):
    rej = Table(rows=report.rejected, names=("ROW", "TARGETID", "REASON"),
                dtype=(np.int64, np.int64, str)) if report.rejected else \
        Table(names=("ROW", "TARGETID", "REASON"), dtype=(np.int64, np.int64, str))
    rej.sort("ROW")
    rej.write(os.path.join(output, "rejected.csv"), format="ascii.csv", overwrite=True)
    counts = {k: v for k, v in report.__dict__.items() if k != "rejected"}
    with open(os.path.join(output, "ingest_report.json"), "w") as f:
        json.dump(counts, f, indent=1)
