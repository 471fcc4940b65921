"""The generic prediction pipeline: sources -> batches -> family -> common columns -> catalog.

Sources are files (any format :func:`redsift.read` knows), directories (the files a reader
recognises; the others are logged and skipped), datasets (``redsift simulate``/``ingest`` output) and
in-memory :class:`~redsift.spectra.Spectra`. Every input spectrum gets exactly one row. Failures are
isolated at every stage:

========  ===================================================================================
read      a file that cannot be read gets one row flagged ``NODATA | BAD_INPUT``, the reason in
          ``ERROR`` (:func:`redsift.io.registry.iter_read`'s placeholder)
grid      a file whose spectra cannot be put on the model grid is retried spectrum by spectrum;
          a spectrum that still fails gets ``NODATA | BAD_INPUT`` and ``ERROR = "grid: ..."``
model     a batch the model fails on is retried row by row; a failing row gets ``NODATA |
          BAD_INPUT`` and ``ERROR = "model: ..."``
catalog   the same for the family's columns (``ERROR = "catalog: ..."``)
========  ===================================================================================

Each file is put on the model grid on its own, so spectra of different native grids, lengths or
layouts never have to be stacked before they share the model's grid; except runs of plain SDSS/BOSS spec
files, stacked per window by the strict reader with each row on its own wavelength array (the same
catalog, bit for bit, at a fraction of the per-file cost: :func:`_read_window`).
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass

import numpy as np

from .. import catalog as contract
from ..errors import RedsiftError, SpectrumFileError, UnknownFormatError, oneline
from ..models.family import Prepared
from ..models.registry import get_family
from ..spectra import Spectra
from ..zwarning import ZWarningMask
from .backend import BATCH_ROWS, infer  # (BATCH_ROWS: spectra per model call, defined beside the runner)

__all__ = ["Source", "resolve_inputs", "predict_catalog", "predict_to_file", "catalog_summary", "parts_summary",
           "predict_spectra", "catalog_provenance",
           "dataset_batches", "EXIT_PARTIAL"]

log = logging.getLogger(__name__)

#: Exit status of ``redsift predict`` when the catalog was written but some input could not be read.
EXIT_PARTIAL = 3

_FAILED = int(ZWarningMask.NODATA | ZWarningMask.BAD_INPUT)

#: Catalog rows :func:`predict_to_file` holds before writing them to a part on disk
SPOOL_ROWS = 16384


@dataclass
class Source:
    """One input: ``kind`` is ``"file"``, ``"dataset"`` or ``"spectra"``; ``listed`` is True for files
    found by listing a directory (those a reader does not recognise are skipped, not turned into rows);
    ``rows`` limits a dataset to a range of its rows."""

    kind: str
    path: str = ""
    spectra: Spectra | None = None
    listed: bool = False
    rows: tuple | None = None  # a dataset's row range [start, stop) (a distributed task's share), None: all


def _is_dataset(path: str) -> bool:
    from ..data.store import INDEX_NAME

    return os.path.isdir(path) and os.path.exists(os.path.join(path, INDEX_NAME))


def resolve_inputs(inputs) -> list[Source]:
    """The sources behind paths, globs, directories, datasets and Spectra, checked before any work.

    Raises
    ------
    RedsiftError
        A named path that does not exist, or a glob that matches nothing (one line naming it).
    """
    if isinstance(inputs, (str, os.PathLike, Spectra)):
        inputs = [inputs]
    out = []
    for item in inputs:
        if isinstance(item, Source):  # already resolved (a distributed task's share)
            out.append(item)
            continue
        if isinstance(item, Spectra):
            out.append(Source("spectra", spectra=item))
            continue
        path = os.fspath(item)
        if not os.path.exists(path):
            if glob.has_magic(path):
                matches = sorted(glob.glob(path))
                if not matches:
                    raise RedsiftError(f"{path}: no file matches this pattern")
                out.extend(resolve_inputs(matches))
                continue
            raise RedsiftError(f"{path}: no such file or directory")
        if _is_dataset(path):
            out.append(Source("dataset", path))
        elif os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if not n.startswith("."))
            files = [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
            out.extend(Source("file", f, listed=True) for f in files)
        else:
            out.append(Source("file", path))
    return out


def catalog_provenance(model, name: str, command: str) -> dict:
    """The header record of a catalog made by ``model``: what made it and its decision rule."""
    from ..io.output import provenance

    fam = get_family(model)
    return provenance(model=f"{fam.name}:{name}", weights_sha256=getattr(model, "weights_sha256", ""),
                      grid=fam.grid(model), command=command, **fam.decisions(model))


class _Builder:
    """Accumulates prepared rows, runs the model in batches and keeps the catalog columns."""

    def __init__(self, model, batch_rows: int, backend: str, spool: str | None = None, spool_rows: int = 0):
        self.model, self.fam = model, get_family(model)
        self.batch_rows, self.backend = batch_rows, backend
        self.schema = contract.schema(self.fam, model)
        # in input order: (ids, prepared, errors) to run, or a finished dict of columns (failed rows)
        self.pending: list = []
        self.npending = 0
        self.parts: list[dict] = []
        # with a spool directory the finished rows go to FITS parts there, spool_rows at a time, counted as they go
        self.spool, self.spool_rows, self.spooled, self.summary = spool, spool_rows, [], None

    def _failed(self, ids: dict, zwarn, errors) -> dict:
        """Columns of rows that could not be measured: ids, ZWARN and the reason, sentinels elsewhere."""
        cols = contract.empty_columns(self.schema, len(zwarn))
        cols.update(ids)
        cols["ZWARN"] = np.asarray(zwarn, np.int64) | _FAILED
        cols["ERROR"] = np.asarray(errors, dtype=str)
        return cols

    def add_failed(self, ids: dict, zwarn, errors):
        self.pending.append(self._failed(ids, zwarn, errors))

    def add(self, ids: dict, prepared: Prepared, errors):
        self.pending.append((ids, prepared, np.asarray(errors, dtype=str)))
        self.npending += prepared.nrows
        if self.npending >= self.batch_rows:
            self.flush()

    def flush(self):
        """Run the model once on every pending row and emit the parts in input order."""
        todo = [p for p in self.pending if isinstance(p, tuple)]
        done = []
        if todo:
            ids = {k: np.concatenate([p[0][k] for p in todo]) for k in todo[0][0]}
            prepared = Prepared.concatenate([p[1] for p in todo])
            errors = np.concatenate([p[2] for p in todo])
            done = self._run(ids, prepared, errors)
        out = _split(done, [p[1].nrows for p in todo])
        for p in self.pending:
            self.parts.append(p if isinstance(p, dict) else next(out))
        self.pending, self.npending = [], 0
        if self.spool and sum(len(p["ZWARN"]) for p in self.parts) >= self.spool_rows:
            self._spill()

    def _spill(self):
        from ..io.output import write_catalog

        path = os.path.join(self.spool, f"part-{len(self.spooled):06d}.fits")
        table = self._table()
        write_catalog(table, path, overwrite=True)
        self.summary = catalog_summary(table["ZWARN"], table["SPECTYPE"], self.summary)
        self.spooled.append(path)
        self.parts = []

    def _run(self, ids, prepared, errors) -> list[dict]:
        """Columns of the rows, in order, as a list of parts (one, unless rows had to be run alone)."""
        stage = "model"
        try:
            raw = infer(self.model, prepared["X"], backend=self.backend)
            stage = "catalog"
            cols, zwarn = self.fam.columns(self.model, raw, prepared)
        except Exception as exc:  # noqa: BLE001 - isolate the failure: retry row by row
            if prepared.nrows == 1:
                log.warning("%s row %s: %s failed: %s", ids["SOURCE"][0], ids["INDEX"][0], stage, oneline(exc))
                return [self._failed(ids, prepared["zwarn"], [f"{stage}: {oneline(exc)}"])]
            out = []
            for i in range(prepared.nrows):
                out += self._run({k: v[i:i + 1] for k, v in ids.items()}, prepared.take(slice(i, i + 1)),
                                 errors[i:i + 1])
            return out
        cols = dict(cols)
        cols.update(ids)
        cols["ZWARN"] = zwarn
        cols["ERROR"] = errors
        return [cols]

    def finish(self, meta: dict | None = None):
        """The catalog (a Table), or with a spool the paths of its parts in row order."""
        self.flush()
        if self.spool and self.parts:
            self._spill()
        if not self.parts and not self.spooled:
            raise RedsiftError("no input spectra")
        return list(self.spooled) if self.spool else self._table(meta)

    def _table(self, meta: dict | None = None):
        names = [n for n, _ in self.schema]
        merged = {}
        for name in names:
            vals = [p[name] for p in self.parts if name in p]
            merged[name] = np.concatenate(vals) if len(vals) == len(self.parts) else None
        merged = {k: v for k, v in merged.items() if v is not None}
        return contract.finish(merged, self.schema, meta)


def _split(parts: list[dict], counts: list[int]):
    """Yield the columns of ``parts`` (rows in order) cut into pieces of ``counts`` rows."""
    if not counts:
        return
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    start = 0
    for n in counts:
        yield {k: v[start:start + n] for k, v in merged.items()}
        start += n


def _prepare(builder, spectra: Spectra):
    """Prepare one file's spectra; on failure, spectrum by spectrum (the grid stage's isolation)."""
    # the few columns needed, without building the metadata table where a reader handed columns over
    ids = contract.id_columns(spectra.columns)
    errors = np.asarray(spectra.column("ERROR")).astype(str) if spectra.has_column("ERROR") else np.full(len(spectra), "")
    zwarn = np.asarray(spectra.column("ZWARN"), np.int64)
    unreadable = (zwarn & int(ZWarningMask.BAD_INPUT)) > 0
    if unreadable.all():
        builder.add_failed(ids, zwarn, errors)
        return
    try:
        builder.add(ids, builder.fam.prepare(builder.model, spectra), errors)
        return
    except Exception as exc:  # noqa: BLE001
        if len(spectra) == 1:
            src = ids["SOURCE"][0]
            log.warning("%s: cannot put the spectrum on the model grid: %s", src, oneline(exc))
            builder.add_failed(ids, zwarn, [f"grid: {oneline(exc)}"])
            return
    for i in range(len(spectra)):
        _prepare(builder, spectra[i])


def _read(source: Source):
    """The spectra of a file source, a placeholder row when it cannot be read, None to skip it."""
    from ..io.registry import read_file

    try:
        return read_file(source.path)
    except UnknownFormatError as exc:
        if source.listed:
            log.info("%s: skipped (%s)", source.path, exc.cause)
            return None
        log.warning("%s", exc)
        return Spectra.placeholder(source.path, exc.cause)
    except SpectrumFileError as exc:
        log.warning("%s", exc)
        return Spectra.placeholder(source.path, exc.cause)
    except Exception as exc:  # noqa: BLE001 - no input may abort a batch
        log.warning("%s: %s", source.path, oneline(exc))
        return Spectra.placeholder(source.path, f"cannot read ({oneline(exc)})")


def dataset_batches(model, ds, chunk: int = 8192, full: bool = False, rows: tuple | None = None):
    """Yield ``(meta, prepared)`` for consecutive rows of dataset ``ds`` (already on the model grid):
    the one dataset-to-model path of predict and release. ``full`` asks the family for every auxiliary
    quantity (the release needs them); ``rows = (start, stop)`` takes only those rows."""
    fam = get_family(model)
    grid = fam.grid(model)
    same = ds.grid == grid
    if not same and ds.grid.dloglam > grid.dloglam + 1e-12:
        raise RedsiftError(f"{ds.path}: dataset grid ({ds.grid.describe()}) is coarser than the model's "
                           f"({grid.describe()}): store the set on the model's grid or a finer one")
    first, last = (0, len(ds)) if rows is None else (max(0, rows[0]), min(len(ds), rows[1]))
    for s in range(first, last, chunk):
        idx = np.arange(s, min(s + chunk, last))
        flux, ivar, mask = ds.read(idx)
        m = ds.meta_range(s, s + len(idx))  # (a batch's metadata at a time)
        ds.close(before=s)  # shards already passed
        zwarn = np.asarray(m["ZWARN"], np.int64) if "ZWARN" in m.colnames else np.zeros(len(m), np.int64)
        if same:
            yield m, fam.prepare_gridded(model, flux, ivar, zwarn, full=full, meta=m)
        else:  # a finer grid (e.g. BOSS pixels): the rows are spectra, gridded as a file's would be
            from ..spectra import Spectra

            m = m.copy()
            m["ZWARN"] = zwarn
            yield m, fam.prepare(model, Spectra(ds.grid.wave, flux, ivar, mask, m))


def _dataset(builder, path: str, chunk: int, input_meta, rows=None):
    from ..data.store import Dataset

    for m, prepared in dataset_batches(builder.model, Dataset(path), chunk, rows=rows):
        if "SOURCE" not in m.colnames:
            m["SOURCE"] = [path] * len(m)
        if input_meta is not None:
            input_meta.append(m)
        builder.add(contract.id_columns(m), prepared, np.full(len(m), ""))


_MALLOPT = []


def reuse_freed_memory() -> bool:
    """Ask glibc's allocator (``mallopt``) to serve arrays of up to 32 MB from the process's heap and to keep
    up to 512 MB of freed heap, once per process: a run over files of many spectra allocates and frees arrays
    of the same sizes per file, and by default each one above the (dynamic) mmap threshold is a fresh
    mapping whose pages the kernel zero-fills on first touch (a 500-spectrum DESI coadd's strict read: 33 ->
    22 ms). Returns whether it was applied (not on other platforms or C libraries, nor with
    ``REDSIFT_NO_MALLOPT=1``); memory stays bounded by the run's peak."""
    if _MALLOPT:
        return _MALLOPT[0]
    from ..memory import libc

    lib = None if os.environ.get("REDSIFT_NO_MALLOPT") else libc()  # (None: musl and others, no mallopt)
    # M_MMAP_THRESHOLD (-3): at most 32 MB on 64-bit glibc; M_TRIM_THRESHOLD (-1)
    ok = lib is not None and bool(lib.mallopt(-3, 32 * 2**20)) and bool(lib.mallopt(-1, 512 * 2**20))
    _MALLOPT.append(ok)
    return ok


def predict_catalog(model, inputs, batch_rows: int = BATCH_ROWS, progress: bool = True, backend: str = "auto",
                    meta: dict | None = None, input_meta: list | None = None, jobs: int = 1):
    """The catalog of ``model`` for files, directories, globs, datasets and/or Spectra: one row per spectrum.

    Parameters
    ----------
    model
        A loaded model (:func:`redsift.load_model`).
    inputs
        A path, a Spectra batch, or a list of them (see :func:`resolve_inputs`).
    batch_rows : int
        Spectra per model call.
    backend : {"auto", "torch", "onnx"}
        See :func:`redsift.predict.backend.infer`.
    meta : dict, optional
        The returned table's ``meta`` (provenance).
    input_meta : list, optional
        When given, the metadata table of every input (file, batch of spec files, placeholder or dataset
        chunk) is appended to it, in catalog row order (e.g. to write the inputs' FIBERMAP beside a
        Redrock-format file).
    jobs : int
        Reader processes: with ``jobs > 1`` files are read and put on the model's grid in that many
        forked processes while this one runs the model on what they have read (pieces of ``PIECE`` files,
        at most ``2 * jobs`` of them queued or waiting, keep memory bounded; the catalog is the same, row
        for row).

    Returns
    -------
    astropy.table.Table
        The columns of the catalog contract (``docs/catalog.md``).

    Notes
    -----
    On Linux with glibc the first call asks the allocator to keep freed arrays of up to 32 MB for reuse
    (:func:`reuse_freed_memory`; ``REDSIFT_NO_MALLOPT=1`` leaves the allocator as it is).
    """
    builder = _Builder(model, batch_rows, backend)
    _drive(builder, inputs, progress, input_meta, jobs)
    return builder.finish(meta)


def predict_to_file(model, inputs, path, prov: dict | None = None, overwrite: bool = False,
                    batch_rows: int = BATCH_ROWS, progress: bool = True, backend: str = "auto", jobs: int = 1,
                    spool_rows: int = SPOOL_ROWS) -> dict:
    """:func:`predict_catalog` written to the FITS catalog ``path`` as it goes: finished rows are spooled to
    parts of ``spool_rows`` rows in a temporary directory beside ``path`` and written into one file at the end
    (:func:`redsift.io.output.write_catalog_parts`), so memory stays flat however many spectra (a survey's
    catalog is never held). The file is the one :func:`redsift.io.output.write_catalog` writes of
    :func:`predict_catalog`'s table, byte for byte; the write is atomic and the temporary parts are removed
    whatever happens. Returns :func:`catalog_summary`'s counts."""
    import shutil
    import tempfile

    from ..io.output import write_catalog_parts

    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path}: exists (use overwrite / --overwrite)")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    spool = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.parts.", dir=directory)
    try:
        builder = _Builder(model, batch_rows, backend, spool=spool, spool_rows=spool_rows)
        _drive(builder, inputs, progress, None, jobs)
        parts = builder.finish()
        write_catalog_parts(parts, path, prov, overwrite=overwrite)
        return builder.summary
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def catalog_summary(zwarn, spectype, into: dict | None = None) -> dict:
    """Counts of a catalog's rows (added to ``into``): ``rows``, ``zwarn0`` (ZWARN == 0), ``nodata`` and
    ``bad_input`` (those bits set) and ``spectype`` (rows per SPECTYPE, ``""`` unmeasured)."""
    out = into or {"rows": 0, "zwarn0": 0, "nodata": 0, "bad_input": 0, "spectype": {}}
    zw = np.asarray(zwarn, np.int64)
    out["rows"] += len(zw)
    out["zwarn0"] += int(np.sum(zw == 0))
    out["nodata"] += int(np.sum(zw & int(ZWarningMask.NODATA) > 0))
    out["bad_input"] += int(np.sum(zw & int(ZWarningMask.BAD_INPUT) > 0))
    for k, v in zip(*np.unique(np.char.strip(np.asarray(spectype).astype(str)), return_counts=True)):
        out["spectype"][str(k)] = out["spectype"].get(str(k), 0) + int(v)
    return out


def parts_summary(parts) -> dict:
    """:func:`catalog_summary` of a catalog written in parts (FITS files), two columns read from each."""
    from astropy.io import fits

    summary = None
    for part in parts:
        with fits.open(part) as h:
            summary = catalog_summary(h[1].data["ZWARN"], h[1].data["SPECTYPE"], summary)
    return summary


def _drive(builder, inputs, progress: bool, input_meta, jobs: int):
    """Every input through ``builder`` in order: datasets a batch at a time, runs of files in windows (in
    reader processes with ``jobs > 1``), in-memory spectra as they are."""
    from tqdm.auto import tqdm

    model = builder.model
    reuse_freed_memory()
    sources = resolve_inputs(inputs)
    nfiles = sum(s.kind == "file" for s in sources)
    bar = tqdm(total=nfiles, desc="predict", unit="file", disable=not progress or not nfiles)
    pool = _reader_pool(model, jobs) if jobs > 1 and nfiles > 1 else None
    # spec files are stacked per window unless the model takes its native grid as it is (a padded batch
    # would not have the grid's width)
    batch = builder.fam.binning(model) != "native"
    failed = True
    try:
        k = 0
        while k < len(sources):
            src = sources[k]
            if src.kind == "dataset":
                _dataset(builder, src.path, builder.batch_rows, input_meta, src.rows)  # (read a batch at a time)
                k += 1
                continue
            if src.kind == "file":  # a run of consecutive files, in windows (in reader processes with -j)
                run = []
                while k < len(sources) and sources[k].kind == "file":
                    run.append(sources[k])
                    k += 1
                if pool is None:
                    for c in range(0, len(run), WINDOW):
                        for spectra, nread in _read_window(run[c:c + WINDOW], batch):
                            if spectra is not None:
                                if input_meta is not None:
                                    input_meta.append(spectra.meta)
                                _prepare(builder, spectra)
                            bar.update(nread)
                else:
                    for piece, (items, metas) in _ahead(pool, run, input_meta is not None, batch, 2 * jobs):
                        if input_meta is not None:
                            input_meta.extend(metas)
                        for item in items:
                            (builder.add if item[0] == "ok" else builder.add_failed)(*item[1:])
                        bar.update(len(piece))
                continue
            k += 1
            if len(src.spectra) == 0:
                continue
            if input_meta is not None:
                input_meta.append(src.spectra.meta)
            _prepare(builder, src.spectra)
        failed = False
    finally:
        bar.close()
        if pool is not None:
            if failed:  # an error or an interrupt: the queued pieces are dropped, not waited for
                pool.terminate()
            else:
                pool.close()
            pool.join()


#: the model of a reader process (inherited through fork; read-only there)
_READER_MODEL = None


class _Collector:
    """What :func:`_prepare` hands the builder, kept as items (a reader process's result)."""

    def __init__(self, model):
        self.model, self.fam = model, get_family(model)
        self.items = []

    def add(self, ids, prepared, errors):
        self.items.append(("ok", ids, prepared, np.asarray(errors, dtype=str)))

    def add_failed(self, ids, zwarn, errors):
        self.items.append(("failed", ids, zwarn, errors))


def _window_items(arg):
    """In a reader process: consecutive files read and put on the model's grid (every failure becomes
    items, as in the serial pipeline), and their metadata tables when asked."""
    window, want_meta, batch = arg
    c = _Collector(_READER_MODEL)
    metas = []
    for spectra, _ in _read_window(window, batch):
        if spectra is None:
            continue
        if want_meta:
            metas.append(spectra.meta)
        _prepare(c, spectra)
    return c.items, metas


#: files per window of the serial file pipeline; files per piece handed to a reader process is PIECE
WINDOW = 256
PIECE = 32


def _ahead(pool, run: list, want_meta: bool, batch: bool, inflight: int):
    """``(piece, result)`` for pieces of :data:`PIECE` files of ``run``, in order, read by the reader
    processes: at most ``inflight`` pieces are queued or done but not yet taken, so memory stays bounded
    whatever the files hold (a piece of spPlates is tens of thousands of spectra)."""
    from collections import deque

    pieces = [run[c:c + PIECE] for c in range(0, len(run), PIECE)]
    queue: deque = deque()
    nxt = 0
    while nxt < len(pieces) or queue:
        while nxt < len(pieces) and len(queue) < inflight:
            queue.append((pieces[nxt], pool.apply_async(_window_items, ((pieces[nxt], want_meta, batch),))))
            nxt += 1
        piece, res = queue.popleft()
        yield piece, res.get()


def _read_window(window: list[Source], batch: bool = True):
    """``(spectra, files)`` for consecutive file sources, in order, read lazily (one file, or one batch, in
    memory at a time): each run of plain SDSS/BOSS spec files as one batch
    (:func:`redsift.io.registry.read_fast_batch`: per-file Python work done once per batch), every other file
    on its own (:func:`_read`: placeholders for unreadable files; ``spectra`` None for a skipped one).
    ``files`` is how many inputs the item stands for (for the progress bar)."""
    from itertools import groupby

    from ..io.registry import fast_name, fast_path_on, read_fast_batch

    def alone(src):
        spectra = _read(src)
        return (spectra if spectra is not None and len(spectra) else None), 1

    batch = batch and fast_path_on()
    for named, group in groupby(window, key=lambda s: batch and fast_name(s.path)):
        group = list(group)
        if not named:
            yield from (alone(s) for s in group)
            continue
        stacked, ok = read_fast_batch([s.path for s in group])
        row = 0
        for took, part in groupby(zip(group, ok), key=lambda item: bool(item[1])):
            part = [s for s, _ in part]
            if not took:  # files the strict reader leaves: the general path, as before
                yield from (alone(s) for s in part)
                continue
            yield (stacked if len(part) == len(stacked) else stacked[row:row + len(part)]), len(part)
            row += len(part)


def _reader_pool(model, jobs: int):
    from ..parallel import fork_context

    global _READER_MODEL
    _READER_MODEL = model
    ctx = fork_context()
    return ctx.Pool(jobs) if ctx is not None else None  # no fork on this platform: read in this process


def predict_spectra(model, spectra: Spectra, batch_rows: int = BATCH_ROWS, backend: str = "auto"):
    """Catalog rows for one batch of spectra (any format, any grid)."""
    return predict_catalog(model, [spectra], batch_rows=batch_rows, progress=False, backend=backend)
