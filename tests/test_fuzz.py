"""Property-based fuzzing of every spectrum reader and of batch assembly (hypothesis).

The contract under test (docs/robustness.md):

* ``read_file(path)`` returns a valid :class:`Spectra` (flux, ivar and mask 2-D of one shape, a wavelength
  array that matches, is finite, positive and strictly increasing, one metadata row per spectrum) or raises
  :class:`SpectrumFileError` whose message is ONE line starting with the path. Never another exception
  type, never a hang.
* ``iter_read(paths, errors="flag")`` never raises and yields a row for every file.
* ``Spectra.concatenate`` of any list of valid batches never raises and keeps every row.

Inputs start from the real fixture files (``../shared/data/real``; those tests skip when it is absent) and
from small files the tests write themselves (no shared data needed), and are mutated: truncation, bit flips,
header card edits, column dtype and shape changes, 0/1-pixel spectra, NaN/inf/huge/negative values,
all-masked pixels, duplicated/removed columns and HDUs, unsorted/repeated wavelengths, gzip damage.

Profiles: the default ("ci") is bounded and derandomized (the whole file runs in well under a minute);
``REDSIFT_FUZZ=long`` runs thousands of random cases per target for release checks.
``REDSIFT_FUZZ_STATS=file.json`` writes the number of cases per target and how they ended.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from redsift.errors import SpectrumFileError
from redsift.io.registry import iter_read, read_file
from redsift.io.sdss import write_spplate
from redsift.spectra import Spectra
from redsift.zwarning import ZWarningMask

PROFILE = os.environ.get("REDSIFT_FUZZ", "ci").strip().lower()
if PROFILE not in ("ci", "long") and not PROFILE.isdigit():
    raise ValueError(f"REDSIFT_FUZZ must be 'ci', 'long' or a number of cases per target, not {PROFILE!r}")
LONG = PROFILE != "ci"


def fuzz(ci: int, long: int = 2000):
    """Hypothesis settings of one target: bounded and reproducible in CI (``ci`` cases, derandomized);
    ``long`` random cases with REDSIFT_FUZZ=long, or as many as REDSIFT_FUZZ says when it is a number."""
    n = ci if PROFILE == "ci" else long if PROFILE == "long" else int(PROFILE)
    return settings(max_examples=n, derandomize=not LONG, deadline=None, database=None,
                    print_blob=True, suppress_health_check=list(HealthCheck))


# --- bookkeeping: cases per target and how they ended (REDSIFT_FUZZ_STATS) ---------------------------
STATS: dict[str, Counter] = defaultdict(Counter)


def _outcome_class(cause: str) -> str:
    """A short class for an error message (the text before the first parenthesis or number)."""
    import re

    head = re.split(r"[(:\d]", cause, maxsplit=1)[0].strip()
    return head[:60] or cause[:60]


@pytest.fixture(scope="module", autouse=True)
def _write_stats():
    yield
    out = os.environ.get("REDSIFT_FUZZ_STATS")
    if out:
        old = json.loads(Path(out).read_text()) if Path(out).exists() else {}
        for target, c in STATS.items():
            old[target] = {"cases": c["cases"], "outcomes": dict(sorted(
                ((k, v) for k, v in c.items() if k != "cases"), key=lambda kv: -kv[1]))}
        Path(out).write_text(json.dumps(old, indent=1, sort_keys=True))


# --- the contract -------------------------------------------------------------------------------------
class _Hang(BaseException):  # not an Exception: read_file's own handlers must not swallow it
    pass


def _alarm(signum, frame):
    raise _Hang("read_file took longer than 30 s")


def check_spectra(s: Spectra) -> None:
    """Assert the invariants every reader output and every concatenation keeps."""
    assert isinstance(s, Spectra)
    assert s.flux.ndim == 2 and s.flux.shape == s.ivar.shape == s.mask.shape, (s.flux.shape, s.ivar.shape,
                                                                               s.mask.shape)
    assert s.flux.dtype == np.float32 and s.ivar.dtype == np.float32 and s.mask.dtype == bool
    assert s.wave.dtype == np.float64 and s.wave.shape in ((s.npix,), s.flux.shape), (s.wave.shape, s.flux.shape)
    assert np.all(np.isfinite(s.wave)) and np.all(s.wave > 0)
    assert np.all(np.diff(s.wave, axis=-1) > 0), "wavelengths not strictly increasing"
    assert np.all(np.isfinite(s.flux)) and np.all(np.isfinite(s.ivar)) and np.all(s.ivar >= 0)
    assert len(s.meta) == s.nspec
    for name in ("TARGETID", "SURVEY", "FORMAT", "SOURCE", "INDEX", "AIRTOVAC", "ZWARN", "ERROR"):
        assert name in s.meta.colnames, name
    # a spectrum with an ERROR is flagged, and a flagged BAD_INPUT spectrum says why
    err = np.asarray(s.meta["ERROR"]).astype(str)
    zw = np.asarray(s.meta["ZWARN"], np.int64)
    assert np.all((err == "") | (zw & int(ZWarningMask.BAD_INPUT) != 0))
    assert np.all((zw & int(ZWarningMask.BAD_INPUT) == 0) | (err != ""))
    assert not any("\n" in e for e in err)


EXPLORE = bool(os.environ.get("REDSIFT_FUZZ_EXPLORE"))


def _failure_class(exc: BaseException) -> str:
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "redsift" in f.filename or "test_fuzz" in f.filename]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"FAIL {type(exc).__name__} at {where}: {' '.join(str(exc).split())[:150]}"


DOWNSTREAM = bool(os.environ.get("REDSIFT_FUZZ_DOWNSTREAM"))


def _downstream(s: Spectra, target: str) -> None:
    """Report-only (REDSIFT_FUZZ_DOWNSTREAM=1): does what a reader returned get through the grid stage?"""
    from redsift.preprocess import prepare

    for mode in ("quasarnet", "flux_conserving"):
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                X, ivar, zwarn = prepare(s, mode=mode)
            if not (np.all(np.isfinite(X)) and np.all(np.isfinite(ivar))):
                STATS[target][f"DOWNSTREAM prepare({mode}): non-finite model input"] += 1
                _keep(s.meta["SOURCE"][0], target + "-downstream")
        except Exception as exc:
            STATS[target][f"DOWNSTREAM prepare({mode}): " + _failure_class(exc)] += 1
            _keep(s.meta["SOURCE"][0], target + "-downstream")


def _keep(path, target: str) -> None:
    """Copy an input that broke something to REDSIFT_FUZZ_KEEP (exploration only), for a look."""
    keep = os.environ.get("REDSIFT_FUZZ_KEEP")
    if keep:
        import shutil

        Path(keep).mkdir(parents=True, exist_ok=True)
        n = sum(1 for _ in Path(keep).iterdir())
        shutil.copy(path, Path(keep) / f"{target.replace('/', '-')}-{n:04d}-{Path(path).name}")


def read_contract(path, target: str):
    """read_file(path) under the contract; returns the Spectra or None (a proper SpectrumFileError).

    With ``REDSIFT_FUZZ_EXPLORE=1`` a violation is counted in the statistics instead of failing the test,
    so that one run lists every failure class rather than stopping at the first.
    """
    STATS[target]["cases"] += 1
    if not EXPLORE:
        return _read_contract(path, target)
    try:
        return _read_contract(path, target)
    except (Exception, _Hang) as exc:
        STATS[target][_failure_class(exc)] += 1
        _keep(path, target)
        return None


def _read_contract(path, target: str):
    path = str(path)
    alarm = hasattr(signal, "SIGALRM")
    if alarm:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(30)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = read_file(path)
    except SpectrumFileError as exc:
        msg = str(exc)
        note(f"SpectrumFileError: {msg}")
        assert "\n" not in msg, msg
        assert msg.startswith(f"{path}: ") and exc.cause, msg
        STATS[target]["error: " + _outcome_class(exc.cause)] += 1
        if EXPLORE:  # every distinct message (numbers blanked), to judge their quality
            import re

            STATS[target]["msg: " + re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", exc.cause)[:160]] += 1
        return None
    finally:
        if alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
    check_spectra(s)
    assert np.all(np.asarray(s.meta["SOURCE"]) == path)
    if DOWNSTREAM:
        _downstream(s, target)
    flagged = int(np.sum(np.asarray(s.meta["ERROR"]).astype(str) != ""))
    STATS[target]["read" if not flagged else "read, spectra flagged"] += 1
    # the batch step of `redsift predict`: a good file, this one and a placeholder
    both = Spectra.concatenate([s, Spectra.placeholder("x.fits", "unreadable"), s])
    check_spectra(both)
    assert both.nspec == 2 * s.nspec + 1
    return s


# --- synthetic files (no shared data needed) ----------------------------------------------------------
def _rng(seed=0):
    return np.random.default_rng(seed)


def synth_sdss_spec(path, npix=240, loglam0=3.5800):
    r = _rng(1)
    loglam = (loglam0 + 1e-4 * np.arange(npix)).astype(np.float32)
    coadd = Table({"FLUX": r.normal(5, 1, npix).astype(np.float32), "LOGLAM": loglam,
                   "IVAR": np.full(npix, 4, np.float32), "AND_MASK": np.where(r.random(npix) < 0.05, 16, 0).astype(np.int32),
                   "OR_MASK": np.zeros(npix, np.int32), "WDISP": np.ones(npix, np.float32),
                   "SKY": np.zeros(npix, np.float32), "MODEL": np.zeros(npix, np.float32)})
    h = fits.Header()
    h["TELESCOP"] = "SDSS 2.5-M"
    h["PLATEID"], h["MJD"], h["FIBERID"] = 3655, 55240, 54
    h["PLUG_RA"], h["PLUG_DEC"] = 110.3, 40.3
    spall = Table({"PLATE": [3655], "MJD": [55240], "FIBERID": [54], "CLASS": ["QSO"], "Z": [1.5]})
    fits.HDUList([fits.PrimaryHDU(header=h), fits.BinTableHDU(coadd), fits.BinTableHDU(spall)]).writeto(path)


def synth_spplate(path, nfiber=4, npix=150):
    r = _rng(2)
    wave = 10 ** (3.5800 + 1e-4 * np.arange(npix))
    meta = Table({"PLATE": [3655] * nfiber, "MJD": [55240] * nfiber, "FIBERID": np.arange(1, nfiber + 1),
                  "RA": np.linspace(1, 2, nfiber), "DEC": np.linspace(3, 4, nfiber),
                  "OBJTYPE": ["QSO"] * (nfiber - 1) + ["SKY"], "THING_ID": np.arange(nfiber) + 100})
    s = Spectra(wave, r.normal(3, 1, (nfiber, npix)), np.full((nfiber, npix), 2.0), r.random((nfiber, npix)) < 0.05,
                meta)
    write_spplate(s, path)


DESI_ARMS = {"B": 3600.0, "R": 3600.0 + 0.8 * 50, "Z": 3600.0 + 0.8 * 100}


def synth_desi(path, nspec=3, npix=60, fibermap=True):
    r = _rng(3)
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["SPGRP"], hdus[0].header["TILEID"] = "cumulative", 80613
    if fibermap:
        fm = Table({"TARGETID": np.arange(nspec, dtype=np.int64) + 39627000000000, "TARGET_RA": np.linspace(10, 11, nspec),
                    "TARGET_DEC": np.linspace(-1, 1, nspec), "FIBER": np.arange(nspec, dtype=np.int32),
                    "OBJTYPE": ["TGT"] * nspec, "DESI_TARGET": np.zeros(nspec, np.int64),
                    "PHOTSYS": ["S"] * nspec})
        hdus.append(fits.BinTableHDU(fm, name="FIBERMAP"))
    for arm, w0 in DESI_ARMS.items():
        wave = w0 + 0.8 * np.arange(npix)
        hdus.append(fits.ImageHDU(wave, name=f"{arm}_WAVELENGTH"))
        hdus.append(fits.ImageHDU(r.normal(1, 0.3, (nspec, npix)).astype(np.float32), name=f"{arm}_FLUX"))
        hdus.append(fits.ImageHDU(np.full((nspec, npix), 9.0, np.float32), name=f"{arm}_IVAR"))
        hdus.append(fits.ImageHDU((r.random((nspec, npix)) < 0.03).astype(np.int32), name=f"{arm}_MASK"))
        hdus.append(fits.ImageHDU(np.ones((nspec, 5, npix), np.float32), name=f"{arm}_RESOLUTION"))
    fits.HDUList(hdus).writeto(path)


def _lamost_header():
    h = fits.Header()
    h["TELESCOP"], h["OBSID"], h["LMJD"], h["MJD"] = "LAMOST", 101001, 55859, 55858
    h["RA"], h["DEC"], h["VACUUM"], h["PLANID"], h["SPID"], h["FIBERID"] = 30.0, 5.0, True, "F5902", 1, 1
    return h


def _lamost_arrays(npix=200):
    r = _rng(4)
    wave = 10 ** (3.5682 + 1e-4 * np.arange(npix))
    return (r.normal(100, 10, npix), np.full(npix, 0.01), wave, np.where(r.random(npix) < 0.05, 4.0, 0.0),
            np.zeros(npix))


def synth_lamost_image(path, npix=200):
    h = _lamost_header()
    h["COEFF0"], h["COEFF1"] = 3.5682, 1e-4
    fits.PrimaryHDU(np.array(_lamost_arrays(npix), np.float32), header=h).writeto(path)


def synth_lamost_coadd(path, npix=200):
    flux, ivar, wave, andm, orm = _lamost_arrays(npix)
    t = Table({"FLUX": [flux.astype(np.float32)], "IVAR": [ivar.astype(np.float32)], "WAVELENGTH": [wave],
               "ANDMASK": [andm.astype(np.float32)], "ORMASK": [orm.astype(np.float32)],
               "NORMALIZATION": [np.ones(npix, np.float32)]})
    fits.HDUList([fits.PrimaryHDU(header=_lamost_header()), fits.BinTableHDU(t, name="COADD")]).writeto(path)


def _gzip_file(src, dst):
    Path(dst).write_bytes(gzip.compress(Path(src).read_bytes(), mtime=0))


def synth_generic(path, npix=120):
    r = _rng(5)
    wave = np.linspace(3700, 9000, npix)
    flux, ivar = r.normal(1, 0.1, npix), np.full(npix, 100.0)
    path = str(path)
    if path.endswith(".csv"):
        Table({"wave": wave, "flux": flux, "ivar": ivar}).write(path, format="ascii.csv")
    elif path.endswith(".npz"):
        np.savez(path, wave=wave, flux=flux, ivar=ivar)
    else:
        import h5py

        with h5py.File(path, "w") as f:
            for k, v in (("wave", wave), ("flux", flux), ("ivar", ivar)):
                f.create_dataset(k, data=v)


SYNTH_FITS = {
    "spec-3655-55240-0054.fits": synth_sdss_spec,
    "spPlate-3655-55240.fits": synth_spplate,
    "coadd-synth.fits": synth_desi,
    "coadd-synth-nofibermap.fits": lambda p: synth_desi(p, fibermap=False),
    "spectra-synth.fits": synth_desi,
    "spec-lamost-image.fits": synth_lamost_image,
    "spec-lamost-coadd.fits": synth_lamost_coadd,
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict[str, Path]:
    """The clean synthetic files, each readable (checked), by name."""
    d = tmp_path_factory.mktemp("synth")
    out = {}
    for name, make in SYNTH_FITS.items():
        make(d / name)
        out[name] = d / name
    for name in ("spec-lamost-image.fits", "spec-lamost-coadd.fits", "spec-3655-55240-0054.fits"):
        _gzip_file(out[name], d / (name + ".gz"))
        out[name + ".gz"] = d / (name + ".gz")
    for ext in ("h5", "npz", "csv"):
        synth_generic(d / f"generic.{ext}")
        out[f"generic.{ext}"] = d / f"generic.{ext}"
    for p in out.values():
        assert read_file(p).nspec >= 1
    return out


@pytest.fixture(scope="module")
def real(real_dir) -> dict[str, Path]:
    """The real fixture files, by name (the test skips when ../shared/data is absent)."""
    out = {}
    boss = sorted((real_dir / "boss").glob("spec-*.fits"))
    for p in boss[:3] + [real_dir / "boss" / "spec-10656-58163-0366.fits"]:
        out[p.name] = p
    for sub, pat in (("sdss1", "*.fits"), ("desi", "coadd-*.fits"), ("lamost", "*.fits.gz")):
        for p in sorted((real_dir / sub).glob(pat)):
            out[p.name] = p
    return {k: v for k, v in out.items() if v.exists()}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _bases(request, source: str) -> dict[str, Path]:
    return request.getfixturevalue("synth" if source == "synthetic" else "real")


_BYTES_CACHE: dict[str, bytes] = {}


def _raw(path: Path) -> tuple[bytes, bool]:
    """The file's bytes, decompressed when gzipped, and whether it was."""
    key = str(path)
    if key not in _BYTES_CACHE:
        _BYTES_CACHE[key] = path.read_bytes()
    data = _BYTES_CACHE[key]
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data), True
    return data, False


def _write(work: Path, name: str, data: bytes, gz: bool) -> Path:
    out = work / name
    out.write_bytes(gzip.compress(data, compresslevel=1, mtime=0) if gz else data)
    return out


# --- byte-level mutations -----------------------------------------------------------------------------
FRAC = st.floats(0, 1, exclude_max=True, allow_nan=False)
BYTE_OPS = st.one_of(
    st.tuples(st.just("truncate"), FRAC),
    st.tuples(st.just("flip"), FRAC, st.integers(0, 7)),
    st.tuples(st.just("flips"), st.integers(0, 2**32 - 1), st.integers(1, 200)),
    st.tuples(st.just("overwrite"), FRAC, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("zero"), FRAC, st.integers(1, 6000)),
    st.tuples(st.just("insert"), FRAC, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), FRAC, st.integers(1, 3000)),
    st.tuples(st.just("header_flip"), FRAC, st.integers(0, 7)),
    st.tuples(st.just("ff"), FRAC, st.integers(1, 64)),
)


def _header_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every FITS header in ``data`` (empty when not FITS)."""
    spans = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(data), memmap=False) as h:
                for i in range(len(h)):
                    fi = h.fileinfo(i)
                    spans.append((fi["hdrLoc"], fi["datLoc"]))
    except Exception:
        pass
    return spans


_SPANS: dict[str, list] = {}


def mutate_bytes(data: bytes, ops, key: str) -> bytes:
    b = bytearray(data)
    for op in ops:
        kind, n = op[0], len(b)
        if n == 0:
            break
        if kind == "truncate":
            del b[int(op[1] * n):]
        elif kind == "flip":
            b[int(op[1] * n)] ^= 1 << op[2]
        elif kind == "flips":
            r = np.random.default_rng(op[1])
            for pos in r.integers(0, n, op[2]):
                b[pos] ^= 1 << int(r.integers(0, 8))
        elif kind == "overwrite":
            pos = int(op[1] * n)
            b[pos:pos + len(op[2])] = op[2]
        elif kind == "zero":
            pos = int(op[1] * n)
            end = min(n, pos + op[2])
            b[pos:end] = bytes(end - pos)
        elif kind == "insert":
            pos = int(op[1] * n)
            b[pos:pos] = op[2]
        elif kind == "delete":
            pos = int(op[1] * n)
            del b[pos:pos + op[2]]
        elif kind == "ff":
            pos = int(op[1] * n)
            end = min(n, pos + op[2])
            b[pos:end] = b"\xff" * (end - pos)
        elif kind == "header_flip":
            if key not in _SPANS:
                _SPANS[key] = _header_spans(data)
            spans = [(s, min(e, n)) for s, e in _SPANS[key] if s < n]
            total = sum(e - s for s, e in spans)
            if total:
                k = int(op[1] * total)
                for s, e in spans:
                    if k < e - s:
                        b[s + k] ^= 1 << op[2]
                        break
                    k -= e - s
    return bytes(b)


@pytest.mark.parametrize("source", ["synthetic", "real"])
@given(data=st.data())
@fuzz(ci=50, long=2000)
def test_fuzz_bytes(request, work, source, data):
    """Truncation, bit flips, overwritten/inserted/deleted bytes anywhere, flips inside the headers."""
    bases = _bases(request, source)
    name = data.draw(st.sampled_from(sorted(bases)), label="base")
    ops = data.draw(st.lists(BYTE_OPS, min_size=1, max_size=3), label="ops")
    raw, gz = _raw(bases[name])
    path = _write(work, name, mutate_bytes(raw, ops, str(bases[name])), gz)
    read_contract(path, f"bytes/{source}")


# --- header card edits --------------------------------------------------------------------------------
NASTY_VALUES = ["0", "-1", "1", "2", "3", "5", "-2880", "999999999", "2147483648", "-9223372036854775809",
                "1E38", "-1E38", "1E400", "NAN", "INF", "T", "F", "0.0", "1E-300", "'abc'", "''", "'1E'",
                "'2E'", "'D'", "'K'", "'A'", "'10A'", "'3J'", "'1PE(10)'", "'(2,3)'", "'E'", "'FLUX'", "'LOGLAM'",
                "'IVAR'", "'AND_MASK'", "'WAVELENGTH'", "'B_FLUX'", "'R_WAVELENGTH'", "'FIBERMAP'", "'COADD'",
                "'LAMOST'", "'BINTABLE'", "'IMAGE'", "3.5", "-3.5", "1E-4", "1.000000001"]
KEYS = ["NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "BITPIX", "PCOUNT", "GCOUNT", "TFIELDS", "COEFF0", "COEFF1",
        "EXTNAME", "VACUUM", "PLATEID", "MJD", "FIBERID", "OBSID", "TELESCOP", "BSCALE", "BZERO", "BLANK",
        "THEAP", "TTYPE1", "TTYPE2", "TTYPE3", "TFORM1", "TFORM2", "TFORM3", "TFORM4", "TDIM1", "TDIM2",
        "TDIM3", "TZERO1", "TSCAL1", "TSCAL3", "TNULL4", "TZERO4", "XTENSION", "SIMPLE", "EXTEND", "CRVAL1"]
CARD_OPS = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 30), st.integers(0, 10**6), st.sampled_from(NASTY_VALUES)),
    st.tuples(st.just("setkey"), st.integers(0, 30), st.sampled_from(KEYS), st.sampled_from(NASTY_VALUES)),
    st.tuples(st.just("rename"), st.integers(0, 30), st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(st.just("delete"), st.integers(0, 30), st.integers(0, 10**6)),
    st.tuples(st.just("insert"), st.integers(0, 30), st.sampled_from(KEYS), st.sampled_from(NASTY_VALUES)),
)


def _cards(data: bytes, span) -> list[int]:
    """Offsets of the cards of one header, up to and including END."""
    start, end = span
    out = []
    for pos in range(start, end, 80):
        out.append(pos)
        if data[pos:pos + 8] == b"END     ":
            break
    return out


def _card(key: str, value: str) -> bytes:
    return f"{key:<8}= {value:>20}".ljust(80)[:80].encode("ascii")


def edit_cards(data: bytes, ops, key: str) -> bytes:
    if key not in _SPANS:
        _SPANS[key] = _header_spans(data)
    spans = _SPANS[key]
    b = bytearray(data)
    if not spans:
        return data
    for op in ops:
        span = spans[op[1] % len(spans)]
        cards = _cards(b, span)
        body = cards[:-1] if b[cards[-1]:cards[-1] + 3] == b"END" else cards
        if op[0] == "set" and body:
            pos = body[op[2] % len(body)]
            k = b[pos:pos + 8].decode("ascii", "replace").strip() or "COMMENT"
            b[pos:pos + 80] = _card(k, op[3])
        elif op[0] == "setkey":
            hit = [p for p in body if b[p:p + 8].decode("ascii", "replace").strip() == op[2]]
            if hit:
                b[hit[0]:hit[0] + 80] = _card(op[2], op[3])
        elif op[0] == "rename" and body:
            src, dst = body[op[2] % len(body)], body[op[3] % len(body)]
            b[dst:dst + 8] = b[src:src + 8]  # duplicates a keyword (e.g. two TTYPE = 'FLUX' columns)
        elif op[0] == "delete" and body:
            pos = body[op[2] % len(body)]
            b[pos:pos + 80] = b" " * 80
        elif op[0] == "insert":
            end = cards[-1]
            if b[end:end + 3] == b"END" and end + 80 < span[1]:
                b[end:end + 80] = _card(op[2], op[3])
                b[end + 80:end + 160] = b"END".ljust(80)
    return bytes(b)


@pytest.mark.parametrize("source", ["synthetic", "real"])
@given(data=st.data())
@fuzz(ci=50, long=2000)
def test_fuzz_header_cards(request, work, source, data):
    """NAXIS/TFORM/TTYPE/COEFF1/EXTNAME... set to 0, negative, huge, NaN, strings; keywords duplicated, removed, added."""
    bases = {k: v for k, v in _bases(request, source).items() if ".fits" in k}
    name = data.draw(st.sampled_from(sorted(bases)), label="base")
    ops = data.draw(st.lists(CARD_OPS, min_size=1, max_size=3), label="ops")
    raw, gz = _raw(bases[name])
    path = _write(work, name, edit_cards(raw, ops, str(bases[name])), gz)
    read_contract(path, f"cards/{source}")


# --- gzip damage --------------------------------------------------------------------------------------
GZ_OPS = st.one_of(
    st.tuples(st.just("truncate"), FRAC),
    st.tuples(st.just("flip"), FRAC, st.integers(0, 7)),
    st.tuples(st.just("flip_header"), st.integers(0, 9), st.integers(0, 7)),
    st.tuples(st.just("flip_trailer"), st.integers(1, 8), st.integers(0, 7)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("second_member"), st.binary(max_size=64)),
    st.tuples(st.just("empty_member")),
    st.tuples(st.just("gzip_of_garbage"), st.binary(max_size=200)),
)


def mutate_gzip(gz: bytes, op) -> bytes:
    b = bytearray(gz)
    kind = op[0]
    if kind == "truncate":
        del b[int(op[1] * len(b)):]
    elif kind == "flip" and b:
        b[int(op[1] * len(b))] ^= 1 << op[2]
    elif kind == "flip_header" and op[1] < len(b):
        b[op[1]] ^= 1 << op[2]
    elif kind == "flip_trailer" and op[1] <= len(b):
        b[-op[1]] ^= 1 << op[2]
    elif kind == "append":
        b += op[1]
    elif kind == "second_member":
        b += gzip.compress(op[1], mtime=0)
    elif kind == "empty_member":
        return gzip.compress(b"", mtime=0)
    elif kind == "gzip_of_garbage":
        return gzip.compress(op[1], mtime=0)
    return bytes(b)


@pytest.mark.parametrize("source", ["synthetic", "real"])
@given(data=st.data())
@fuzz(ci=40, long=1000)
def test_fuzz_gzip(request, work, source, data):
    """Truncated and corrupted gzip streams (data, header, CRC/size trailer), trailing garbage, extra members."""
    bases = {k: v for k, v in _bases(request, source).items() if k.endswith(".gz")}
    name = data.draw(st.sampled_from(sorted(bases)), label="base")
    ops = data.draw(st.lists(GZ_OPS, min_size=1, max_size=2), label="ops")
    gz = bases[name].read_bytes()
    for op in ops:
        gz = mutate_gzip(gz, op)
    path = work / name
    path.write_bytes(gz)
    read_contract(path, f"gzip/{source}")


# --- structural mutations of FITS files (astropy in memory) -------------------------------------------
BAD_VALUES = [np.nan, np.inf, -np.inf, 1e38, -1e38, 3.4e38, 1e300, 0.0, -1.0, -1e-30, 1e-45]
DTYPES = ["str", "int16", "int32", "int64", "uint8", "bool", "float16", "float64", ">f8", "2d", "3col", "complex"]


_MINIMAL_PRIMARY = None


def _minimal_primary() -> bytes:
    global _MINIMAL_PRIMARY
    if _MINIMAL_PRIMARY is None:
        buf = io.BytesIO()
        fits.PrimaryHDU().writeto(buf)
        _MINIMAL_PRIMARY = buf.getvalue()
    return _MINIMAL_PRIMARY


_HEADERS: dict[bytes, fits.Header] = {}


def _block_header(block: bytes) -> fits.Header:
    if block not in _HEADERS:
        if len(_HEADERS) > 512:
            _HEADERS.clear()
        end = next(k for k in range(0, len(block), 80) if block[k:k + 8] == b"END     ")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _HEADERS[block] = fits.Header.fromstring(block[:end + 80].decode("ascii"))
    return _HEADERS[block]


class LazyHDUs:
    """A FITS file as a list of HDUs that are parsed only when an edit touches them.

    Untouched HDUs stay raw bytes and are written back as they were: mutating one column of a file
    with a 200-column SPECOBJ table must not cost rebuilding that table.
    """

    _SPLIT: dict[str, list[bytes]] = {}

    def __init__(self, path: Path):
        key = str(path)
        if key not in self._SPLIT:
            raw, _ = _raw(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(io.BytesIO(raw), memmap=False) as h:
                    spans = [h.fileinfo(i) for i in range(len(h))]
            blocks = []
            for k, fi in enumerate(spans):
                end = spans[k + 1]["hdrLoc"] if k + 1 < len(spans) else len(raw)
                blocks.append(raw[fi["hdrLoc"]:end])
            self._SPLIT[key] = blocks
        self.items = list(self._SPLIT[key])

    def __len__(self):
        return len(self.items)

    def header(self, i):
        item = self.items[i]
        return _block_header(item) if isinstance(item, bytes) else item.header

    def name(self, i) -> str:
        return "PRIMARY" if i == 0 else str(self.header(i).get("EXTNAME", "")).strip().upper()

    def kind(self, i) -> str:
        return "IMAGE" if i == 0 else str(self.header(i).get("XTENSION", "")).strip().upper()

    def shape(self, i) -> tuple:
        h = self.header(i)
        try:
            return tuple(int(h[f"NAXIS{k}"]) for k in range(int(h.get("NAXIS", 0)), 0, -1))
        except (KeyError, ValueError, TypeError):
            return ()

    def has_data(self, i) -> bool:
        shape = self.shape(i)
        return bool(shape) and all(n > 0 for n in shape)

    def columns(self, i) -> set[str]:
        h = self.header(i)
        return {str(h[k]).strip().upper() for k in h if k.startswith("TTYPE")}

    def __getitem__(self, i):
        item = self.items[i]
        if isinstance(item, bytes):
            buf = item if i == 0 else _minimal_primary() + item
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(io.BytesIO(buf), memmap=False) as h:
                    hdu = h[0 if i == 0 else 1]
                    hdu.data  # load it before the buffer closes
            self.items[i] = item = hdu
        return item

    def __setitem__(self, i, hdu):
        self.items[i] = hdu

    def tobytes(self) -> bytes:
        out = []
        for i, item in enumerate(self.items):
            if isinstance(item, bytes):
                out.append(item)
                continue
            buf = io.BytesIO()
            if i == 0:
                hdu = item if isinstance(item, fits.PrimaryHDU) else fits.PrimaryHDU(getattr(item, "data", None))
                fits.HDUList([hdu]).writeto(buf, output_verify="silentfix")
                out.append(buf.getvalue())
            else:
                hdu = item if not isinstance(item, fits.PrimaryHDU) else fits.ImageHDU(item.data, item.header)
                fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf, output_verify="silentfix")
                out.append(buf.getvalue()[len(_minimal_primary()):])
        return b"".join(out)


def _retype(col: np.ndarray, how: str) -> np.ndarray:
    col = np.asarray(col)
    if how == "str":
        return col.astype(str)
    if how == "2d":
        return np.stack([col, col], axis=-1)
    if how == "3col":
        return np.stack([col, col, col], axis=-1)
    if how == "complex":
        return col.astype(np.complex64)
    with np.errstate(all="ignore"):
        return np.nan_to_num(col).astype(how) if np.dtype(how).kind in "iub" else col.astype(how)


def _inject(arr: np.ndarray, where: float, length: int, value: float) -> np.ndarray:
    arr = np.array(arr, copy=True)
    if arr.size == 0 or arr.dtype.kind not in "fiu":
        return arr
    flat = arr.reshape(-1)
    start = int(where * flat.size)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = value if arr.dtype.kind == "f" else (0 if not np.isfinite(value) else np.clip(value, -2**31, 2**31 - 1))
        flat[start:start + length] = np.asarray(v).astype(arr.dtype)
    return arr


def _disorder(wave: np.ndarray, how: str, where: float) -> np.ndarray:
    w = np.array(wave, copy=True)
    if w.size == 0:
        return w
    i = int(where * (w.shape[-1] - 1)) if w.shape[-1] > 1 else 0
    if how == "reverse":
        return w[..., ::-1].copy()
    if how == "swap" and w.shape[-1] > 1:
        j = min(i + 1, w.shape[-1] - 1) if i + 1 < w.shape[-1] else i - 1
        w[..., [i, j]] = w[..., [j, i]]
    elif how == "repeat" and w.shape[-1] > 1:
        w[..., min(i + 1, w.shape[-1] - 1)] = w[..., i]
    elif how == "constant":
        w[...] = w[..., :1]
    elif how == "shuffle":
        w = w[..., np.random.default_rng(i).permutation(w.shape[-1])]
    elif how == "zero":
        w[..., i] = 0
    elif how == "negative":
        w = -w
    elif how == "nan":
        w[..., i] = np.nan
    elif how == "huge":
        w[..., i:] = 1e38 if w.dtype.kind == "f" else w[..., i:]
    return w


TABLE_OPS = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 20)),
    st.tuples(st.just("dtype"), st.integers(0, 20), st.sampled_from(DTYPES)),
    st.tuples(st.just("rows"), st.sampled_from([0, 1, 2, 3]), FRAC),
    st.tuples(st.just("values"), st.integers(0, 20), FRAC, st.integers(1, 5000), st.sampled_from(BAD_VALUES)),
    st.tuples(st.just("wave"), st.sampled_from(["reverse", "swap", "repeat", "constant", "shuffle", "zero",
                                                "negative", "nan", "huge"]), FRAC),
    st.tuples(st.just("allmask")),
    st.tuples(st.just("zero_ivar")),
    st.tuples(st.just("lower")),
    st.tuples(st.just("loglam_scale"), st.sampled_from([0.0, -1.0, 100.0, 1e-3, 1e6])),
    st.tuples(st.just("header"), st.sampled_from(["PLATEID", "MJD", "FIBERID", "VACUUM", "PLUG_RA", "OBSID",
                                                  "LMJD", "RA", "TELESCOP", "COEFF0", "COEFF1"]),
              st.sampled_from(["abc", "", -1, 2**40, 1e300, np.nan, True, False, "F", 0, 1.5])),
)

HDU_OPS = st.one_of(
    st.tuples(st.just("remove"), st.integers(1, 30)),
    st.tuples(st.just("swap"), st.integers(1, 30), st.integers(1, 30)),
    st.tuples(st.just("duplicate"), st.integers(1, 30)),
    st.tuples(st.just("empty_image"), st.integers(1, 30)),
    st.tuples(st.just("as_image"), st.integers(1, 30)),
    st.tuples(st.just("primary_data"), st.sampled_from(["1d", "2d", "3d", "empty"])),
    st.tuples(st.just("permute"), st.integers(0, 2**32 - 1)),
)


def _table_hdu_index(hdus: LazyHDUs) -> int | None:
    for i in range(1, len(hdus)):
        if hdus.kind(i) == "BINTABLE" and hdus.has_data(i) and hdus.columns(i) & {"FLUX", "LOGLAM", "WAVELENGTH"}:
            return i
    return None


def _set_primary_card(hdus, key, value):
    """Set a primary-header card; a value astropy refuses leaves the header as it was."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            hdus[0].header[key] = value
        except (ValueError, TypeError):
            pass


def apply_table_ops(hdus, ops):
    """Column-level edits of the spectrum table (SDSS spec HDU1, LAMOST COADD) and primary-header edits."""
    ti = _table_hdu_index(hdus)
    for op in ops:
        kind = op[0]
        if kind == "header":
            _set_primary_card(hdus, op[1], op[2])
            continue
        if ti is None:
            continue
        t = Table(hdus[ti].data, masked=False)
        names = t.colnames
        wname = next((n for n in names if n.upper() in ("LOGLAM", "WAVELENGTH")), None)
        if kind == "drop" and len(names) > 1:
            t.remove_column(names[op[1] % len(names)])
        elif kind == "dtype":
            n = names[op[1] % len(names)]
            t.replace_column(n, _retype(t[n], op[2]))
        elif kind == "rows":
            if op[1] == 0:
                t = t[:0]
            elif len(t) > 1 or op[1] == 1:
                start = int(op[2] * max(len(t) - op[1], 0))
                t = t[start:start + op[1]]
            else:  # a one-row table (LAMOST COADD): shorten its vectors instead
                for n in names:
                    if t[n].ndim == 2:
                        t.replace_column(n, t[n][:, :op[1]])
        elif kind == "values":
            n = names[op[1] % len(names)]
            t.replace_column(n, _inject(t[n], op[2], op[3], op[4]))
        elif kind == "wave" and wname:
            t.replace_column(wname, _disorder(t[wname], op[1], op[2]))
        elif kind == "allmask":
            for n in names:
                if "MASK" in n.upper() and "OR" not in n.upper():
                    t[n] = np.ones_like(t[n])
        elif kind == "zero_ivar":
            for n in names:
                if n.upper() == "IVAR":
                    t[n] = np.zeros_like(t[n])
        elif kind == "lower":
            for n in names:
                t.rename_column(n, n.lower())
        elif kind == "loglam_scale" and wname:
            t.replace_column(wname, np.asarray(t[wname], np.float64) * op[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdus[ti] = fits.BinTableHDU(t, header=_keep_name(hdus[ti]))
    return hdus


def _keep_name(hdu):
    h = fits.Header()
    if hdu.name and hdu.name != "PRIMARY":
        h["EXTNAME"] = hdu.name
    return h


def apply_hdu_ops(hdus: LazyHDUs, ops):
    items = hdus.items
    for op in ops:
        kind, n = op[0], len(items)
        if kind == "remove" and n > 1:
            del items[1 + (op[1] - 1) % (n - 1)]
        elif kind == "swap" and n > 2:
            i, j = 1 + (op[1] - 1) % (n - 1), 1 + (op[2] - 1) % (n - 1)
            items[i], items[j] = items[j], items[i]
        elif kind == "duplicate" and n > 1:
            i = 1 + (op[1] - 1) % (n - 1)
            items.insert(i, items[i] if isinstance(items[i], bytes) else items[i].copy())
        elif kind == "empty_image" and n > 1:
            i = 1 + (op[1] - 1) % (n - 1)
            items[i] = fits.ImageHDU(name=hdus.name(i) or None)
        elif kind == "as_image" and n > 1:
            i = 1 + (op[1] - 1) % (n - 1)
            if hdus.kind(i) == "BINTABLE" and hdus.has_data(i):
                h = hdus[i]
                raw = np.frombuffer(h.data.tobytes(), np.uint8)
                raw = raw[: 4 * (raw.size // 4)]
                items[i] = fits.ImageHDU(raw.view(">f4").reshape(1, -1), name=hdus.name(i) or None)
        elif kind == "primary_data":
            shape = {"1d": (7,), "2d": (5, 9), "3d": (2, 3, 4), "empty": (0,)}[op[1]]
            items[0] = fits.PrimaryHDU(np.ones(shape, np.float32), header=hdus[0].header)
        elif kind == "permute" and n > 2:
            rest = items[1:]
            order = np.random.default_rng(op[1]).permutation(len(rest))
            items[1:] = [rest[k] for k in order]
    return hdus


def _apply(apply, base: Path, ops) -> LazyHDUs:
    """Apply mutations; a combination numpy or astropy cannot express (e.g. reversing a text column
    that an earlier op made of a float one) is not an input: hypothesis draws another."""
    from hypothesis import reject

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return apply(LazyHDUs(base), ops)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        note(f"mutation not applicable: {type(exc).__name__}: {exc}")
        reject()


def _write_hdus(work: Path, name: str, hdus: LazyHDUs, gz: bool) -> Path | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = hdus.tobytes()
    except Exception as exc:  # astropy refuses to write some combinations: not an input we can test
        note(f"astropy cannot write this mutation: {exc}")
        return None
    return _write(work, name, data, gz)


def _hdu_case(work, data, bases: dict, ops_strategy, apply, target: str):
    """Draw a base file and 1-3 HDU-level mutations, write the result and check the read contract."""
    name = data.draw(st.sampled_from(sorted(bases)), label="base")
    ops = data.draw(st.lists(ops_strategy, min_size=1, max_size=3), label="ops")
    path = _write_hdus(work, name, _apply(apply, bases[name], ops), name.endswith(".gz"))
    if path is not None:
        read_contract(path, target)


@pytest.mark.parametrize("source", ["synthetic", "real"])
@given(data=st.data())
@fuzz(ci=50, long=1000)
def test_fuzz_table_columns(request, work, source, data):
    """SDSS spec (HDU1) and LAMOST COADD tables: columns removed, retyped (strings, ints, 2-D), rows cut to 0/1/2,
    NaN/inf/huge/negative values, all masked, unsorted or repeated wavelengths, header values of the wrong type."""
    bases = {k: v for k, v in _bases(request, source).items()
             if k.startswith("spec-") and "image" not in k and "_dr7" not in k}
    _hdu_case(work, data, bases, TABLE_OPS, apply_table_ops, f"table/{source}")


@pytest.mark.parametrize("source", ["synthetic", "real"])
@given(data=st.data())
@fuzz(ci=40, long=1000)
def test_fuzz_hdu_order(request, work, source, data):
    """HDUs removed, swapped, duplicated (two HDUs of one name), emptied, turned into images; data in the primary."""
    bases = {k: v for k, v in _bases(request, source).items() if ".fits" in k}
    _hdu_case(work, data, bases, HDU_OPS, apply_hdu_ops, f"hdus/{source}")


# image-based formats: spPlate, DESI arms, LAMOST old layout
IMAGE_OPS = st.one_of(
    st.tuples(st.just("reshape"), st.integers(0, 40), st.sampled_from(["T", "row-1", "col-1", "col+1", "1d", "3d",
                                                                       "row0", "col0", "scalar", "1pix"])),
    st.tuples(st.just("values"), st.integers(0, 40), FRAC, st.integers(1, 5000), st.sampled_from(BAD_VALUES)),
    st.tuples(st.just("dtype"), st.integers(0, 40), st.sampled_from(["int16", "int32", "uint8", "float64",
                                                                     "int64", ">f8"])),
    st.tuples(st.just("wave"), st.sampled_from(["reverse", "swap", "repeat", "constant", "shuffle", "zero",
                                                "negative", "nan", "huge", "2d"]), st.integers(0, 2), FRAC),
    st.tuples(st.just("allmask")),
    st.tuples(st.just("header"), st.sampled_from(["COEFF0", "COEFF1", "PLATEID", "MJD", "VACUUM", "OBSID", "NAXIS2",
                                                  "TILEID", "NIGHT", "SPGRP"]),
              st.sampled_from(["abc", "", -1, 2**40, 1e300, -1e-4, 0, 0.0, np.nan, True, False, 1e-300, 400.0])),
    st.tuples(st.just("plugmap"), st.sampled_from(["row-1", "row+1", "rows0", "drop_fiberid", "fiberid_str",
                                                   "fiberid_2d", "objtype_int", "thing_id_float", "ra_str"])),
    st.tuples(st.just("fibermap"), st.sampled_from(["row-1", "row+1", "rows0", "targetid_str", "targetid_float",
                                                    "col_2d", "as_image", "clash", "ra_str", "dup_case"])),
)


def _set_data(hdu, a):
    try:
        hdu.data = a
    except (TypeError, ValueError, KeyError) as exc:  # astropy cannot hold it (0-D, bool...): leave it
        note(f"astropy cannot hold this array: {exc}")


def _image_indices(hdus: LazyHDUs) -> list[int]:
    return [i for i in range(len(hdus)) if hdus.kind(i) == "IMAGE" and hdus.has_data(i)]


def _reshape(a: np.ndarray, how: str) -> np.ndarray:
    if how == "T":
        return a.T.copy()
    if how == "row-1":
        return a[:-1].copy() if a.ndim >= 1 else a
    if how == "row0":
        return a[:0].copy() if a.ndim >= 1 else a
    if how == "col-1":
        return a[..., :-1].copy() if a.ndim >= 1 else a
    if how == "col0":
        return a[..., :0].copy() if a.ndim >= 1 else a
    if how == "col+1":
        return np.concatenate([a, a[..., -1:]], axis=-1) if a.ndim >= 1 else a
    if how == "1d":
        return a.reshape(-1)[: a.shape[-1]].copy() if a.ndim >= 1 else a
    if how == "3d":
        return a[None].copy()
    if how == "scalar":
        return np.asarray(a.reshape(-1)[:1]).reshape(())
    if how == "1pix":
        return a[..., :1].copy() if a.ndim >= 1 else a
    return a


def _find_wave(hdus: LazyHDUs, k: int):
    """(hdu index, kind) of the k-th wavelength source: a *_WAVELENGTH image, or the LAMOST image's row 2."""
    names = [i for i in range(len(hdus)) if hdus.name(i).endswith("WAVELENGTH") and hdus.has_data(i)]
    if names:
        return names[k % len(names)], "image"
    shape = hdus.shape(0)
    if len(shape) == 2 and shape[0] in (3, 5):
        return 0, "row2"
    return None, None


def apply_image_ops(hdus: LazyHDUs, ops):
    for op in ops:
        kind = op[0]
        imgs = _image_indices(hdus)
        if kind == "reshape" and imgs:
            i = imgs[op[1] % len(imgs)]
            _set_data(hdus[i], _reshape(np.asarray(hdus[i].data), op[2]))
        elif kind == "values" and imgs:
            i = imgs[op[1] % len(imgs)]
            _set_data(hdus[i], _inject(np.asarray(hdus[i].data), op[2], op[3], op[4]))
        elif kind == "dtype" and imgs:
            i = imgs[op[1] % len(imgs)]
            with np.errstate(all="ignore"):
                hdus[i].data = np.nan_to_num(np.asarray(hdus[i].data)).astype(op[2])
        elif kind == "wave":
            i, how = _find_wave(hdus, op[2])
            if i is None:
                # spPlate: a disordered grid can only be said through COEFF1
                if op[1] in ("reverse", "negative"):
                    hdus[0].header["COEFF1"] = -abs(float(hdus[0].header.get("COEFF1", 1e-4)))
                elif op[1] in ("constant", "repeat"):
                    hdus[0].header["COEFF1"] = 0.0
                continue
            a = np.array(hdus[i].data, dtype=np.float64)
            if how == "row2":
                if op[1] != "2d":
                    a[2] = _disorder(a[2], op[1], op[3])
            elif op[1] == "2d":
                a = np.stack([a, a])
            else:
                a = _disorder(a, op[1], op[3])
            hdus[i].data = a
        elif kind == "allmask":
            for i in range(1, len(hdus)):
                nm = hdus.name(i)
                if nm.endswith("MASK") and not nm.startswith("OR") and hdus.has_data(i):
                    _set_data(hdus[i], np.ones_like(hdus[i].data))
            if len(hdus.shape(0)) == 2 and hdus.shape(0)[0] == 5:
                hdus[0].data[3] = 1
        elif kind == "header":
            _set_primary_card(hdus, op[1], op[2])
        elif kind in ("plugmap", "fibermap"):
            i = next((k for k in range(1, len(hdus)) if hdus.kind(k) == "BINTABLE"
                      and hdus.name(k) in ("PLUGMAP", "FIBERMAP")), None)
            if i is None and kind == "plugmap":
                i = 5 if len(hdus) > 5 and hdus.kind(5) == "BINTABLE" else None
            if i is None:
                continue
            t = Table(hdus[i].data, masked=False)
            how = op[1]
            if how == "row-1":
                t = t[:-1]
            elif how == "row+1":
                t = Table(np.concatenate([t.as_array(), t.as_array()[-1:]]))
            elif how == "rows0":
                t = t[:0]
            elif how == "drop_fiberid" and "FIBERID" in t.colnames:
                t.remove_column("FIBERID")
            elif how == "fiberid_str" and "FIBERID" in t.colnames:
                t.replace_column("FIBERID", np.array([f"x{v}" for v in t["FIBERID"]]))
            elif how in ("fiberid_2d", "col_2d"):
                c = "FIBERID" if "FIBERID" in t.colnames else t.colnames[-1]
                t.replace_column(c, np.stack([t[c], t[c]], axis=-1))
            elif how == "objtype_int" and "OBJTYPE" in t.colnames:
                t.replace_column("OBJTYPE", np.arange(len(t)))
            elif how == "thing_id_float" and "THING_ID" in t.colnames:
                t.replace_column("THING_ID", np.full(len(t), np.nan))
            elif how == "ra_str":
                for c in ("RA", "TARGET_RA"):
                    if c in t.colnames:
                        t.replace_column(c, np.array(["ra"] * len(t)))
            elif how == "targetid_str" and "TARGETID" in t.colnames:
                t.replace_column("TARGETID", np.array(["t%d" % k for k in range(len(t))]))
            elif how == "targetid_float" and "TARGETID" in t.colnames:
                t.replace_column("TARGETID", np.full(len(t), np.inf))
            elif how == "clash":
                for c in ("SURVEY", "INDEX", "ZWARN", "ERROR", "SOURCE", "FORMAT"):
                    t[c] = np.arange(len(t))
            elif how == "dup_case":
                t[t.colnames[0].lower()] = t[t.colnames[0]]
            elif how == "as_image":
                hdus[i] = fits.ImageHDU(np.zeros((len(t), 3), np.float32), name=hdus[i].name)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hdus[i] = fits.BinTableHDU(t, header=_keep_name(hdus[i]))
    return hdus


@pytest.mark.parametrize("source", ["synthetic", "real"])
@given(data=st.data())
@fuzz(ci=40, long=1000)
def test_fuzz_image_formats(request, work, source, data):
    """spPlate, DESI coadd/spectra and LAMOST image files: arrays reshaped/transposed/cut to 0 or 1 pixel,
    NaN/inf/huge values, other dtypes, disordered wavelengths, COEFF1 = 0, plug map and FIBERMAP edits."""
    bases = {k: v for k, v in _bases(request, source).items()
             if k.startswith(("spPlate", "coadd", "spectra")) or "image" in k or "_dr7" in k}
    _hdu_case(work, data, bases, IMAGE_OPS, apply_image_ops, f"image/{source}")


# --- generic HDF5 / NPZ / text -------------------------------------------------------------------------
SHAPES = ["n", "n+1", "n-1", "0", "1", "scalar", "k,n", "1,n", "k,n+1", "n,k", "k,n,2", "k+1,n"]
GDTYPES = ["f8", "f4", "f2", "i4", "u1", "bool", "S5", "U3", "c16"]
FILLS = ["normal", "increasing", "reverse", "repeat", "constant", "nan", "inf", "huge", "negative", "zero"]
WAVE_KEYS = ["wave", "WAVE", "wavelength", "lambda", "lam", "loglam"]
IVAR_KEYS = ["ivar", "IVAR", "inverse_variance", "error", "err", "sigma", "noise", "flux_err"]


@st.composite
def generic_plans(draw):
    n = draw(st.integers(1, 40))
    k = draw(st.integers(1, 4))
    arrays = {}
    for role, keys in (("wave", WAVE_KEYS), ("flux", ["flux", "FLUX"]), ("ivar", IVAR_KEYS)):
        if draw(st.integers(0, 19)) == 0:
            continue  # missing
        name = draw(st.sampled_from(keys))
        arrays[name] = (role, draw(st.sampled_from(SHAPES)) if draw(st.booleans()) else ("n" if role == "wave" else
                        draw(st.sampled_from(["n", "k,n"]))),
                        draw(st.sampled_from(GDTYPES)) if draw(st.integers(0, 3)) == 0 else "f8",
                        draw(st.sampled_from(FILLS)) if draw(st.booleans()) else
                        ("increasing" if role == "wave" else "normal"))
    if draw(st.booleans()):
        arrays["mask"] = ("mask", draw(st.sampled_from(SHAPES)), draw(st.sampled_from(["u1", "bool", "f4", "S5"])),
                          draw(st.sampled_from(["zero", "normal", "constant"])))
    if draw(st.integers(0, 3)) == 0:
        arrays[draw(st.sampled_from(["WAVE", "Flux", "ivar"]))] = ("dup", "n", "f8", "normal")
    air = draw(st.sampled_from([None, None, True, False, "yes", "maybe", "array"]))
    return n, k, arrays, air


def _shape(spec: str, n: int, k: int):
    return {"n": (n,), "n+1": (n + 1,), "n-1": (max(n - 1, 0),), "0": (0,), "1": (1,), "scalar": (),
            "k,n": (k, n), "1,n": (1, n), "k,n+1": (k, n + 1), "n,k": (n, k), "k,n,2": (k, n, 2),
            "k+1,n": (k + 1, n)}[spec]


def _fill(role, shape, fill, dtype, seed):
    r = np.random.default_rng(seed)
    size = int(np.prod(shape)) if shape else 1
    last = shape[-1] if shape else 1
    base = {"normal": r.normal(1, 1, size), "zero": np.zeros(size), "constant": np.full(size, 5000.0),
            "nan": np.where(r.random(size) < 0.3, np.nan, 3.0), "inf": np.where(r.random(size) < 0.3, np.inf, 3.0),
            "huge": np.full(size, 1e300), "negative": -np.abs(r.normal(4000, 10, size))}.get(fill)
    if base is None:
        row = 3600.0 + 7.0 * np.arange(last)
        if role == "wave" and fill in ("increasing", "reverse", "repeat") and False:
            pass
        row = {"increasing": row, "reverse": row[::-1], "repeat": np.repeat(row[::2], 2)[:last]}[fill]
        base = np.broadcast_to(row, shape if shape else (1,)).reshape(-1) if size else np.zeros(0)
    a = np.asarray(base).reshape(shape)
    if role == "wave" and fill in ("normal",):
        a = 3600 + 100 * np.abs(a)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dtype in ("S5", "U3"):
            return a.astype(dtype)
        if np.dtype(dtype).kind in "iub":
            return np.nan_to_num(a, posinf=0, neginf=0).astype(dtype)
        return a.astype(dtype)


def write_generic_plan(path: Path, plan) -> None:
    n, k, arrays, air = plan
    data = {}
    for idx, (name, (role, shape, dtype, fill)) in enumerate(arrays.items()):
        data[name] = _fill(role, _shape(shape, n, k), fill, dtype, idx)
    if air is not None:
        data["air"] = np.arange(3) if air == "array" else np.asarray(air)
    path = str(path)
    if path.endswith(".npz"):
        with open(path, "wb") as f:
            np.savez(f, **data)
    else:
        import h5py

        with h5py.File(path, "w") as f:
            for name, v in data.items():
                if v.dtype.kind == "U":  # HDF5 stores bytes
                    v = np.char.encode(v, "ascii")
                if name == "air":
                    f.attrs["air"] = v
                else:
                    f.create_dataset(name, data=v)


@pytest.mark.parametrize("ext", ["h5", "npz"])
@given(plan=generic_plans())
@fuzz(ci=80, long=2000)
def test_fuzz_generic_arrays(work, ext, plan):
    """HDF5/NPZ: arrays missing, of every shape (0-D, 0 or 1 pixel, mismatched, transposed, 3-D) and dtype
    (ints, bools, strings, complex), NaN/inf/huge/negative values, disordered wavelengths, odd ``air`` flags."""
    pytest.importorskip("h5py") if ext == "h5" else None
    path = work / f"generic-fuzz.{ext}"
    write_generic_plan(path, plan)
    read_contract(path, f"generic/{ext}")


CELLS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**30, 10**30).map(str),
                  st.sampled_from(["", "nan", "NaN", "inf", "-inf", "abc", "1e400", "--", "True", '"5"', "1,2"]))
HEADERS = st.lists(st.sampled_from(["wave", "wavelength", "loglam", "flux", "FLUX", "ivar", "error", "mask", "x",
                                    "wave", "flux"]), min_size=0, max_size=6)


VALID_HEADERS = [["wave", "flux", "ivar"], ["wavelength", "flux", "error"], ["loglam", "flux", "ivar", "mask"],
                 ["lambda", "FLUX", "sigma"], ["wave", "flux", "ivar", "flux"]]


@st.composite
def text_plans(draw):
    header = draw(st.sampled_from(VALID_HEADERS)) if draw(st.booleans()) else draw(HEADERS)
    ncol = len(header) if header else draw(st.integers(1, 5))
    nrow = draw(st.integers(0, 30))
    good = draw(st.booleans())
    rows = []
    for i in range(nrow):
        if good and draw(st.integers(0, 5)):
            w = 3600.0 + 10 * i * draw(st.sampled_from([1, 1, 1, 1, 1, -1, 0]))
            first = repr(np.log10(w) if header and header[0] == "loglam" else w)
            row = [first, "1.5", "4.0", "0", "2", "3"][:ncol]
        else:
            row = [draw(CELLS) for _ in range(ncol + draw(st.sampled_from([0, 0, 0, -1, 1])))]
        rows.append(row)
    sep = draw(st.sampled_from([",", " ", "\t"]))
    comment = draw(st.booleans())
    return header, rows, sep, comment


@given(plan=text_plans())
@fuzz(ci=80, long=2000)
def test_fuzz_generic_text(work, plan):
    """CSV/whitespace tables: duplicated, missing or odd column names, ragged rows, text and NaN cells, no rows."""
    header, rows, sep, comment = plan
    lines = []
    if header:
        lines.append(("# " if comment else "") + sep.join(header))
    lines += [sep.join(r) for r in rows]
    path = work / "generic-fuzz.csv"
    path.write_text("\n".join(lines) + "\n")
    read_contract(path, "generic/text")


# --- batch assembly -----------------------------------------------------------------------------------
@st.composite
def spectra_batches(draw):
    """A valid Spectra: 1-3 spectra of 1-40 pixels on an SDSS-like log lattice, a linear grid or per-spectrum grids."""
    nspec = draw(st.integers(1, 3))
    npix = draw(st.integers(1, 40))
    kind = draw(st.sampled_from(["lattice", "lattice", "linear", "random", "per-spectrum"]))
    if kind == "lattice":
        start = draw(st.integers(3500, 3700))
        wave = 10 ** ((start + np.arange(npix)) * 1e-4 + 3.0)
    elif kind == "linear":
        wave = draw(st.floats(3000, 9000)) + draw(st.floats(0.1, 5)) * np.arange(npix)
    elif kind == "random":
        steps = draw(st.lists(st.floats(1e-3, 100), min_size=npix, max_size=npix))
        wave = 3000 + np.cumsum(steps)
    else:
        wave = np.stack([draw(st.floats(3000, 9000)) + (1 + i) * np.arange(npix) for i in range(nspec)])
    values = st.sampled_from([0.0, 1.0, -3.0, 1e38, np.nan, np.inf])
    flux = np.array(draw(st.lists(values, min_size=nspec * npix, max_size=nspec * npix))).reshape(nspec, npix)
    ivar = np.array(draw(st.lists(values, min_size=nspec * npix, max_size=nspec * npix))).reshape(nspec, npix)
    meta = Table()
    extra = draw(st.sampled_from([None, "int", "str", "float", "2d", "bool"]))
    if extra:
        col = {"int": np.arange(nspec), "str": np.array(["a"] * nspec), "float": np.ones(nspec) * 0.5,
               "2d": np.ones((nspec, draw(st.integers(1, 3)))), "bool": np.ones(nspec, bool)}[extra]
        meta["EXTRA"] = col
        meta["TARGETID"] = np.arange(nspec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Spectra(wave, flux, ivar, meta=meta if len(meta.colnames) else None)


@given(batches=st.lists(st.one_of(spectra_batches(), st.just("placeholder"), st.just("empty")), min_size=1,
                        max_size=6))
@fuzz(ci=120, long=5000)
def test_fuzz_concatenate(batches):
    """Spectra.concatenate of any valid batches (1-pixel spectra, per-spectrum grids, conflicting metadata
    column types, placeholders, empty batches) never raises and keeps every row."""
    batches = [Spectra.placeholder("bad.fits", "unreadable") if b == "placeholder" else
               Spectra.empty() if b == "empty" else b for b in batches]
    STATS["concatenate"]["cases"] += 1
    if EXPLORE:
        try:
            _check_concatenate(batches)
        except Exception as exc:
            STATS["concatenate"][_failure_class(exc)] += 1
        return
    _check_concatenate(batches)


def _check_concatenate(batches):
    out = Spectra.concatenate(batches)
    assert out.nspec == sum(b.nspec for b in batches)
    if out.nspec:
        check_spectra(out)
        # every spectrum's good pixels are where they were, at the same wavelengths
        row = 0
        for b in batches:
            for i in range(b.nspec):
                good = b.weights[i] > 0
                w_in = b.wave_of(i)[good]
                w_out = out.wave_of(row)
                idx = np.searchsorted(w_out, w_in * (1 - 1e-12))
                assert np.all(idx < w_out.size)
                np.testing.assert_allclose(w_out[idx], w_in, rtol=1e-9)
                np.testing.assert_array_equal(out.flux[row, idx], b.flux[i, good])
                np.testing.assert_array_equal(out.weights[row, idx], b.weights[i, good])
                assert out.weights[row].astype(bool).sum() == good.sum()
                row += 1
    STATS["concatenate"]["ok"] += 1


# --- catalogs -----------------------------------------------------------------------------------------
def synth_catalogs(d: Path) -> dict[str, Path]:
    out = {}
    n = 6
    t = Table({"THING_ID": np.arange(n, dtype=np.int32) + 1, "PLATE": np.full(n, 3655, np.int32),
               "MJD": np.full(n, 55240, np.int32), "FIBERID": np.arange(n, dtype=np.int32) + 1,
               "CLASS_PERSON": np.array([3, 30, 1, 4, 0, 7], np.int16), "Z_VI": np.linspace(0, 3, n),
               "Z_CONF_PERSON": np.array([3, 3, 3, 2, 0, 1], np.int16), "BAL_FLAG_VI": np.zeros(n, np.int16),
               "BI_CIV": np.zeros(n)})
    out["dr12q.fits"] = d / "dr12q.fits"
    t.write(out["dr12q.fits"])
    sp = Table({"PLATE": np.full(n, 3655, np.int32), "MJD": np.full(n, 55240, np.int32),
                "FIBERID": np.arange(n, dtype=np.int32) + 1, "CLASS": ["QSO", "STAR", "GALAXY", "QSO", "", "CV"],
                "SUBCLASS": [""] * n, "Z": np.linspace(0, 3, n), "ZWARNING": np.zeros(n, np.int32),
                "THING_ID": np.arange(n) + 1})
    out["spAll-synth.fits"] = d / "spAll-synth.fits"
    sp.write(out["spAll-synth.fits"])
    rr = Table({"TARGETID": np.arange(n, dtype=np.int64) + 39627000000000, "Z": np.linspace(0, 3, n),
                "ZWARN": np.zeros(n, np.int64), "SPECTYPE": ["QSO", "GALAXY", "STAR", "QSO", "QSO", "GALAXY"],
                "SUBTYPE": [""] * n})
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(rr, name="REDSHIFTS")])
    out["redrock-synth.fits"] = d / "redrock-synth.fits"
    hdus.writeto(out["redrock-synth.fits"])
    out["labels.csv"] = d / "labels.csv"
    Table({"PLATE": sp["PLATE"], "MJD": sp["MJD"], "FIBERID": sp["FIBERID"], "CLASS": sp["CLASS"],
           "Z": sp["Z"]}).write(out["labels.csv"], format="ascii.csv")
    return out


@pytest.fixture(scope="module")
def catalog_bases(request, tmp_path_factory):
    out = synth_catalogs(tmp_path_factory.mktemp("catalogs"))
    return out


@pytest.fixture(scope="module")
def real_catalogs(real_dir):
    out = {p.name: p for p in sorted((real_dir / "catalogs").glob("*.fits*"))}
    out.update({p.name: p for p in sorted((real_dir / "desi").glob("redrock-*.fits"))})
    out["labels.csv"] = real_dir / "boss" / "labels.csv"
    return out


CATALOG_OPS = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(["PLATE", "MJD", "FIBERID", "Z", "CLASS", "TARGETID", "THING_ID",
                                                "ZWARNING", "ZWARN", "SPECTYPE", "CLASS_PERSON", "Z_VI", "BI_CIV"])),
    st.tuples(st.just("retype"), st.sampled_from(["PLATE", "MJD", "FIBERID", "Z", "CLASS", "TARGETID", "THING_ID",
                                                  "ZWARNING", "ZWARN", "SPECTYPE", "CLASS_PERSON", "Z_VI",
                                                  "BI_CIV", "Z_CONF", "Z_CONF_PERSON", "BAL_FLAG_VI"]),
              st.sampled_from(["str", "2d", "float_nan", "float_inf", "bool", "int8", "huge"])),
    st.tuples(st.just("rows"), st.sampled_from([0, 1])),
    st.tuples(st.just("dup_case"), st.integers(0, 300)),
)


def apply_catalog_ops(hdus: LazyHDUs, ops):
    ti = next((i for i in range(1, len(hdus)) if hdus.kind(i) == "BINTABLE" and hdus.has_data(i)), None)
    if ti is None:
        return hdus
    t = Table(hdus[ti].data, masked=False)
    upper = {c.upper(): c for c in t.colnames}
    for op in ops:
        if op[0] == "drop" and op[1] in upper and len(t.colnames) > 1:
            t.remove_column(upper.pop(op[1]))
        elif op[0] == "retype" and op[1] in upper:
            c = upper[op[1]]
            col = np.asarray(t[c])
            how = op[2]
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if how == "str":
                    new = col.astype(str)
                elif how == "2d":
                    new = np.stack([col, col], axis=-1)
                elif how in ("float_nan", "float_inf"):
                    new = np.full(len(col), np.nan if how == "float_nan" else np.inf)
                elif how == "huge":
                    new = np.full(len(col), 2**62, np.int64)
                else:
                    new = np.zeros(len(col), how)
            t.replace_column(c, new)
        elif op[0] == "rows":
            t = t[:op[1]]
        elif op[0] == "dup_case" and t.colnames:
            c = t.colnames[op[1] % len(t.colnames)]
            if c.lower() != c and c.lower() not in t.colnames:
                t[c.lower()] = t[c]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hdus[ti] = fits.BinTableHDU(t, header=_keep_name(hdus[ti]))
    return hdus


def catalog_contract(path, target: str):
    """read_catalog returns the standard table (one row per catalog row) or raises a one-line CatalogError."""
    from redsift.errors import CatalogError
    from redsift.io.catalogs import read_catalog

    path = str(path)
    STATS[target]["cases"] += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = read_catalog(path)
    except CatalogError as exc:
        msg = str(exc)
        assert "\n" not in msg and msg.startswith(f"{path}: ") and exc.cause, msg
        STATS[target]["error: " + _outcome_class(exc.cause)] += 1
        if EXPLORE:
            import re

            STATS[target]["msg: " + re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", exc.cause)[:160]] += 1
        return None
    for name in ("TARGETID", "THING_ID", "CLASS", "SUBCLASS", "Z", "Z_CONF", "BAL_FLAG", "BI_CIV", "LABEL_SOURCE",
                 "ROW"):
        assert name in t.colnames and t[name].ndim == 1, name
    assert t["TARGETID"].dtype == np.int64 and t["Z_CONF"].dtype == np.int64 and t["BAL_FLAG"].dtype == np.int64
    assert set(np.unique(np.asarray(t["CLASS"]).astype(str))) <= {"QSO", "STAR", "GALAXY", "UNKNOWN"}
    assert np.all(np.isin(np.asarray(t["BAL_FLAG"]), [-1, 0, 1]))
    assert np.all(np.isin(np.asarray(t["Z_CONF"]), [-1, 0, 1, 2, 3]))
    assert len(t) == 0 or t["ROW"][-1] == len(t) - 1
    STATS[target]["read"] += 1
    return t


def _catalog_case(path, target):
    if not EXPLORE:
        return catalog_contract(path, target)
    try:
        return catalog_contract(path, target)
    except Exception as exc:
        STATS[target][_failure_class(exc)] += 1


@pytest.mark.parametrize("source", ["synthetic", "real"])
@given(data=st.data())
@fuzz(ci=25, long=500)
def test_fuzz_catalogs(request, work, source, data):
    """read_catalog: truncated/bit-flipped catalogs, key columns removed or retyped (text ids, NaN plates,
    2-D columns), no rows, duplicated column names."""
    bases = request.getfixturevalue("catalog_bases" if source == "synthetic" else "real_catalogs")
    name = data.draw(st.sampled_from(sorted(bases)), label="base")
    raw, gz = _raw(bases[name])
    if name.endswith(".csv") or data.draw(st.booleans(), label="bytes"):
        ops = data.draw(st.lists(BYTE_OPS, min_size=1, max_size=2), label="byte ops")
        path = _write(work, name, mutate_bytes(raw, ops, str(bases[name])), gz)
    else:
        ops = data.draw(st.lists(CATALOG_OPS, min_size=1, max_size=3), label="column ops")
        path = _write_hdus(work, name, _apply(apply_catalog_ops, bases[name], ops), gz)
    if path is not None:
        _catalog_case(path, f"catalog/{source}")


# --- a batch of broken files -------------------------------------------------------------------------
@given(data=st.data())
@fuzz(ci=15, long=300)
def test_fuzz_iter_read_flags_and_goes_on(synth, work, data):
    """iter_read(errors='flag') over a batch of mutated files never raises, yields one entry per file, and
    the batch concatenates (what ``redsift predict`` does) with an ERROR and ZWARN bits on each bad file."""
    names = data.draw(st.lists(st.sampled_from(sorted(synth)), min_size=1, max_size=6), label="bases")
    paths = []
    for k, name in enumerate(names):
        raw, gz = _raw(synth[name])
        ops = data.draw(st.lists(BYTE_OPS, max_size=2), label=f"ops{k}")
        sub = work / f"batch{k}"
        sub.mkdir(exist_ok=True)
        paths.append(_write(sub, name, mutate_bytes(raw, ops, str(synth[name])), gz))
    paths.append(work / "does-not-exist.fits")
    STATS["iter_read"]["cases"] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = list(iter_read(paths, errors="flag"))
    assert [p for p, _ in got] == [str(p) for p in paths]
    batch = Spectra.concatenate([s for _, s in got])
    check_spectra(batch)
    assert batch.nspec == sum(s.nspec for _, s in got)
    for _, s in got:
        if s.meta["INDEX"][0] == -1:
            assert s.meta["ERROR"][0] and s.meta["ZWARN"][0] & int(ZWarningMask.BAD_INPUT | ZWarningMask.NODATA)
    STATS["iter_read"]["ok"] += 1


def test_fuzz_profile_is_bounded():
    """The CI profile is small and derandomized; REDSIFT_FUZZ=long (or a number) selects random long runs."""
    expect = {"ci": 10, "long": 2000}.get(PROFILE) or int(PROFILE)
    assert fuzz(10, 2000).max_examples == expect and fuzz(10).derandomize == (PROFILE == "ci")
    assert fuzz(10).database is None and fuzz(10).deadline is None


# --- regression tests: one per failure class the fuzzing found (docs/robustness.md) -------------------
def _spec_file(path, edit=None, npix=50):
    synth_sdss_spec(path, npix=npix)
    if edit is not None:
        with fits.open(path, mode="update") as h:
            edit(h)
    return path


def test_one_pixel_spectrum_among_many_concatenates(tmp_path):
    """F1: a 1-pixel spectrum in a batch made Spectra.concatenate raise a numpy broadcast error, and
    `redsift predict` end with no catalog at all."""
    good = read_file(_spec_file(tmp_path / "spec-3655-55240-0054.fits"))
    one = tmp_path / "one.csv"
    one.write_text("wave,flux,ivar\n5000.0,1.0,1.0\n")
    batch = Spectra.concatenate([good, read_file(one), Spectra.placeholder("bad.fits", "unreadable"),
                                 Spectra(np.linspace(4000, 5000, 70), np.ones((2, 70)), np.ones((2, 70)))])
    check_spectra(batch)
    assert batch.nspec == 5 and not batch.shared_wave
    assert batch.wave[1, 0] == 5000.0 and batch.mask[1, 1:].all() and not batch.mask[1, 0]


def test_gzip_deflate_errors_are_spectrum_file_errors(tmp_path, synth):
    """F3: corrupt deflate data raised zlib.error, which escaped read_file and iter_read."""
    gz = bytearray(synth["spec-lamost-coadd.fits.gz"].read_bytes())
    for pos in range(20, min(len(gz) - 8, 400), 7):  # some of these flips give zlib.error
        bad = bytearray(gz)
        bad[pos] ^= 0x55
        p = tmp_path / "spec-bad.fits.gz"
        p.write_bytes(bytes(bad))
        try:
            read_file(p)
        except SpectrumFileError as exc:
            assert str(exc).startswith(f"{p}: ") and "\n" not in str(exc)
    p.write_bytes(bytes(gz) + b"garbage!")
    with pytest.raises(SpectrumFileError, match="other data after the end of the gzip stream"):
        read_file(p)
    p.write_bytes(bytes(gz) + b"\0" * 100)  # NUL padding after the stream is harmless
    assert read_file(p).nspec == 1


@pytest.mark.parametrize("how, expect", [
    ("reverse", "reversed"), ("swap", "are not sorted: .* at pixel"), ("repeat", "repeat: .* at pixels"),
    ("zero", "non-positive"), ("negative", "reversed-or-non-positive"),
])
def test_wavelength_order_policy(tmp_path, how, expect):
    """F4/F5: readers returned unsorted, repeated or non-positive wavelengths as they were.
    Now: increasing is kept, a file stored red to blue is reversed, anything else is a one-line error."""
    def edit(h):
        h[1].data["LOGLAM"] = _disorder(h[1].data["LOGLAM"], how, 0.5) if how != "zero" else \
            np.where(np.arange(50) == 10, -np.inf, h[1].data["LOGLAM"])

    p = _spec_file(tmp_path / "spec-3655-55240-0054.fits", edit)
    raw = fits.getdata(p, 1)
    if expect == "reversed":
        s = read_file(p)
        assert np.all(np.diff(s.wave) > 0)
        np.testing.assert_array_equal(s.flux[0], raw["FLUX"][::-1])
    elif how == "negative":  # -loglam: wavelengths 10**-3.58... are positive but decreasing: reversed too
        s = read_file(p)
        assert np.all(np.diff(s.wave) > 0)
    else:
        with pytest.raises(SpectrumFileError, match=expect):
            read_file(p)


def test_per_spectrum_wavelengths_flag_only_the_bad_spectrum(tmp_path):
    """A multi-spectrum file with its own wavelengths per spectrum: a spectrum with NaN or unsorted
    wavelengths gets its row, BAD_INPUT | NODATA and the reason; the others are read."""
    wave = np.tile(np.linspace(4000, 6000, 30), (4, 1))
    wave[1, 5] = np.nan
    wave[2, [7, 8]] = wave[2, [8, 7]]
    wave[3] = wave[3][::-1]
    flux = np.ones((4, 30)) * np.arange(30)
    p = tmp_path / "multi.npz"
    np.savez(p, wave=wave, flux=flux, ivar=np.ones((4, 30)))
    s = read_file(p)
    check_spectra(s)
    err = list(s.meta["ERROR"])
    assert err[0] == "" and err[3] == "" and "non-finite" in err[1] and "not sorted" in err[2]
    for r in (1, 2):
        assert set(describe_bits(s.meta["ZWARN"][r])) >= {"BAD_INPUT", "NODATA"}
    np.testing.assert_array_equal(s.flux[3], np.arange(30)[::-1])  # stored red to blue: reversed


def describe_bits(zwarn):
    from redsift.zwarning import describe

    return describe(zwarn)


def test_unparsable_ids_do_not_cost_the_spectrum(tmp_path):
    """F6/F7: PLATEID = 'abc' failed the whole file (int('abc')); a huge PLATE overflowed TARGETID."""
    def edit(h):
        h[0].header["PLATEID"] = "abc"
        h[0].header["PLUG_RA"] = "north"

    s = read_file(_spec_file(tmp_path / "spec-a.fits", edit))
    assert s.meta["PLATE"][0] == -1 and s.meta["TARGETID"][0] == -1 and np.isnan(s.meta["RA"][0])

    def edit2(h):
        h[0].header["PLATEID"] = 2**40

    s = read_file(_spec_file(tmp_path / "spec-b.fits", edit2))
    assert s.meta["TARGETID"][0] == -1


def test_duplicated_and_ambiguous_names_are_errors(tmp_path):
    """F9: two arrays 'flux' and 'FLUX' (or two FLUX columns) were resolved silently to one of them."""
    p = tmp_path / "dup.npz"
    np.savez(p, wave=np.arange(1.0, 11.0), flux=np.ones(10), FLUX=np.zeros(10), ivar=np.ones(10))
    with pytest.raises(SpectrumFileError, match="'FLUX' and 'flux' are both present|'flux' and 'FLUX' are both"):
        read_file(p)


def test_air_flag_must_be_a_boolean(tmp_path):
    """F8: an ``air`` entry 'maybe' was taken as True (bool('maybe')) and the wavelengths converted."""
    p = tmp_path / "air.npz"
    np.savez(p, wave=np.linspace(4000, 5000, 10), flux=np.ones(10), ivar=np.ones(10), air=np.array("maybe"))
    with pytest.raises(SpectrumFileError, match="air flag 'maybe' is not a boolean"):
        read_file(p)
    np.savez(p, wave=np.linspace(4000, 5000, 10), flux=np.ones(10), ivar=np.ones(10), air=np.array("yes"))
    assert read_file(p).meta["AIRTOVAC"][0]


def test_empty_text_cells_are_missing_not_zero(tmp_path):
    """F11: an empty flux cell of a CSV was read as 0 with full weight."""
    p = tmp_path / "holes.csv"
    p.write_text("wave,flux,ivar\n4000,1.0,1\n4001,,1\n4002,3.0,1\n")
    s = read_file(p)
    assert s.mask[0, 1] and s.ivar[0, 1] == 0 and not s.mask[0, [0, 2]].any()


def test_header_faults_are_named(tmp_path):
    """F12: a damaged header gave astropy's internals ('BITPIX', 'recformat', ...) as the cause."""
    p = _spec_file(tmp_path / "spec-h.fits")
    raw = bytearray(p.read_bytes())
    pos = raw.index(b"NAXIS2  =", 2880)
    raw[pos:pos + 80] = _card("NAXIS2", "'abc'")
    p.write_bytes(bytes(raw))
    with pytest.raises(SpectrumFileError, match=r"HDU 1: NAXIS2 = 'abc' is not a whole number"):
        read_file(p)


def test_metadata_columns_of_different_types_stack(tmp_path):
    """F13: concatenating batches whose metadata share a column name with different types (int and text,
    1-D and 2-D) raised astropy's TableMergeError."""
    a = Spectra(np.linspace(4000, 5000, 10), np.ones((1, 10)), np.ones((1, 10)), meta=Table({"TILEID": [5]}))
    b = Spectra(np.linspace(4000, 5000, 12), np.ones((1, 12)), np.ones((1, 12)), meta=Table({"TILEID": ["x"]}))
    c = Spectra(np.linspace(4000, 5000, 12), np.ones((1, 12)), np.ones((1, 12)),
                meta=Table({"TILEID": np.ones((1, 2))}))
    out = Spectra.concatenate([a, b, c])
    assert out.nspec == 3 and list(out.meta["TILEID"][:2]) == ["5", "x"]


def test_far_apart_lattice_does_not_make_a_huge_grid():
    """F14: two spectra on one log10 lattice but far apart made one shared grid spanning both."""
    a = Spectra(10 ** (3.6 + 1e-4 * np.arange(100)), np.ones((1, 100)), np.ones((1, 100)))
    b = Spectra(10 ** (7.6 + 1e-4 * np.arange(100)), np.ones((1, 100)), np.ones((1, 100)))
    out = Spectra.concatenate([a, b])
    assert out.npix == 100 and not out.shared_wave


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_is_refused_not_waited_on(tmp_path):
    """F15: a FIFO given as an input blocked read_file for ever (open() waits for a writer)."""
    p = tmp_path / "pipe.fits"
    os.mkfifo(p)
    with pytest.raises(SpectrumFileError, match="not a regular file"):
        read_file(p)


def test_iter_read_survives_a_reader_bug(tmp_path, monkeypatch):
    """F18: an exception that is not a SpectrumFileError (a bug in a reader) ended the whole batch."""
    from redsift.io import registry

    good = _spec_file(tmp_path / "spec-3655-55240-0054.fits")
    monkeypatch.setattr(registry, "read_file", lambda p, f=None: (_ for _ in ()).throw(RuntimeError("boom")))
    got = list(iter_read([good, good], errors="flag"))
    assert len(got) == 2 and all("RuntimeError: boom" in s.meta["ERROR"][0] for _, s in got)


@pytest.mark.parametrize("hdu, key, value", [
    (0, "NAXIS", "999999999"),  # astropy builds a billion-axis list
    (1, "TFIELDS", "999999999"),  # ... a billion columns
    (-1, "NAXIS1", "-2880"),  # astropy walks backwards through the file for ever
    (2, "BITPIX", "2"),  # the next header is looked for in the data, block by block
])
def test_header_values_that_hang_astropy_are_refused(synth, work, hdu, key, value):
    """F19: header values that made astropy loop for minutes (or for ever) while eating memory; found by
    the long header-card runs. Now refused before astropy opens the file, with the card named."""
    base = synth["coadd-synth.fits"]
    raw = base.read_bytes()
    spans = _header_spans(raw)
    span = spans[hdu % len(spans)]
    cards = _cards(raw, span)
    b = bytearray(raw)
    if key == "NAXIS" or key == "TFIELDS":  # a repeated card: astropy takes the last one
        end = cards[-1]
        b[end:end + 80] = _card(key, value)
        b[end + 80:end + 160] = b"END".ljust(80)
    else:
        pos = next(p for p in cards if b[p:p + 8].decode().strip() == key)
        b[pos:pos + 80] = _card(key, value)
    path = work / "coadd-hang.fits"
    path.write_bytes(bytes(b))
    with pytest.raises(SpectrumFileError, match=f"corrupt FITS header \\(HDU \\d+: {key} = {value}"):
        read_file(path)


def test_catalog_codes_out_of_range_are_unknown(tmp_path):
    """F20: a DR12Q catalog whose bytes shifted (one inserted byte) gave BAL_FLAG = 768 and Z_CONF = 512
    (found by the long catalog run). Codes outside their documented range are now -1 (unknown)."""
    from redsift.io.catalogs import read_catalog

    d = synth_catalogs(tmp_path)
    t = Table.read(d["dr12q.fits"])
    t["BAL_FLAG_VI"][0] = 768
    t["Z_CONF_PERSON"][1] = 512
    t.write(d["dr12q.fits"], overwrite=True)
    out = read_catalog(d["dr12q.fits"])
    assert out["BAL_FLAG"][0] == -1 and out["Z_CONF"][1] == -1 and out["Z_CONF"][0] == 3
