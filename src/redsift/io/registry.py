"""An I/O registry of identify/load pairs, so that ``read(path)`` finds the format.

Modelled on specutils' loader registry: each survey module registers one
:class:`Reader` per format with a cheap ``identify`` predicate and a ``load``
function. :func:`read` opens a file once, asks each reader in priority order
whether it recognises it, and loads it with the first that does.

Adding a format::

    from redsift.io.registry import register

    def identify(info):          # FileInfo -> bool, must be cheap
        return info.kind == "fits" and "MYFLUX" in info.columns(1)

    def load(info):              # FileInfo -> Spectra
        ...

    register("myformat", identify, load, survey="generic", description="...")
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import RedsiftError, SpectrumFileError, UnknownFormatError, oneline
from ..spectra import Spectra

__all__ = ["Reader", "FileInfo", "register", "readers", "identify_format", "read", "read_file",
           "iter_read", "expand_paths", "read_fast_batch"]

log = logging.getLogger(__name__)


@dataclass
class FileInfo:
    """What a reader's ``identify`` sees: the file's kind and, for FITS, its open HDU list.

    Attributes
    ----------
    path : str
    kind : {"fits", "hdf5", "npz", "text", "empty", "binary"}
    hdul : astropy.io.fits.HDUList or None
        Open HDU list (FITS only); closed by :func:`read_file` after loading.
    """

    path: str
    kind: str
    hdul: object = None
    _cols: dict = field(default_factory=dict)
    source: object = None  # what astropy opened: the path, or the decompressed bytes of a .gz

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def header(self):
        """Primary header (FITS) or None."""
        return self.hdul[0].header if self.hdul is not None else None

    def has_hdu(self, n: int) -> bool:
        """True when the file has at least ``n + 1`` HDUs (loads headers only up to HDU ``n``)."""
        if self.hdul is None:
            return False
        try:
            self.hdul[n]
            return True
        except (IndexError, KeyError):
            return False

    def hdu_name(self, n: int) -> str:
        return self.hdul[n].name.upper() if self.has_hdu(n) else ""

    def hdu_names(self) -> list[str]:
        return [h.name.upper() for h in self.hdul] if self.hdul is not None else []

    def columns(self, ext) -> list[str]:
        """Upper-case column names of table HDU ``ext`` ([] when absent or not a table)."""
        if self.hdul is None:
            return []
        if ext not in self._cols:
            try:
                hdu = self.hdul[ext]
                cols = getattr(hdu, "columns", None)
                self._cols[ext] = [c.upper() for c in cols.names] if cols is not None else []
            except (KeyError, IndexError):
                self._cols[ext] = []
        return self._cols[ext]


@dataclass(frozen=True)
class Reader:
    """One registered format."""

    name: str
    survey: str
    identify: Callable[[FileInfo], bool]
    load: Callable[[FileInfo], Spectra]
    description: str
    priority: int = 0


_READERS: dict[str, Reader] = {}


def register(name: str, identify: Callable[[FileInfo], bool], load: Callable[[FileInfo], Spectra],
             survey: str, description: str, priority: int = 0) -> Reader:
    """Register a reader; higher ``priority`` is asked first."""
    reader = Reader(name, survey, identify, load, description, priority)
    _READERS[name] = reader
    return reader


def readers() -> list[Reader]:
    """Registered readers in the order they are tried."""
    _load_builtin()
    return sorted(_READERS.values(), key=lambda r: -r.priority)


def _load_builtin():
    # importing the modules registers their readers
    from . import desi, generic, lamost, sdss, sdss_legacy  # noqa: F401


_FITS_MAGIC = b"SIMPLE  ="
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _sniff(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:2] == b"\x1f\x8b":  # look inside: the first bytes of the decompressed stream
            f.seek(0)
            try:
                head = zlib.decompressobj(wbits=31).decompress(f.read(1 << 16), 16)
            except zlib.error as exc:
                raise SpectrumFileError(path, f"truncated or corrupt gzip file ({_zlib_message(exc)})") from None
    if not head:
        return "empty"
    if head.startswith(_FITS_MAGIC):
        return "fits"
    if head.startswith(_HDF5_MAGIC):
        return "hdf5"
    if head[:4] == b"PK\x03\x04":
        return "npz"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "binary"


def _zlib_message(exc: zlib.error) -> str:
    text = str(exc).split(": ", 1)[-1]
    return {"incorrect data check": "CRC check failed", "incorrect length check": "length check failed",
            "incorrect header check": "damaged gzip header",
            "unknown compression method": "damaged gzip header (unknown compression method)",
            }.get(text, f"corrupt deflate data: {text}")


#: a gzip file may not expand beyond this (a "gzip bomb" must not take the machine's memory)
MAX_GUNZIP_BYTES = 4 * 2**30


def _gunzip(path: str) -> bytes:
    """The decompressed content of a gzip file, every member checked (CRC and length).

    Raises SpectrumFileError naming what is wrong: a stream cut short, corrupt deflate data, a failed
    check, data after the end of the stream (NUL padding is allowed), or a size beyond MAX_GUNZIP_BYTES.
    """
    with open(path, "rb") as f:
        raw = f.read()
    out = []
    total = 0
    rest = raw
    member = 0
    while rest:
        if member and rest[:2] != b"\x1f\x8b":
            if not rest.strip(b"\0"):
                break
            raise SpectrumFileError(path, f"truncated or corrupt gzip file ({len(rest)} bytes of other data "
                                          f"after the end of the gzip stream)")
        d = zlib.decompressobj(wbits=31)
        try:
            while True:
                chunk = d.decompress(rest, 64 * 2**20)
                total += len(chunk)
                if total > MAX_GUNZIP_BYTES:
                    raise SpectrumFileError(path, f"gzip file expands beyond {MAX_GUNZIP_BYTES / 2**30:.0f} GiB "
                                                  f"(redsift.io.registry.MAX_GUNZIP_BYTES)")
                out.append(chunk)
                rest = d.unconsumed_tail
                if d.eof or not rest:
                    break
        except zlib.error as exc:
            raise SpectrumFileError(path, f"truncated or corrupt gzip file ({_zlib_message(exc)})") from None
        if not d.eof:
            raise SpectrumFileError(path, "truncated or corrupt gzip file (the stream ends before its end marker)")
        rest = d.unused_data
        member += 1
    return b"".join(out)


def _fits_message(exc: BaseException) -> str:
    from ._util import reader_message

    return reader_message(exc)


_CARD_INT = re.compile(rb"(BITPIX|NAXIS\d{0,3}|PCOUNT|GCOUNT|TFIELDS) {0,7}= *([-+]?\d+) *(?=/| |$)")
_END_CARD = b"END" + b" " * 77
_SCAN_KEYS = (b"BITPIX", b"NAXIS", b"PCOUNT", b"GCOUNT", b"TFIELDS")


def _scan_fits(f) -> str | None:
    """Walk a FITS file's headers (reading only them) for values that would make astropy loop for ever.

    astropy trusts NAXIS and TFIELDS: ``NAXIS = 999999999`` makes it build a list of a billion axes (the
    file hangs the reader and eats memory). The standard caps both at 999. Returns the first such fault, or
    None. Other header faults are left to astropy, which reports them when (and only when) a reader
    touches that HDU.
    """
    pos, n = 0, 0
    while n < 10_000:
        f.seek(pos)
        vals: dict[bytes, list[int]] = {}
        blocks = []
        while True:
            block = f.read(2880)
            if len(block) < 2880:
                return None  # truncated or padding: astropy reports it
            blocks.append(block)
            k = block.find(_END_CARD)
            while k != -1 and k % 80:
                k = block.find(_END_CARD, k + 1)
            if k != -1:
                break
        nblocks = len(blocks)
        header = b"".join(blocks)
        for kw in _SCAN_KEYS:  # bytes.find runs in C: far faster than a regex over every card
            k = header.find(kw)
            while k != -1:
                if k % 80 == 0:
                    m = _CARD_INT.match(header, k, k + 80)
                    if m:
                        vals.setdefault(m.group(1), []).append(int(m.group(2)))
                k = header.find(kw, k + 1)
        for key in (b"NAXIS", b"TFIELDS"):
            bad = [v for v in vals.get(key, []) if not 0 <= v <= 999]
            if bad:
                return f"HDU {n}: {key.decode()} = {bad[0]} (the standard allows 0..999)"
        last = {k: v[-1] for k, v in vals.items()}  # astropy takes the last of repeated keywords
        naxis = last.get(b"NAXIS", 0)
        # negative sizes send astropy backwards through the file (it never ends); an odd BITPIX makes
        # it misjudge where the next header starts
        for key in [b"NAXIS%d" % i for i in range(1, naxis + 1)] + [b"PCOUNT", b"GCOUNT"]:
            if last.get(key, 0) < 0:
                return f"HDU {n}: {key.decode()} = {last[key]} is negative"
        if b"BITPIX" in last and last[b"BITPIX"] not in (8, 16, 32, 64, -32, -64):
            return f"HDU {n}: BITPIX = {last[b'BITPIX']} is not one of 8, 16, 32, 64, -32, -64"
        shape = [last.get(b"NAXIS%d" % i, -1) for i in range(1, naxis + 1)]
        bitpix = last.get(b"BITPIX", 0)
        if any(x < 0 for x in shape) or not bitpix:
            return None  # a size that is not a number: astropy refuses this HDU with a message of its own
        npix = 1
        for x in shape:
            npix *= x
        size = abs(bitpix) // 8 * max(last.get(b"GCOUNT", 1), 1) * (max(last.get(b"PCOUNT", 0), 0)
                                                                   + (npix if naxis else 0))
        pos += nblocks * 2880 + -(-size // 2880) * 2880
        n += 1
        f.seek(pos)
        head = f.read(80)
        if not head.startswith(b"XTENSION= "):
            # the end of the file, or NUL/blank padding up to it, is fine; anything else is not: astropy
            # would go through the rest of the file block by block looking for a header (minutes on a
            # large file, for ever with some values)
            chunk = head
            while chunk:
                if chunk.strip(b"\0 "):
                    return (f"HDU {n}: no XTENSION card where its header should start (byte {pos}; "
                            f"a damaged card, or sizes in HDU {n - 1}'s header that do not add up)")
                chunk = f.read(1 << 20)
            return None
    return None


def _open(path) -> FileInfo:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SpectrumFileError(path, "no such file")
    if os.path.isdir(path):
        raise SpectrumFileError(path, "is a directory, not a spectrum file")
    if not os.path.isfile(path):  # a FIFO or a device would block or never end
        raise SpectrumFileError(path, "not a regular file")
    try:
        kind = _sniff(path)
    except OSError as exc:
        raise SpectrumFileError(path, f"cannot open ({oneline(exc)})") from None
    info = FileInfo(path, kind)
    if kind == "fits":
        from astropy.io import fits

        source = path
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        if gzipped:  # astropy silently accepts a truncated gzip stream: decompress here and check
            source = io.BytesIO(_gunzip(path))
        try:
            if isinstance(source, io.BytesIO):
                fault = _scan_fits(source)
                source.seek(0)
            else:
                with open(path, "rb") as f:
                    fault = _scan_fits(f)
        except OSError as exc:
            raise SpectrumFileError(path, f"cannot open ({oneline(exc)})") from None
        if fault:
            raise SpectrumFileError(path, f"corrupt FITS header ({fault})")
        # HDUs are loaded lazily: readers touch only what they need, and truncation
        # of that part is caught by read_file
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hdul = fits.open(source, memmap=False)
                hdul[0]
        except Exception as exc:  # astropy raises OSError, ValueError, TypeError...
            problem = fits_problem(source.getvalue() if gzipped else path)
            raise SpectrumFileError(path, f"corrupt FITS file ({problem or _fits_message(exc)})") from None
        info.source = source
        info.hdul = hdul
    return info


def identify_format(info_or_path) -> Reader:
    """The reader that recognises a file (raises :class:`UnknownFormatError`)."""
    info = info_or_path if isinstance(info_or_path, FileInfo) else _open(info_or_path)
    if info.kind == "empty":
        raise UnknownFormatError(info.path, "empty file")
    errors = []
    for reader in readers():
        try:
            if reader.identify(info):
                return reader
        except Exception as exc:  # a broken file may upset a predicate
            log.debug("%s: identify(%s) failed: %s", info.path, reader.name, exc)
            errors.append(exc)
    if errors:
        problem = fits_problem(_fits_bytes(info)) if info.kind == "fits" else None
        if problem:
            raise SpectrumFileError(info.path, f"corrupt FITS header ({problem})")
        first = _fits_message(errors[0]) if info.kind == "fits" else oneline(errors[0])
        raise SpectrumFileError(info.path, f"corrupt or unreadable {info.kind} file ({first})")
    what = {"fits": "a FITS file of no known spectrum format",
            "hdf5": "an HDF5 file without wavelength/flux/ivar datasets",
            "npz": "an NPZ file without wavelength/flux/ivar arrays",
            "text": "a text file without wavelength/flux/ivar columns",
            "binary": "not a FITS, HDF5, NPZ or text file"}.get(info.kind, "unknown file type")
    raise UnknownFormatError(info.path, f"unrecognised format: {what}")


def read_file(path, format: str | None = None) -> Spectra:
    """Read every spectrum in one file.

    Parameters
    ----------
    path : str or Path
    format : str, optional
        Name of a registered reader (see ``redsift formats``); detected when omitted.

    Returns
    -------
    Spectra
        Valid whatever the file held: flux, ivar and mask 2-D of one shape, finite, positive and strictly
        increasing wavelengths (a file stored red to blue is reversed), one metadata row per spectrum. A
        spectrum of a multi-spectrum file whose own wavelengths are unusable keeps its row, flagged
        ``BAD_INPUT | NODATA`` with the reason in ``ERROR``.

    Raises
    ------
    SpectrumFileError
        With a one-line message naming the file and the cause; no other exception escapes for a bad file.
    RedsiftError
        For an unknown ``format`` name (a usage error, raised before the file is opened).
    """
    if format is not None:
        _load_builtin()
        if format not in _READERS:
            raise RedsiftError(f"unknown format {format!r}; known: {', '.join(sorted(_READERS))}")
    fast = _read_fast(path, format)
    if fast is not None:
        return fast
    info = _open(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reader = None
            try:
                reader = identify_format(info) if format is None else _READERS[format]
                spectra = reader.load(info)
                if not isinstance(spectra, Spectra):
                    raise TypeError(f"reader returned {type(spectra).__name__}, not Spectra")
                spectra = _conform(spectra)
            except SpectrumFileError as exc:
                trunc = _truncation(caught)
                if trunc:
                    raise SpectrumFileError(info.path, trunc) from exc
                if exc.path != info.path:
                    raise SpectrumFileError(info.path, exc.cause) from exc
                raise
            except Exception as exc:  # astropy, numpy, h5py... raise anything on a damaged file
                cause = _truncation(caught)
                if not cause and info.kind == "fits":
                    # a damaged header is the likely cause of most failures: say which card when it is
                    problem = fits_problem(_fits_bytes(info))
                    cause = f"corrupt FITS header ({problem})" if problem else None
                if not cause:
                    what = f"cannot read as {reader.name}" if reader is not None else f"unreadable {info.kind} file"
                    cause = f"{what} ({_fits_message(exc)})"  # KeyError 'x', TypeError...: named by type
                raise SpectrumFileError(info.path, cause) from exc
        trunc = _truncation(caught)
        if trunc:
            raise SpectrumFileError(info.path, trunc)
    finally:
        if info.hdul is not None:
            try:
                info.hdul.close()
            except Exception:  # closing a damaged file must not hide the real error
                pass
    meta = spectra.meta
    meta["SOURCE"] = np.array([info.path] * len(meta), dtype=str)
    meta["FORMAT"] = np.array([reader.name] * len(meta), dtype=str)
    if not np.any(np.asarray(meta["SURVEY"]).astype(str) != ""):
        meta["SURVEY"] = np.array([reader.survey] * len(meta), dtype=str)
    return spectra


#: Set False to read every file through astropy (the benchmark compares the two paths).
FAST_PATH = True


def fast_path_on() -> bool:
    """Whether the strict spec reader may be used at all: :data:`FAST_PATH`, and no reader registered from
    outside redsift that could claim a spec file before the built-in one (then astropy decides)."""
    if not FAST_PATH:
        return False
    _load_builtin()
    return all(r.load.__module__.startswith(__package__ + ".") for r in _READERS.values())


def fast_name(p: str) -> bool:
    """Whether file ``p`` is named as a spec file (``spec*.fits``), the files the strict reader tries."""
    return p.endswith(".fits") and os.path.basename(p).startswith("spec")


def read_fast_batch(paths) -> tuple[Spectra | None, np.ndarray]:
    """The plain SDSS/BOSS spec files among ``paths`` read by the strict reader into one :class:`Spectra`
    (rows in the order of the paths it took; per-spectrum wavelengths, each as :func:`read_file` gives it),
    and a boolean array saying which paths it took. The others (any other format, anything the strict reader
    does not expect, a wavelength array :func:`read_file` would refuse) are left to :func:`read_file`: every
    file gets the same spectra, flags and errors either way. The metadata table is built once per batch."""
    from ._util import wavelength_problem
    from .fastspec import read_spec_raw
    from .sdss import spec_batch, spec_wave

    ok = np.zeros(len(paths), bool)
    if not fast_path_on():
        return None, ok
    waves, cols, headers, tids, conv, srcs = [], [], [], [], [], []
    for i, path in enumerate(paths):
        p = os.fspath(path)
        try:
            if not fast_name(p):
                continue
            raw = read_spec_raw(p)
            if raw is None:
                continue
            loglam, flux, ivar, and_mask, header, thing_id = raw
            wave, converted = spec_wave(loglam, header)
            # fewer than two pixels or a wavelength array read_file would refuse: the general path decides
            if wave.size < 2 or wavelength_problem(wave) is not None:
                continue
        except Exception:  # noqa: BLE001 - anything unexpected: this file on its own, never the window
            continue
        ok[i] = True
        waves.append(wave)
        cols.append((np.array(flux), np.array(ivar), np.array(and_mask)))  # copies: the file's bytes are freed
        headers.append(header)
        tids.append(thing_id)
        conv.append(converted)
        srcs.append(p)
    if not ok.any():
        return None, ok
    try:
        spectra = spec_batch(waves, cols, headers, tids, conv)
    except (ValueError, TypeError, OverflowError):  # never seen: then every file on its own, as before
        return None, np.zeros(len(paths), bool)
    spectra.meta["SOURCE"] = np.array(srcs, dtype=str)
    spectra.meta["FORMAT"] = np.array(["sdss-spec"] * len(srcs), dtype=str)
    return spectra, ok


def desi_name(p: str) -> str | None:
    """The DESI format a file named ``coadd-*.fits`` / ``spectra-*.fits`` would be read as, else None."""
    base = os.path.basename(p)
    if not base.endswith(".fits"):
        return None
    return "desi-coadd" if base.startswith("coadd-") else "desi-spectra" if base.startswith("spectra-") else None


def spplate_name(p: str) -> bool:
    """Whether file ``p`` is named as a BOSS spPlate (``spPlate-*.fits``), the files the strict reader tries."""
    return p.endswith(".fits") and os.path.basename(p).startswith("spPlate-")


def _read_fast(path, format: str | None):
    """SDSS/BOSS spec files through :mod:`redsift.io.fastspec`, DESI coadd and spectra files through the
    strict DESI reader (:func:`redsift.io.desi.read_desi_strict`), spPlates through the strict spPlate
    reader (:func:`redsift.io.sdss.read_spplate_strict`); ``None``: use the general path."""
    p = os.fspath(path)
    desi = desi_name(p)
    if desi is not None and format in (None, desi) and fast_path_on():
        from .desi import read_desi_strict

        spectra, name = read_desi_strict(p), desi
    elif format in (None, "sdss-spplate") and spplate_name(p) and fast_path_on():
        from .sdss import read_spplate_strict

        spectra, name = read_spplate_strict(p), "sdss-spplate"
    elif format in (None, "sdss-spec") and fast_name(p) and fast_path_on():
        from .fastspec import read_spec_fast

        spectra, name = read_spec_fast(p), "sdss-spec"
    else:
        return None
    if spectra is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spectra = _conform(spectra)
    except Exception:  # whatever the general path would say about it, it says better
        return None
    spectra.set_column("SOURCE", np.full(len(spectra), p))
    spectra.set_column("FORMAT", np.full(len(spectra), name))
    return spectra


def _conform(s: Spectra) -> Spectra:
    """Check a reader's output against the Spectra contract and put its wavelengths in increasing order.

    Shared wavelengths that are stored in decreasing order are reversed (with the pixels); any other
    disorder, a repeated wavelength or a non-positive one raises ValueError naming the pixel. With
    per-spectrum wavelengths the same is done row by row, and a bad row is flagged rather than failing
    the file.
    """
    from ._util import wavelength_problem

    if s.flux.ndim != 2 or s.ivar.shape != s.flux.shape or s.mask.shape != s.flux.shape:
        raise ValueError(f"flux {s.flux.shape}, ivar {s.ivar.shape} and mask {s.mask.shape} disagree")
    if s.wave.shape not in ((s.npix,), s.flux.shape):
        raise ValueError(f"wavelengths {s.wave.shape} do not match flux {s.flux.shape}")
    if s.nspec == 0:
        raise ValueError("no spectra in the file")
    if s.npix == 0:
        raise ValueError("the spectra have no pixels")
    if s.meta_rows() != s.nspec:
        raise ValueError(f"{s.meta_rows()} metadata rows for {s.nspec} spectra")
    wave = s.wave
    if wave.ndim == 1:
        problem = wavelength_problem(wave)
        if problem is None:
            return s
        if _decreasing(wave[None, :])[0]:
            s.wave = wave[::-1].copy()
            s.flux, s.ivar, s.mask = (np.ascontiguousarray(a[:, ::-1]) for a in (s.flux, s.ivar, s.mask))
            return s
        raise ValueError(problem)
    ok = np.all(np.isfinite(wave), axis=1) & np.all(wave > 0, axis=1) & np.all(np.diff(wave, axis=1) > 0, axis=1)
    if ok.all():
        return s
    rev = ~ok & _decreasing(wave)
    if rev.any():
        w = np.array(wave, copy=True)
        w[rev] = w[rev, ::-1]
        s.wave = w
        for name in ("flux", "ivar", "mask"):
            a = np.array(getattr(s, name), copy=True)
            a[rev] = a[rev, ::-1]
            setattr(s, name, a)
    for r in np.flatnonzero(~ok & ~rev):
        s.flag_bad([r], wavelength_problem(wave[r], f"spectrum {r}: wavelengths"))
    return s


def _decreasing(wave: np.ndarray) -> np.ndarray:
    """Rows of ``wave`` (2-D) that are finite, positive and strictly decreasing."""
    if wave.shape[1] < 2:
        return np.zeros(wave.shape[0], bool)
    with np.errstate(invalid="ignore"):
        return (np.all(np.isfinite(wave), axis=1) & np.all(wave > 0, axis=1)
                & np.all(np.diff(wave, axis=1) < 0, axis=1))


def _fits_bytes(info: FileInfo) -> bytes | str:
    src = info.source
    return src.getvalue() if isinstance(src, io.BytesIO) else info.path


_BITPIX = {8, 16, 32, 64, -32, -64}
_TFORM_BYTES = {"L": 1, "X": 1 / 8, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16,
                "P": 8, "Q": 16}


def _card_value(text: str):
    """The value of one header card's value field: int, float, bool, str, or the raw text when unparsable."""
    v = text.split("/", 1)[0].strip() if not text.lstrip().startswith("'") else text.strip()
    if v.startswith("'"):
        end = v.find("'", 1)
        while end != -1 and v[end + 1:end + 2] == "'":
            end = v.find("'", end + 2)
        return v[1:end].rstrip() if end != -1 else v
    if v in ("T", "F"):
        return v == "T"
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v.replace("D", "E"))
    except ValueError:
        return v if v else None


def fits_problem(source) -> str | None:
    """The first structural fault of a FITS file's headers, in words, or None when none is found.

    Checks what astropy needs before it can read data: the first card of each HDU, BITPIX, NAXIS and
    NAXISn, PCOUNT and GCOUNT, TFIELDS and each TFORMn of a binary table (and that the TFORMs add up to
    NAXIS1), numeric BSCALE/BZERO/TSCALn/TZEROn, an END card, and data that ends inside the file.
    Used on the error path only, to name the cause of an astropy error.
    """
    import re

    try:
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        else:
            with open(source, "rb") as f:
                data = f.read()
    except OSError:
        return None
    pos, n = 0, 0
    while pos < len(data) and n < 1000:
        if not data[pos:].strip(b"\0 "):
            return None  # padding at the end
        cards = {}
        order = []
        end = None
        for k in range(pos, len(data), 80):
            raw = data[k:k + 80]
            if len(raw) < 80:
                return f"HDU {n}: header ends early (truncated file)"
            if any(b < 0x20 or b > 0x7E for b in raw):
                return f"HDU {n}: header card {(k - pos) // 80 + 1} holds bytes that are not printable ASCII"
            card = raw.decode("ascii")
            key = card[:8].strip()
            if key == "END":
                end = k
                break
            if card[8:10] == "= " and key:
                if key in cards and key in ("BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "TFIELDS") or \
                        re.fullmatch(r"NAXIS\d+|TFORM\d+|TTYPE\d+", key) and key in cards:
                    return f"HDU {n}: header card {key} appears twice"
                cards[key] = _card_value(card[10:])
                order.append(key)
        if end is None:
            return f"HDU {n}: header has no END card"
        first = order[0] if order else ""
        if n == 0 and first != "SIMPLE":
            return "primary header does not start with SIMPLE"
        if n > 0 and first != "XTENSION":
            return f"HDU {n}: header does not start with XTENSION"

        def whole(key, lo=0, hi=None, need=True):
            v = cards.get(key)
            if v is None and not need:
                return lo
            if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
                rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
                raise _Bad(f"HDU {n}: {key} = {_show(v)} is not a whole number {rng}" if key in cards
                           else f"HDU {n}: {key} is missing")
            return v

        try:
            bitpix = cards.get("BITPIX")
            if "BITPIX" not in cards:
                raise _Bad(f"HDU {n}: BITPIX is missing")
            if bitpix not in _BITPIX or isinstance(bitpix, bool):
                raise _Bad(f"HDU {n}: BITPIX = {_show(bitpix)} is not one of 8, 16, 32, 64, -32, -64")
            naxis = whole("NAXIS", 0, 999)
            shape = [whole(f"NAXIS{i}") for i in range(1, naxis + 1)]
            pcount = whole("PCOUNT", 0, need=n > 0)
            gcount = whole("GCOUNT", 1, need=False) if n > 0 else 1
            for key in cards:
                if re.fullmatch(r"BSCALE|BZERO|TSCAL\d+|TZERO\d+", key):
                    v = cards[key]
                    if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v or v in (float("inf"),
                                                                                                  float("-inf")):
                        raise _Bad(f"HDU {n}: {key} = {_show(v)} is not a finite number")
                    if key.startswith(("BSCALE", "TSCAL")) and v == 0:
                        raise _Bad(f"HDU {n}: {key} = 0")
            xt = str(cards.get("XTENSION", "")).strip().upper()
            if xt == "BINTABLE":
                if naxis != 2:
                    raise _Bad(f"HDU {n}: a binary table needs NAXIS = 2, not {naxis}")
                tfields = whole("TFIELDS", 0, 999)
                width = 0.0
                for i in range(1, tfields + 1):
                    form = cards.get(f"TFORM{i}")
                    m = re.fullmatch(r"\s*(\d*)([LXBIJKAEDCMPQ])(.*)", str(form)) if isinstance(form, str) else None
                    if m is None:
                        raise _Bad(f"HDU {n}: TFORM{i} = {_show(form)} is not a binary table format"
                                   if f"TFORM{i}" in cards else f"HDU {n}: TFORM{i} is missing")
                    name = cards.get(f"TTYPE{i}")
                    if f"TTYPE{i}" in cards and not isinstance(name, str):
                        raise _Bad(f"HDU {n}: TTYPE{i} = {_show(name)} is not a column name")
                    count = int(m.group(1)) if m.group(1) else 1
                    code = m.group(2)
                    width += (count * _TFORM_BYTES[code] if code not in "PQ" else (_TFORM_BYTES[code] if count else 0))
                width = int(np.ceil(width))
                if shape and shape[0] != width:
                    raise _Bad(f"HDU {n}: the columns' TFORMs take {width} bytes a row but NAXIS1 = {shape[0]}")
        except _Bad as bad:
            return str(bad)
        header_end = pos + ((end - pos) // 2880 + 1) * 2880
        if header_end > len(data):
            return f"HDU {n}: header ends early (truncated file)"
        size = abs(bitpix) // 8 * gcount * (pcount + (int(np.prod(shape, dtype=object)) if naxis else 0))
        if header_end + size > len(data):
            return f"HDU {n}: data ends early ({len(data) - header_end} of {size} bytes present; truncated file)"
        pos = header_end + -(-size // 2880) * 2880
        n += 1
    return None


class _Bad(Exception):
    pass


def _show(value) -> str:
    """A header value for a message: short, printable."""
    text = repr(value)
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text if len(text) <= 24 else text[:21] + "..."


def _truncation(caught) -> str | None:
    for w in caught:
        text = str(w.message)
        if "truncated" in text.lower():
            return "truncated FITS file (" + oneline(Exception(text)).rstrip(".") + ")"
    return None


def expand_paths(paths) -> list[str]:
    """A path, or a list of paths, with directories replaced by their files (sorted, hidden files skipped)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            out.extend(sorted(str(q) for q in Path(p).iterdir() if q.is_file() and not q.name.startswith(".")))
        else:
            out.append(p)
    return out


def iter_read(paths, format: str | None = None, errors: str = "flag") -> Iterable[tuple[str, Spectra]]:
    """Yield ``(path, spectra)`` for each file (directories are expanded, sorted).

    With ``errors="flag"``, a file that cannot be read yields a one-row
    placeholder (``NODATA | BAD_INPUT``, reason in ``ERROR``) and a warning
    is logged; with ``errors="raise"`` the first bad file raises.
    """
    if errors not in ("flag", "raise"):
        raise ValueError("errors must be 'flag' or 'raise'")
    if format is not None:
        _load_builtin()
        if format not in _READERS:
            raise RedsiftError(f"unknown format {format!r}; known: {', '.join(sorted(_READERS))}")
    for path in expand_paths(paths):
        try:
            yield path, read_file(path, format)
        except SpectrumFileError as exc:
            if errors == "raise":
                raise
            log.warning("%s", exc)
            yield path, Spectra.placeholder(path, exc.cause)
        except Exception as exc:  # a bug, not a bad file: still no batch is lost for it
            if errors == "raise":
                raise
            log.error("%s: unexpected error while reading: %s", path, oneline(exc), exc_info=True)
            yield path, Spectra.placeholder(path, f"unexpected error ({type(exc).__name__}: {oneline(exc)})")


def read(paths, format: str | None = None, errors: str = "raise") -> Spectra:
    """Read one file, several files or a directory into one :class:`Spectra` batch.

    Parameters
    ----------
    paths : str, Path or list of them
        Files (any registered format, mixed freely) or directories.
    format : str, optional
        Force one reader instead of detecting the format of each file.
    errors : {"raise", "flag"}
        ``"raise"`` (default) stops at the first unreadable file with a
        :class:`SpectrumFileError`; ``"flag"`` keeps going and gives each
        unreadable file a placeholder row flagged ``NODATA | BAD_INPUT``.

    Examples
    --------
    >>> import redsift
    >>> spectra = redsift.read(["spec-3655-55240-0054.fits", "coadd-1-80613.fits"])  # doctest: +SKIP
    """
    return Spectra.concatenate([s for _, s in iter_read(paths, format, errors)])
