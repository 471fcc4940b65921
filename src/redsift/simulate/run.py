"""``redsift simulate``: labelled simulated spectra written as a dataset.

The work is cut into blocks of ``block`` spectra; block ``b`` draws from
``numpy.random.default_rng([seed, b])`` and is written as one shard in
block order, so the output depends only on ``(n, survey, classes, mix, seed,
templates)`` and not on the number of worker processes.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from astropy.table import Table

from ..constants import C_KMS, CIV
from ..grid import LogGrid
from ..preprocess import coverage_zwarn, snr_median, to_grid
from ..spectra import Spectra
from .instrument import SURVEYS, observe, sample_magnitudes
from .library import load_library
from .physics import visual_bal_flag
from .sources import QuasarModel, absorb, make_galaxies, make_stars, qso_redshifts

__all__ = ["simulate", "simulate_block", "DEFAULT_MIX", "CLASSES"]

log = logging.getLogger(__name__)

CLASSES = ("QSO", "STAR", "GALAXY")
#: Default class mix: BOSS quasar targets (quasars, their stellar contaminants, galaxies).
DEFAULT_MIX = {"QSO": 0.6, "STAR": 0.25, "GALAXY": 0.15}
_SURVEY_CODE = {"boss": 1, "desi": 2, "lamost": 3}

_LIB = {}


def _library(templates):
    key = str(templates)
    if key not in _LIB:
        _LIB[key] = load_library(templates)
        _LIB[key + ":qso"] = QuasarModel(_LIB[key])
    return _LIB[key], _LIB[key + ":qso"]


def simulate_block(b: int, nb: int, start: int, survey: str, mix: dict, seed: int, templates=None,
                   star_mix: str | dict | None = None):
    """Simulate ``nb`` spectra of block ``b`` on the survey's native grid.

    Returns a :class:`Spectra` batch whose ``meta`` holds the truth.
    """
    lib, qso = _library(templates)
    inst = SURVEYS[survey]
    rng = np.random.default_rng([seed, b])
    classes = np.array(list(mix))
    p = np.array([mix[c] for c in classes], float)
    cls = classes[rng.choice(len(classes), size=nb, p=p / p.sum())]
    rest = np.zeros((nb, lib.qso_eigen.shape[1]), np.float32)
    z = np.zeros(nb)
    native = np.zeros(nb, bool)
    truth = {"SUBCLASS": np.array([""] * nb, "U24"), "SUBCLASS_FINE": np.array([""] * nb, "U32"),
             "BAL_FLAG": np.zeros(nb, np.int64),
             "BI_CIV": np.zeros(nb), "AI_CIV": np.zeros(nb), "CIV_ABS_Q": np.zeros(nb),
             "N_DLA": np.zeros(nb, np.int64), "LOG_NHI": np.zeros(nb),
             "CIV_SHIFT": np.zeros(nb), "LOBAL": np.zeros(nb, bool), "MAG_G": np.zeros(nb),
             "BINARY": np.zeros(nb, bool), "EBV_STAR": np.zeros(nb)}
    # MAG_G holds the magnitude in the selection band (SEL_BAND): g, or r/i for high-z quasars
    for c in classes:
        sel = np.flatnonzero(cls == c)
        if not sel.size:
            continue
        if c == "QSO":
            zq = qso_redshifts(sel.size, rng, survey)
            spec, t = qso.sample(zq, rng, lib.galaxies)
            native[sel] = lib.mode == "templates"
        elif c == "STAR":
            spec, zq, t = make_stars(sel.size, lib, rng, star_mix)
            t["SUBCLASS_FINE"] = t.pop("SUBTYPE_DETAIL")
            native[sel] = t["NATIVE_RES"]
            truth["BAL_FLAG"][sel] = 0
        else:
            spec, zq, t = make_galaxies(sel.size, lib, rng, qso)
            native[sel] = False
        rest[sel], z[sel] = spec, zq
        for k, v in t.items():
            if k in truth:
                truth[k][sel] = v
        truth["MAG_G"][sel] = sample_magnitudes(survey, c, sel.size, rng)
    qrows = np.flatnonzero(cls == "QSO")

    def igm(wave, flux):
        sub = flux[qrows]
        out = absorb(wave, sub, z[qrows], rng)
        flux[qrows] = sub
        return out

    # selection band: g, except r (3 < z < 4.2) and i (z >= 4.2) for quasars, which drop out of g and r
    bands = np.where((cls == "QSO") & (z >= 4.2), "i", np.where((cls == "QSO") & (z >= 3.0), "r", "g"))
    wave, flux, ivar, mask, extra = observe(rest, z, native, inst, lib, truth["MAG_G"], rng, absorber=igm,
                                            bands=bands)
    truth["N_DLA"][qrows] = extra["N_DLA"]
    truth["LOG_NHI"][qrows] = extra["LOG_NHI"]
    meta = Table({"TARGETID": (9 * 10**15 + _SURVEY_CODE[survey] * 10**14 + (seed % 10**4) * 10**9
                               + start + np.arange(nb)).astype(np.int64),
                  "CLASS": cls.astype("U8"), "Z": z, "Z_CONF": np.full(nb, 3, np.int64)})
    for k, v in truth.items():
        meta[k] = v
    meta["EBV"] = extra["EBV"]
    meta["SEL_BAND"] = bands.astype("U1")
    meta["SURVEY"] = [survey] * nb
    meta["SIM_MODE"] = [lib.mode] * nb
    spectra = Spectra(wave, flux, ivar, mask, meta)
    snr = snr_median(spectra.flux, spectra.weights).astype(np.float32)
    spectra.meta["SNR"] = snr
    # BAL_FLAG plays the visual-inspection flag: set where the CIV trough is seen (physics.visual_bal_flag),
    # and, as in the visual-inspection catalogs, only where the CIV trough region (up to 25000 km/s) is
    # in the spectrum; elsewhere it is -1 (unknown). BI_CIV and AI_CIV stay as the noiseless truth.
    q = cls == "QSO"
    flag = np.where(q, visual_bal_flag(truth["AI_CIV"], truth["CIV_ABS_Q"], snr), 0)
    z_civ = inst.wmin / (CIV * (1 - 25000 / C_KMS)) - 1
    hidden = q & ((truth["BI_CIV"] > 0) | (truth["AI_CIV"] > 0)) & (z < z_civ)
    flag[hidden] = -1
    spectra.meta["BAL_FLAG"] = flag.astype(np.int64)
    return spectra


def _pool(jobs: int, templates):
    """Worker processes for ``simulate -j``: forked after this process has loaded the template library, so
    they share its arrays (copy-on-write: the library is only read). Explicitly fork: with Python 3.14's
    default start method (forkserver) each worker would load its own ~0.7 GB in ~17 s; where fork is not
    available, each worker loads it once."""
    from ..parallel import fork_context

    ctx = fork_context()
    if ctx is None:
        return ProcessPoolExecutor(jobs, initializer=_library, initargs=(templates,))
    return ProcessPoolExecutor(jobs, mp_context=ctx)


def _work(args):
    b, nb, start, survey, mix, seed, templates, grid_dict, binning, star_mix = args
    s = simulate_block(b, nb, start, survey, mix, seed, templates, star_mix)
    grid = LogGrid.from_dict(grid_dict)
    binned = to_grid(s, grid, binning)
    flux, ivar = binned.flux, binned.ivar
    meta = s.meta
    meta["ZWARN"] = np.asarray(meta["ZWARN"], np.int64) | coverage_zwarn(ivar)
    meta["INDEX"] = np.arange(start, start + nb, dtype=np.int64)
    drop = [c for c in ("FORMAT", "SOURCE", "AIRTOVAC", "ERROR") if c in meta.colnames]
    meta.remove_columns(drop)
    return flux, ivar, ivar <= 0, meta


def simulate(n: int, survey: str, output, mix: dict | None = None, seed: int = 0, templates=None,
             grid: str = "quasarnet", jobs: int = 1, block: int = 1000, progress: bool = True,
             command: str = "", append: bool = False, star_mix: str = "boss", workers: int | None = None,
             scheduler: str | None = None):
    """Simulate ``n`` spectra and write them as a dataset at ``output``; returns the Dataset.

    ``jobs``: local worker processes; ``workers``/``scheduler``: a Dask cluster instead (a local one of
    ``workers`` processes, or an existing one at ``scheduler``). Blocks are seeded by ``(seed, block)`` and
    written in block order, so the dataset is the same whichever runs them."""
    from tqdm.auto import tqdm

    from ..data.store import Dataset, DatasetWriter

    if survey not in SURVEYS:
        raise ValueError(f"unknown survey {survey!r}; choose from {', '.join(SURVEYS)}")
    mix = dict(mix or DEFAULT_MIX)
    bad = [c for c in mix if c not in CLASSES]
    if bad:
        raise ValueError(f"unknown class(es) {', '.join(bad)}; choose from {', '.join(CLASSES)}")
    inst = SURVEYS[survey]
    if grid == "native":
        if inst.grid is None:
            raise ValueError(f"{survey} has a linear native grid: store it with --grid quasarnet or boss")
        g, binning = inst.grid, "native"
    else:
        g, binning = LogGrid.named(grid)
    if workers or scheduler:
        from ..predict.distributed import require_dask

        require_dask()  # before the output is touched
    lib, _ = _library(templates)
    prov = {"command": command or "redsift simulate", "n": n, "survey": survey, "mix": mix, "seed": seed,
            "mode": lib.mode, "templates": lib.path, "block": block, "star_mix": star_mix}
    writer = DatasetWriter(output, g, binning, prov, mode="a" if append else "w")
    blocks = [(b, min(block, n - b * block), b * block) for b in range((n + block - 1) // block)]
    args = [(b, nb, start, survey, mix, seed, templates, g.to_dict(), binning, star_mix) for b, nb, start in blocks]
    bar = tqdm(total=n, desc=f"simulate {survey}", unit="spec", disable=not progress)
    if workers or scheduler:
        from ..predict.distributed import dask_map

        results, close = dask_map(_work, args, workers, scheduler)
    else:
        pool = _pool(jobs, templates) if jobs > 1 else None
        results = pool.map(_work, args) if pool else map(_work, args)
        close = pool.shutdown if pool else (lambda: None)
    try:
        for flux, ivar, mask, meta in results:
            writer.write_shard(flux, ivar, mask, meta)
            bar.update(len(meta))
    finally:
        bar.close()
        close()
    return Dataset(output)
