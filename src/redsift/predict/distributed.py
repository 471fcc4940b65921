"""Prediction across a Dask cluster (``redsift predict --workers N`` / ``--scheduler ADDRESS``; issue 20).

The inputs are resolved once, in order, and cut into tasks: runs of ``files_per_task`` consecutive files,
and row ranges of ``rows_per_task`` rows of a dataset. Each task runs the ordinary pipeline
(:func:`redsift.predict.predict_catalog`) on
a worker, with the model loaded once per worker process, and writes its own shard
``CATALOG.shards/shard-NNNNN.fits`` atomically (a temporary file renamed into place: a half-written shard
never exists under its final name, so it is never counted as done). The driver merges the shards in task
order into the catalog, so the distributed catalog is the serial one, row for row. ``resume`` skips the
tasks whose shard exists, after checking that the shard directory was made by the same model for the
same inputs (``manifest.json``).

Faults: a task that raises is retried (``retries``); a worker that dies loses its running task, which the
scheduler runs again elsewhere (distributed's own rescheduling); an unreachable scheduler is a one-line
error within ``connect_timeout`` seconds; an output directory that cannot be written is an error before
any work starts.

On a cluster: ``dask-scheduler`` on one node, ``dask-worker tcp://HOST:8786`` on the others (or
``dask_jobqueue.SLURMCluster(...).scale(jobs=N)`` / ``PBSCluster`` and its ``scheduler_address``), then
``redsift predict INPUTS -o cat.fits --scheduler tcp://HOST:8786``. The inputs must be readable at the same
paths on every worker (a shared file system), as must the model directory. ``redsift simulate --workers``
runs its seeded blocks on the same kind of cluster (:func:`redsift.simulate.simulate`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import RedsiftError, oneline

__all__ = ["predict_distributed", "plan_tasks", "dask_map"]

log = logging.getLogger(__name__)

_MODELS: dict = {}  # per worker process: model path -> loaded model


def plan_tasks(sources, files_per_task: int, rows_per_task: int = 50_000) -> list[list]:
    """Consecutive runs of at most ``files_per_task`` file sources; a dataset is cut into tasks of
    ``rows_per_task`` rows (row ranges: a large dataset spreads over the workers)."""
    from ..data.store import Dataset
    from .pipeline import Source

    tasks, run = [], []
    for src in sources:
        if src.kind == "dataset":
            if run:
                tasks.append(run)
                run = []
            n = len(Dataset(src.path))  # an empty dataset adds no task (and no rows, as in the serial run)
            for start in range(0, n, rows_per_task):
                tasks.append([Source("dataset", src.path, rows=(start, min(start + rows_per_task, n)))])
            continue
        if src.kind != "file":
            raise RedsiftError("distributed prediction takes files, directories and datasets, not in-memory spectra")
        run.append(src)
        if len(run) >= files_per_task:
            tasks.append(run)
            run = []
    if run:
        tasks.append(run)
    return tasks


def _task(model_path: str, device: str, items: list, shard: str, kill_marker: str = "") -> dict:
    """Run on a worker: the catalog of ``items`` written to ``shard`` (atomically)."""
    from ..io.output import write_catalog
    from ..models import load_model
    from .pipeline import Source, predict_catalog

    if kill_marker and not os.path.exists(kill_marker):  # tests: die once, mid-run, as a crashed worker does
        Path(kill_marker).touch()
        os._exit(1)
    key = (model_path, device)
    if key not in _MODELS:
        _MODELS[key] = load_model(model_path, device=device)
    model = _MODELS[key]
    sources = [Source(kind, path, listed=listed, rows=tuple(rows) if rows else None)
               for kind, path, listed, rows in items]
    cat = predict_catalog(model, sources, progress=False)
    write_catalog(cat, shard, overwrite=True)
    from ..zwarning import ZWarningMask

    return {"shard": shard, "rows": len(cat),
            "bad": int(np.sum(np.asarray(cat["ZWARN"], np.int64) & int(ZWarningMask.BAD_INPUT) > 0))}


def _manifest(model_path: str, weights: str, tasks) -> dict:
    items = [[[s.kind, s.path, s.listed, list(s.rows) if s.rows else None] for s in t] for t in tasks]
    digest = hashlib.sha256(json.dumps(items).encode()).hexdigest()
    return {"model": model_path, "weights_sha256": weights, "tasks": len(tasks), "inputs_sha256": digest}


def require_dask():
    """A one-line error unless dask.distributed is installed (checked before any output is touched)."""
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise RedsiftError("running on a Dask cluster needs dask.distributed (pip install 'redsift[dist]')") from None


def _client(workers: int | None, scheduler: str | None, connect_timeout: float):
    require_dask()
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=f"{connect_timeout}s"), None
        except (OSError, TimeoutError) as exc:
            raise RedsiftError(f"scheduler {scheduler}: unreachable ({oneline(exc)})") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    return Client(cluster), cluster


def dask_map(fn, args: list, workers: int | None, scheduler: str | None, retries: int = 2):
    """``fn`` over ``args`` on a Dask cluster (a local one of ``workers`` processes, or the one at
    ``scheduler``): ``(results, close)``, the results yielded in the order of ``args`` and each released
    once taken (the driver holds one at a time), ``close`` to call when done. A task that raises is retried;
    a worker that dies loses its task to another. Used by ``simulate`` (seeded blocks) and ``ingest``
    (chunks of catalog rows), whose outputs are written in order by the driver, so the dataset is the
    serial one."""
    client, cluster = _client(workers, scheduler, 10.0)

    def close():
        client.close()
        if cluster is not None:
            cluster.close()

    try:
        futures = client.map(fn, args, pure=False, retries=retries)
    except BaseException:
        close()
        raise

    def results():
        for fut in futures:
            yield fut.result()
            fut.release()

    return results(), close


def predict_distributed(model_path: str, inputs, output: str, workers: int | None = None,
                        scheduler: str | None = None, files_per_task: int = 64, rows_per_task: int = 50_000,
                        resume: bool = False,
                        device: str = "cpu", retries: int = 2, connect_timeout: float = 10.0,
                        progress: bool = True, model=None, merge: bool = True, _kill_task: int = -1):
    """The catalog of ``inputs`` computed on a Dask cluster (see the module docstring); returns the merged
    astropy Table (not yet written: the caller writes it with its provenance), or with ``merge=False`` the
    shards' paths in row order (for :func:`redsift.io.output.write_catalog_parts`, which never holds the whole
    catalog: ``redsift predict --workers``). ``model``: the model at ``model_path`` when the caller has
    already loaded it (the workers load their own from the path)."""
    from astropy.table import Table, vstack
    from tqdm.auto import tqdm

    from ..models import load_model
    from .pipeline import resolve_inputs

    if not workers and not scheduler:
        raise RedsiftError("give --workers N (a local cluster) or --scheduler ADDRESS")
    sources = resolve_inputs(inputs)
    tasks = plan_tasks(sources, max(1, int(files_per_task)), max(1, int(rows_per_task)))
    if not tasks:
        raise RedsiftError("no input spectra")
    if model is None:  # the caller's loaded model, or loaded here: a bad model stops before a cluster starts
        model = load_model(model_path)
    shard_dir = Path(f"{output}.shards")
    manifest = _manifest(str(model_path), getattr(model, "weights_sha256", ""), tasks)
    try:  # an unwritable output: an error before any work
        shard_dir.mkdir(parents=True, exist_ok=True)
        probe = shard_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RedsiftError(f"{shard_dir}: cannot write the shards ({oneline(exc)})") from None
    mpath = shard_dir / "manifest.json"
    if resume and mpath.exists():
        old = json.loads(mpath.read_text())
        if old != manifest:
            raise RedsiftError(f"{shard_dir}: made for other inputs or another model; cannot resume (remove it)")
    else:
        for old in shard_dir.glob("shard-*.fits"):
            old.unlink()
        mpath.write_text(json.dumps(manifest, indent=1))
    shards = [str(shard_dir / f"shard-{k:05d}.fits") for k in range(len(tasks))]
    todo = [k for k in range(len(tasks)) if not (resume and os.path.exists(shards[k]))]
    log.info("%d tasks, %d to run (%d done before)", len(tasks), len(todo), len(tasks) - len(todo))
    if todo:
        client, cluster = _client(workers, scheduler, connect_timeout)
        try:
            futures = []
            for k in todo:
                items = [(s.kind, s.path, s.listed, s.rows) for s in tasks[k]]
                marker = str(shard_dir / f".kill-{k}") if k == _kill_task else ""
                futures.append(client.submit(_task, str(model_path), device, items, shards[k], marker,
                                             key=f"redsift-shard-{k}-{manifest['inputs_sha256'][:8]}",
                                             retries=retries, pure=False))
            from dask.distributed import as_completed

            bar = tqdm(total=len(futures), desc="predict (dask)", unit="task", disable=not progress)
            for fut in as_completed(futures):
                fut.result()  # re-raises a task that failed all its retries
                bar.update()
            bar.close()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    if not merge:
        return shards
    # (text read back as str, each column as wide as its widest shard: the serial catalog's dtypes)
    parts = [Table.read(p, character_as_bytes=False) for p in shards]
    cat = vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else parts[0]
    cat.meta.clear()
    return cat
