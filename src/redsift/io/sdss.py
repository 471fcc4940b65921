"""SDSS-I/II and BOSS/eBOSS spectra: ``spec-PLATE-MJD-FIBER.fits`` and ``spPlate-PLATE-MJD.fits``.

spec files (SDSS DR8+ data model, full and lite): HDU1 is the coadd table
(``loglam``, ``flux``, ``ivar``, ``and_mask``, ...). Two vintages exist: the
DR8-era files name their HDUs (``COADD``, ``SPECOBJ``, ...) and use lower-case
columns; the DR16 files leave the HDUs unnamed and use upper-case columns. Both
are read the same way. HDU2 holds the pipeline's CLASS/Z and is not read
at all (labels never reach a model; ``THING_ID`` comes from catalogs at
ingestion).

spPlate files (BOSS data model): HDU0 is the flux image ``(nfiber, npix)``
with ``COEFF0``/``COEFF1`` giving ``log10(wave)``; HDU1 inverse variance;
HDU2 AND mask; HDU3 OR mask; HDU4 wavelength dispersion; HDU5 the plug map
(one row per fiber); HDU6 sky.

Wavelengths are vacuum (``VACUUM = T``); files that say otherwise are
converted and flagged ``AIRTOVAC``. Pixels with a non-zero AND mask are
masked, as QuasarNET does (``ivar * (AND_MASK == 0)``).
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..spectra import MetaColumns, Spectra, sdss_targetid
from ._util import atomic_path, float_column, getcol, int_column, numeric, safe_float, safe_int, scalar, to_vacuum
from .fastspec import StrictFits, _Fallback, read_strict
from .registry import FileInfo, register

__all__ = ["read_spec", "read_spplate", "write_spplate", "snap_loglam", "spec_spectra", "spec_batch", "spec_wave",
           "BOSS_FIRST_PLATE"]

#: BOSS plates are numbered from 3510 on; lower numbers are SDSS-I/II plates.
BOSS_FIRST_PLATE = 3510


def _survey(plate: int) -> str:
    return "boss" if int(plate) >= BOSS_FIRST_PLATE else "sdss"


def snap_loglam(loglam: np.ndarray) -> np.ndarray:
    """Rebuild an exact double-precision log10 grid from SDSS's float32 ``LOGLAM``.

    SDSS grids are ``COEFF0 + 1e-4 i`` with ``COEFF0`` on a 1e-4 lattice; the
    float32 column is off by up to ~2.4e-7. Snapping restores the exact grid,
    so that spectra from different files line up pixel for pixel. Columns that
    are not such a grid are returned unchanged (as float64).
    """
    loglam = np.asarray(loglam, np.float64)
    if loglam.size < 2:
        return loglam
    step = round(float(loglam[-1] - loglam[0]) / (loglam.size - 1), 8)
    exact = round(float(loglam[0]), 6) + step * np.arange(loglam.size)
    return exact if np.max(np.abs(exact - loglam)) < 1e-5 else loglam


# --- spec-PLATE-MJD-FIBER.fits ------------------------------------------------
def _identify_spec(info: FileInfo) -> bool:
    if info.kind != "fits" or not info.has_hdu(1):
        return False
    cols = info.columns(1)
    return {"LOGLAM", "FLUX", "IVAR"} <= set(cols)


def read_spec(info: FileInfo) -> Spectra:
    """Load one SDSS/BOSS spec file (either vintage, full or lite)."""
    hdr = info.header
    hdu = info.hdul[1]
    coadd = hdu.data
    if coadd is None or len(coadd) == 0:
        raise ValueError("HDU1 (COADD) has no rows")
    _unique_columns(coadd, "HDU1 (COADD)", ("LOGLAM", "FLUX", "IVAR", "AND_MASK"))
    loglam = numeric(getcol(coadd, "LOGLAM"), "column LOGLAM", ndim=1)
    flux = numeric(getcol(coadd, "FLUX"), "column FLUX", ndim=1)
    ivar = numeric(getcol(coadd, "IVAR"), "column IVAR", ndim=1)
    and_mask = numeric(getcol(coadd, "AND_MASK", default=np.zeros(len(coadd), np.int32)), "column AND_MASK", ndim=1)
    return spec_spectra(loglam, flux, ivar, and_mask, hdr, _thing_id(info))


def _spec_meta(headers, thing_ids, converted) -> Table:
    """The metadata rows of spec files from their primary headers (see :func:`spec_spectra`)."""
    plate = [safe_int(scalar(h, "PLATEID", "PLATE", default=-1)) for h in headers]
    mjd = [safe_int(scalar(h, "MJD", default=-1)) for h in headers]
    fiber = [safe_int(scalar(h, "FIBERID", "FIBER", default=-1)) for h in headers]
    return Table({
        "TARGETID": _targetids(plate, mjd, fiber),
        "SURVEY": [_survey(p) for p in plate],
        "INDEX": np.zeros(len(headers), np.int64),
        "AIRTOVAC": np.asarray(converted, bool),
        "PLATE": np.array(plate, np.int64),
        "MJD": np.array(mjd, np.int64),
        "FIBERID": np.array(fiber, np.int64),
        "RA": [safe_float(scalar(h, "PLUG_RA", "RA", default=np.nan)) for h in headers],
        "DEC": [safe_float(scalar(h, "PLUG_DEC", "DEC", default=np.nan)) for h in headers],
        "THING_ID": np.array(thing_ids, np.int64),
    })


def spec_wave(loglam, header) -> tuple[np.ndarray, bool]:
    """Vacuum wavelengths of a spec file's ``LOGLAM`` (snapped to the SDSS lattice) and whether they were
    converted from air."""
    with np.errstate(over="ignore", invalid="ignore"):
        return to_vacuum(10.0 ** snap_loglam(loglam), header)


def spec_spectra(loglam, flux, ivar, and_mask, header, thing_id: int) -> Spectra:
    """The :class:`Spectra` of one spec file from its HDU1 columns, its primary header (anything with ``in``,
    ``[]`` and ``get``: an astropy header or the fast reader's dict) and its ``THING_ID``."""
    wave, converted = spec_wave(loglam, header)
    return Spectra(wave, np.asarray(flux)[None, :], np.asarray(ivar)[None, :], (np.asarray(and_mask) != 0)[None, :],
                   _spec_meta([header], [thing_id], [converted]))


def spec_batch(waves, columns, headers, thing_ids, converted) -> Spectra:
    """Many spec files as one :class:`Spectra` with per-spectrum wavelengths (each row's own, bit for bit as
    :func:`spec_spectra` gives it, padded at the red end with ``ivar = 0`` and ``mask = True``): the metadata
    table and the checks made once per batch, not once per file (issue 20). ``columns``: ``(flux, ivar,
    and_mask)`` of each file."""
    from ..spectra import _extend

    n, npix = len(waves), max(w.size for w in waves)
    wave = np.empty((n, npix))
    flux = np.zeros((n, npix), np.float32)
    ivar = np.zeros((n, npix), np.float32)
    mask = np.ones((n, npix), bool)
    for i, (w, (f, iv, am)) in enumerate(zip(waves, columns)):
        k = w.size
        wave[i, :k] = w
        if k < npix:
            wave[i, k:] = _extend(w[None, :], npix - k)[0]
        with np.errstate(over="ignore", invalid="ignore"):
            flux[i, :k] = f
            ivar[i, :k] = iv
        mask[i, :k] = am != 0
    return Spectra(wave, flux, ivar, mask, _spec_meta(headers, thing_ids, converted))


#: Bytes per element of each FITS binary-table TFORM code (X, bits, is handled apart), by ASCII code.
_TFORM_BYTES = np.zeros(256, np.int64)
for _code, _size in {"L": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16, "X": 1}.items():
    _TFORM_BYTES[ord(_code)] = _size
_UPPER = np.arange(256, dtype=np.uint8)
_UPPER[ord("a"):ord("z") + 1] -= 32


#: place values of the digits of a repeat count: _PLACE[number of digits, position]
_PLACE = np.array([[10 ** (n - 1 - j) if j < n else 0 for j in range(19)] for n in range(20)], np.int64)


def _forms(cards: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(type letter as ASCII, repeat, bytes in a row)`` of TFORM cards (rows of 80 bytes): fixed-format
    strings of a repeat count and one fixed-width type letter (``'5A      '``, ``'E'``), or None when any is
    something else (heap descriptors, a malformed or long value)."""
    body = cards[:, 11:30]
    quote = body == 39  # '
    end = quote.argmax(axis=1)
    digit = (body >= 48) & (body <= 57)
    ndig = (~digit).argmax(axis=1)
    rows = np.arange(len(body))
    code = body[rows, ndig].astype(np.int64)
    j = np.arange(body.shape[1])[None, :]
    blank = (body == 32) | (j <= ndig[:, None]) | (j >= end[:, None])
    if (not (cards[:, 10] == 39).all() or not quote[rows, end].all() or (ndig >= end).any()
            or not blank.all() or not _TFORM_BYTES[code].all()):
        return None
    repeat = np.where(ndig > 0, ((body.astype(np.int64) - 48) * _PLACE[ndig]).sum(axis=1), 1)
    width = np.where(code == 88, -(-repeat // 8), repeat * _TFORM_BYTES[code])  # 88: X, bits
    return code, repeat, width


def _value(cards: np.ndarray, keys: np.ndarray, key: bytes):
    """The value text of the one card ``key`` (quotes or comment removed), None if absent or repeated."""
    hit = np.flatnonzero(keys == key.ljust(8))
    if hit.size != 1:
        return None
    v = cards[hit[0], 10:].tobytes().strip()
    return v[1:].split(b"'")[0].strip() if v.startswith(b"'") else v.split(b"/")[0].strip()


def thing_id_cell(head: bytes) -> tuple[int, str] | None:
    """Where ``THING_ID`` sits in a row of a binary table: ``(byte offset, big-endian dtype)`` from the
    table's header cards (``head``: its 80-byte cards before END), or None when the table has no usable
    one-element integer ``THING_ID`` column, a card it needs is repeated or not in the fixed format, or its
    cards do not add up to its row width.

    Run on every spec file (a 236-column table), so the cards are taken apart as arrays: the keywords, the
    TFORM indices and values and the TTYPE names of all cards at once."""
    ncard = len(head) // 80
    if ncard == 0:
        return None
    cards = np.frombuffer(head, np.uint8, count=ncard * 80).reshape(ncard, 80)
    cards = cards[cards[:, 8] == ord("=")]
    keys = np.ascontiguousarray(cards[:, :8]).view("S8").ravel()
    try:
        if _value(cards, keys, b"XTENSION") != b"BINTABLE" or int(_value(cards, keys, b"NAXIS2") or 0) < 1:
            return None
        nfields, width = int(_value(cards, keys, b"TFIELDS")), int(_value(cards, keys, b"NAXIS1"))
        isform = np.char.startswith(keys, b"TFORM")
        fnum = np.char.strip(np.ascontiguousarray(cards[isform, 5:8]).view("S3").ravel()).astype(np.int64)
    except (TypeError, ValueError):
        return None
    if fnum.size != nfields or not np.array_equal(np.sort(fnum), np.arange(1, nfields + 1)):
        return None  # a column without its TFORM, or one twice
    forms = _forms(cards[isform])
    if forms is None:
        return None
    # the TTYPE cards naming THING_ID (any case, blanks before the closing quote)
    types = cards[np.char.startswith(keys, b"TTYPE")]
    try:
        tnum = np.char.strip(np.ascontiguousarray(types[:, 5:8]).view("S3").ravel()).astype(np.int64)
    except ValueError:
        return None
    if np.unique(tnum).size != tnum.size:
        return None  # a column named twice
    name = _UPPER[types[:, 10:20]]
    after = types[:, 20:]
    first = np.argmax(after != ord(" "), axis=1)  # the first byte after the blanks: the closing quote
    rows = np.arange(len(after))
    second = after[rows, np.minimum(first + 1, after.shape[1] - 1)]  # after it: not a quote ('' escapes one)
    closed = (((name[:, 9] == ord("'")) & (after[:, 0] != ord("'")))
              | ((name[:, 9] == ord(" ")) & (after[rows, first] == ord("'")) & (second != ord("'"))))
    hit = np.flatnonzero((name[:, :9] == np.frombuffer(b"'THING_ID", np.uint8)).all(axis=1) & closed)
    if hit.size != 1:
        return None
    n = int(tnum[hit[0]])
    if not 1 <= n <= nfields:
        return None
    code, repeat, widths = (a[np.argsort(fnum)] for a in forms)
    if int(widths.sum()) != width or chr(code[n - 1]) not in ("J", "K") or repeat[n - 1] != 1:
        return None
    return int(widths[:n - 1].sum()), ">i8" if code[n - 1] == ord("K") else ">i4"


def _thing_id(info: FileInfo) -> int:
    """``THING_ID`` of a spec file: the id column of HDU2 (the spAll row), -1 when there is none.

    Ids only: HDU2 also holds the pipeline's class and redshift, which are never read. Only HDU2's header
    cards and the 8 bytes of the one cell are read: astropy's parse of that 236-column table costs
    ~135 ms per file, 17 times the rest of the read. Anything unexpected gives -1 (an id is never worth
    failing a spectrum for)."""

    try:
        h1 = info.hdul[1]
        start = h1._data_offset + -(-h1._data_size // 2880) * 2880  # HDU2's header follows HDU1's padded data
        with open(info.path, "rb") as f:
            if f.read(2) == b"\x1f\x8b":  # gzipped: the offsets are those of the stream; rare for spec files
                return -1
            f.seek(start)
            head = b""
            while True:  # header blocks up to the END card (checked at card boundaries)
                block = f.read(2880)
                if len(block) < 2880 or len(head) > 2880 * 200:
                    return -1
                head += block
                ends = [k for k in range(len(head) - 2880, len(head), 80) if head[k:k + 8] == b"END     "]
                if ends:
                    break
            data = f.tell()
            cell = thing_id_cell(head[:ends[0]])
            if cell is None:
                return -1
            f.seek(data + cell[0])
            raw = f.read(np.dtype(cell[1]).itemsize)
        return int(np.frombuffer(raw, cell[1])[0])
    except Exception:  # TypeError from a header value of the wrong type too: an id never costs the spectrum
        return -1


def _unique_columns(table, what: str, used) -> None:
    """ValueError when two columns of a table that the reader uses have one name (whatever the case): which
    one to read is unknown. Duplicates among the other columns do not matter."""
    names = [n.upper() for n in table.columns.names]
    dup = sorted({n for n in names if names.count(n) > 1} & set(used))
    if dup:
        raise ValueError(f"{what} has duplicated columns {', '.join(dup)}")


def _targetids(plate, mjd, fiber) -> np.ndarray:
    """sdss_targetid, or -1 where an id is unknown or too large for PLATE*1e9 + MJD*1e4 + FIBERID."""
    plate, mjd, fiber = (np.asarray(x, np.int64) for x in (plate, mjd, fiber))
    ok = (plate >= 0) & (plate < 9_000_000_000) & (mjd >= 0) & (mjd < 100_000) & (fiber >= 0) & (fiber < 10_000)
    return np.where(ok, sdss_targetid(np.where(ok, plate, 0), np.where(ok, mjd, 0), np.where(ok, fiber, 0)), -1)


# --- spPlate-PLATE-MJD.fits -------------------------------------------------------
def _identify_spplate(info: FileInfo) -> bool:
    if info.kind != "fits":
        return False
    h = info.header
    return (h.get("NAXIS") == 2 and "COEFF0" in h and "COEFF1" in h and ("PLATEID" in h or "PLATE" in h)
            and info.has_hdu(5) and info.hdul[5].is_image is False)


def _image(info: FileInfo, n: int, what: str) -> np.ndarray:
    """The data of image HDU ``n`` as a 2-D real array (ValueError naming ``what`` otherwise)."""
    hdu = info.hdul[n]
    if not hdu.is_image or hdu.data is None:
        raise ValueError(f"HDU{n} ({what}) is {'a table' if not hdu.is_image else 'empty'}, not an image")
    return numeric(hdu.data, f"HDU{n} ({what})", ndim=2)


class _PlateAstropy:
    """An spPlate as astropy opened it (the general path and the reference of the strict one)."""

    def __init__(self, info: FileInfo):
        self.info, self.header = info, info.header

    def image(self, n: int, what: str) -> np.ndarray:
        return _image(self.info, n, what)

    def nonzero(self, n: int, what: str) -> np.ndarray:
        return _image(self.info, n, what) != 0

    def plug(self) -> dict | None:
        plug = self.info.hdul[5].data
        if plug is None:
            return None
        _unique_columns(plug, "HDU5 (plug map)", _PLUG_USED)
        return {name: plug[name] for name in plug.columns.names}


#: the plug map's columns the reader uses (two of one name, whatever the case: which one is unknown)
_PLUG_USED = ("FIBERID", "THING_ID", "RA", "DEC", "OBJTYPE")
#: the primary-header cards the reader uses (duplicated: ambiguous, astropy decides)
_PLATE_CARDS = ("COEFF0", "COEFF1", "PLATEID", "PLATE", "MJD", "VACUUM")


class _PlateStrict:
    """An spPlate read without astropy (:class:`redsift.io.fastspec.StrictFits`): the primary header parsed for
    the cards used, the three images viewed where they lie, the plug map's columns copied out. Anything
    unusual goes to the astropy reader (:class:`redsift.io.fastspec._Fallback`)."""

    def __init__(self, path: str):
        self.fits = f = StrictFits(path, _PLATE_CARDS + ("TELESCOP",))
        try:
            if len(f.hdus) < 6 or f.header_value("NAXIS") != 2 or not f.is_table(5) \
                    or "LAMOST" in str(f.header_value("TELESCOP") or "").upper():
                raise _Fallback("not an spPlate layout")  # (a LAMOST file: its reader comes first)
        except BaseException:
            f.close()
            raise
        # the used cards' values as astropy gives them (what _read_spplate reads of a header)
        self.header = {k: v for k in _PLATE_CARDS if (v := f.header_value(k)) is not None}

    def image(self, n: int, what: str) -> np.ndarray:
        return numeric(self.fits.image(n, copy=True), f"HDU{n} ({what})", ndim=2)

    def nonzero(self, n: int, what: str) -> np.ndarray:
        return numeric(self.fits.image(n, nonzero=True), f"HDU{n} ({what})", ndim=2)

    def plug(self) -> dict:
        return self.fits.table(5)  # (a column name twice, in any case: StrictFits hands it to astropy, which words it)

    def close(self):
        self.fits.close()


def read_spplate(info: FileInfo) -> Spectra:
    """Load every fiber of a BOSS spPlate file."""
    return _read_spplate(_PlateAstropy(info))


def read_spplate_strict(path) -> Spectra | None:
    """An spPlate through :class:`_PlateStrict`, or ``None`` where astropy must read it (the same
    :class:`Spectra` either way, ``tests/test_fastspec.py``)."""
    return read_strict(_PlateStrict, _read_spplate, path)


def _read_spplate(src) -> Spectra:
    """The reader proper, on an spPlate seen through ``src`` (:class:`_PlateAstropy` or :class:`_PlateStrict`).
    The metadata goes to :class:`Spectra` as columns (the table is built when asked for)."""
    hdr = src.header
    flux = src.image(0, "flux")
    ivar = src.image(1, "inverse variance")
    and_mask = src.nonzero(2, "AND mask")  # (only whether a bit is set is kept)
    if ivar.shape != flux.shape or and_mask.shape != flux.shape:
        raise ValueError(f"flux {flux.shape}, ivar {ivar.shape} and AND mask {and_mask.shape} disagree")
    nfiber, npix = flux.shape
    coeff0, coeff1 = safe_float(hdr.get("COEFF0")), safe_float(hdr.get("COEFF1"))
    if not (np.isfinite(coeff0) and np.isfinite(coeff1)) or coeff1 == 0:
        raise ValueError(f"header COEFF0 = {hdr.get('COEFF0')!r}, COEFF1 = {hdr.get('COEFF1')!r} "
                         f"define no wavelength grid")
    with np.errstate(over="ignore", invalid="ignore"):
        wave, converted = to_vacuum(10.0 ** (coeff0 + coeff1 * np.arange(npix)), hdr)
    plug = src.plug()
    nplug = len(next(iter(plug.values()))) if plug else 0
    if nplug != nfiber:
        raise ValueError(f"plug map has {nplug} rows for {nfiber} fibers")
    plate = safe_int(scalar(hdr, "PLATEID", "PLATE", default=-1))
    mjd = safe_int(scalar(hdr, "MJD", default=-1))
    cm = {name.upper(): name for name in plug}
    # ids that cannot be parsed are unknown (-1): the spectra are still read
    fiber = (int_column(plug[cm["FIBERID"]], nfiber) if "FIBERID" in cm
             else np.arange(1, nfiber + 1, dtype=np.int64))
    meta = MetaColumns({
        "TARGETID": _targetids(np.full(nfiber, plate), np.full(nfiber, mjd), fiber),
        "SURVEY": np.full(nfiber, _survey(plate)),
        "INDEX": np.arange(nfiber, dtype=np.int64),
        "AIRTOVAC": np.full(nfiber, converted),
        "PLATE": np.full(nfiber, plate, np.int64),
        "MJD": np.full(nfiber, mjd, np.int64),
        "FIBERID": fiber,
    })
    if "THING_ID" in cm:
        meta["THING_ID"] = int_column(plug[cm["THING_ID"]], nfiber)
    for src_name, dst in (("RA", "RA"), ("DEC", "DEC")):
        if src_name in cm:
            meta[dst] = float_column(plug[cm[src_name]], nfiber)
    if "OBJTYPE" in cm and np.ndim(plug[cm["OBJTYPE"]]) == 1:
        objtype = np.char.strip(np.asarray(plug[cm["OBJTYPE"]]).astype(str))
        meta["OBJTYPE"] = objtype
        from ..zwarning import ZWarningMask

        meta["ZWARN"] = np.where(np.char.upper(objtype) == "SKY", int(ZWarningMask.SKY), 0).astype(np.int64)
    return Spectra(wave, flux, ivar, and_mask, meta)


def write_spplate(spectra: Spectra, path, plate: int | None = None, mjd: int | None = None,
                  overwrite: bool = False) -> None:
    """Write a batch as a BOSS spPlate file (atomically).

    The batch must share one wavelength array, equally spaced in log10 (as
    spec files of one plate become after :meth:`Spectra.concatenate`). Masked
    pixels get AND-mask bit 0 set and ``ivar = 0``. Used to build spPlate
    fixtures and to pack many spec files into one file.
    """
    from ..spectra import loglinear_params

    if not spectra.shared_wave:
        raise ValueError("write_spplate needs spectra on one shared wavelength array")
    fit = loglinear_params(spectra.wave)
    if fit is None:
        raise ValueError("write_spplate needs a wavelength array equally spaced in log10")
    meta = spectra.meta
    plate = int(plate if plate is not None else meta["PLATE"][0])
    mjd = int(mjd if mjd is not None else meta["MJD"][0])
    nfiber = spectra.nspec
    fiber = np.asarray(meta["FIBERID"], np.int32) if "FIBERID" in meta.colnames else np.arange(1, nfiber + 1, dtype=np.int32)

    primary = fits.PrimaryHDU(spectra.flux.astype(np.float32))
    h = primary.header
    h["PLATEID"] = (plate, "plate number")
    h["MJD"] = (mjd, "MJD of observation")
    h["COEFF0"] = (round(fit[0], 10), "log10(wavelength) of pixel 0")
    h["COEFF1"] = (round(fit[1], 10), "log10(wavelength) step")
    h["VACUUM"] = (True, "wavelengths are in vacuum")
    h["BUNIT"] = "1E-17 erg/cm^2/s/Ang"
    h["ORIGIN"] = "redsift write_spplate"
    ivar = np.where(spectra.mask, 0, spectra.ivar).astype(np.float32)
    andmask = spectra.mask.astype(np.int32)
    plug = Table({
        "FIBERID": fiber,
        "RA": np.asarray(meta["RA"], np.float64) if "RA" in meta.colnames else np.zeros(nfiber),
        "DEC": np.asarray(meta["DEC"], np.float64) if "DEC" in meta.colnames else np.zeros(nfiber),
        "OBJTYPE": np.asarray(meta["OBJTYPE"]).astype(str) if "OBJTYPE" in meta.colnames else np.array(["NA"] * nfiber),
        "THING_ID": np.asarray(meta["THING_ID"], np.int64) if "THING_ID" in meta.colnames else np.full(nfiber, -1, np.int64),
    })
    hdus = fits.HDUList([
        primary,
        fits.ImageHDU(ivar, name="IVAR"),
        fits.ImageHDU(andmask, name="ANDMASK"),
        fits.ImageHDU(andmask, name="ORMASK"),
        fits.ImageHDU(np.ones_like(ivar), name="WAVEDISP"),
        fits.BinTableHDU(plug, name="PLUGMAP"),
        fits.ImageHDU(np.zeros_like(ivar), name="SKY"),
    ])
    import os
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path}: exists (use overwrite=True)")
    with atomic_path(path) as tmp:
        hdus.writeto(tmp)


register("sdss-spec", _identify_spec, read_spec, survey="boss", priority=10,
         description="SDSS-I/II, BOSS and eBOSS spec-PLATE-MJD-FIBER.fits (full and lite, DR8 and DR16 data models)")
register("sdss-spplate", _identify_spplate, read_spplate, survey="boss", priority=10,
         description="BOSS spPlate-PLATE-MJD.fits (all fibers of one plate)")
