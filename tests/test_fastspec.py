"""The strict fast reader of SDSS/BOSS spec files (issue 20): identical to the astropy path on every real
fixture, on simulated spec files and on damaged files (where it must stand aside, never differ)."""

import gzip
import shutil

import numpy as np
import pytest

from redsift.errors import SpectrumFileError
from redsift.io import registry
from redsift.io.fastspec import read_spec_fast


def _both(path):
    """``read_file`` through the fast path and through astropy: (result or error message) each."""
    out = []
    for fast in (True, False):
        registry.FAST_PATH = fast
        try:
            out.append(registry.read_file(path))
        except SpectrumFileError as exc:
            out.append(str(exc))
        finally:
            registry.FAST_PATH = True
    return out


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if not (np.array_equal(a.wave, b.wave) and np.array_equal(a.flux, b.flux) and np.array_equal(a.ivar, b.ivar)
            and np.array_equal(a.mask, b.mask) and a.meta.colnames == b.meta.colnames):
        return False
    for c in a.meta.colnames:
        x, y = np.asarray(a.meta[c]), np.asarray(b.meta[c])
        if x.dtype != y.dtype or not (np.array_equal(x, y) or (x.dtype.kind == "f" and np.allclose(x, y, equal_nan=True))):
            return False
    return True


def test_identical_on_every_real_spec_file(real_dir):
    files = sorted((real_dir / "boss").glob("spec-*.fits")) + sorted((real_dir / "sdss1").glob("spec-*.fits"))
    assert len(files) >= 20
    for f in files:
        assert read_spec_fast(f) is not None, f"{f.name}: the fast path stood aside"
        a, b = _both(f)
        assert _same(a, b), f.name
    # the ids come through (THING_ID from HDU2 without reading the pipeline's labels)
    assert int(registry.read_file(files[0]).meta["THING_ID"][0]) > 0


def test_identical_on_simulated_spec_files(tmp_path):
    from redsift.simulate import simulate

    simulate(12, "boss", tmp_path / "ds", seed=3, grid="boss", progress=False, block=12)
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "sim_to_spec", pathlib.Path(__file__).resolve().parents[1] / "scripts" / "sim_to_spec.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main([str(tmp_path / "ds"), "-o", str(tmp_path / "spec"), "--per-class", "4"])
    files = sorted((tmp_path / "spec").glob("spec-*.fits"))
    assert files
    for f in files:
        assert read_spec_fast(f) is not None
        a, b = _both(f)
        assert _same(a, b), f.name


def test_damaged_files_read_the_same_either_way(boss_files, tmp_path, rng):
    """Truncations, header cards changed, bytes flipped: the fast path either stands aside or agrees."""
    src = boss_files[0].read_bytes()
    cases = {}
    for k, cut in enumerate((100, 2880, 5760, 9000, len(src) // 2, len(src) - 100)):
        cases[f"truncated-{k}"] = src[:cut]
    hdr1 = src.find(b"XTENSION", 2880)
    for name, old, new in (("naxis2", b"NAXIS2  =", b"NAXIS2  =          9999999 / "),
                           ("tform-heap", b"TFORM1  = '", b"TFORM1  = '1PE(9)    ' / "),
                           ("plateid-twice", b"MJD     =", b"PLATEID =                    1 / "),
                           ("vacuum-false", b"VACUUM  =", b"VACUUM  =                    F / ")):
        i = src.find(old, hdr1 if name in ("naxis2", "tform-heap") else 0)
        if i >= 0:
            cases[name] = src[:i] + new.ljust(80)[:80] + src[i + 80:]
    for k in range(8):  # random bytes flipped in the headers and the table
        b = bytearray(src)
        for p in rng.integers(0, min(len(b), 20000), 5):
            b[p] = int(rng.integers(32, 127))
        cases[f"flipped-{k}"] = bytes(b)
    for name, data in cases.items():
        p = tmp_path / f"spec-{name}.fits"
        p.write_bytes(data)
        a, b = _both(p)
        assert _same(a, b), name
    # a gzipped spec file and a LAMOST file named spec-*.fits go through astropy
    gz = tmp_path / "spec-gz.fits"
    gz.write_bytes(gzip.compress(src))
    assert read_spec_fast(gz) is None


def test_lamost_file_named_spec_goes_to_its_reader(real_dir, tmp_path):
    src = sorted((real_dir / "lamost").glob("spec-*.fits.gz"))[0]
    plain = tmp_path / src.name[:-3]
    with gzip.open(src) as f, open(plain, "wb") as g:
        shutil.copyfileobj(f, g)
    assert read_spec_fast(plain) is None
    assert registry.read_file(plain).meta["FORMAT"][0].startswith("lamost")


@pytest.mark.parametrize("value,expected", [("                   T / c", True), ("  'BOSS    '  / x", "BOSS"),
                                            ("                 3655", 3655), ("   -1.5E+02 / y", -150.0),
                                            ("  'it''s'", "it's")])
def test_card_values_as_astropy_gives_them(value, expected):
    from redsift.io.fastspec import _value

    assert _value(value) == expected


def test_batch_read_gives_each_file_its_own_spectra(real_dir, boss_files, tmp_path):
    """``read_fast_batch`` (the pipeline's path): each file it takes is row for row what ``read_file`` gives
    (wavelengths bit for bit, padding at the red end with no weight); the files it leaves are the others."""
    src = boss_files[0].read_bytes()
    (tmp_path / "spec-truncated.fits").write_bytes(src[: len(src) // 2])
    lamost = sorted((real_dir / "lamost").glob("*.fits*"))[0]
    files = ([str(f) for f in sorted((real_dir / "boss").glob("spec-*.fits"))]
             + [str(f) for f in sorted((real_dir / "sdss1").glob("spec-*.fits"))]
             + [str(tmp_path / "spec-truncated.fits"), str(lamost), str(real_dir / "desi" / "coadd-quasarnp-test.fits")])
    batch, ok = registry.read_fast_batch(files)
    assert ok.sum() == len(files) - 3 and not ok[-3:].any()
    assert len(batch) == ok.sum() and batch.wave.ndim == 2
    for row, f in enumerate(np.asarray(files)[ok]):
        one = registry.read_file(f)
        n = one.npix
        assert np.array_equal(batch.wave[row, :n], one.wave), f
        for name in ("flux", "ivar", "mask"):
            assert np.array_equal(getattr(batch, name)[row, :n], getattr(one, name)[0]), (f, name)
        assert not batch.ivar[row, n:].any() and batch.mask[row, n:].all()
        assert set(batch.meta.colnames) == set(one.meta.colnames)
        for c in one.meta.colnames:
            x, y = np.asarray(batch.meta[c][row]), np.asarray(one.meta[c][0])
            assert x.dtype.kind == y.dtype.kind and (x == y or (x.dtype.kind == "f" and np.isnan(x) and np.isnan(y))), (f, c)
    with pytest.raises(SpectrumFileError, match="spec-truncated.fits"):
        registry.read_file(files[-3])


def test_thing_id_cell_against_astropy(boss_files):
    """THING_ID's cell found from HDU2's cards agrees with astropy's parse of the whole table; a card it
    relies on repeated, missing or changed makes it give up (-1), never read another column."""
    from astropy.io import fits

    from redsift.io.fastspec import read_spec_raw
    from redsift.io.sdss import thing_id_cell

    for f in boss_files:
        assert read_spec_raw(f)[-1] == int(fits.getdata(f, 2)["THING_ID"][0]), f.name
    with fits.open(boss_files[0]) as h:
        head = h[2].header.tostring(endcard=False).encode()
    assert thing_id_cell(head) is not None
    i = head.find(b"TFORM3  =")
    assert thing_id_cell(head[:i] + head[i + 80:]) is None  # a column without its TFORM
    assert thing_id_cell(head + head[i:i + 80]) is None  # a TFORM twice
    j = head.find(b"'THING_ID'")
    assert thing_id_cell(head[:j] + b"'THING_IE'" + head[j + 10:]) is None  # no THING_ID column
    k = head.find(b"NAXIS1  =")
    assert thing_id_cell(head[:k] + b"NAXIS1  =                    1".ljust(80) + head[k + 80:]) is None
    t = head.rfind(b"TTYPE", 0, j)
    for bad in (b"TTYPE0  = 'THING_ID'", b"TTYPE999= 'THING_ID'"):  # no such column: never another one's
        assert thing_id_cell(head[:t] + bad.ljust(80) + head[t + 80:]) is None
    assert thing_id_cell(head[:t] + b"TTYPE%-3d= 'THING_ID''S'" % int(head[t + 5:t + 8]) + head[t + 23:]) is None


def test_batched_pipeline_gives_the_per_file_catalog(real_dir, tmp_path):
    """predict_catalog on files (spec files read in batches, padded per-spectrum grids) against the same
    files read one by one and handed over as Spectra (each on its own grid): the same catalog, bit for bit;
    a one-pixel spec file is left to the per-file path (its neighbours must not change its answer)."""
    from astropy.io import fits

    from redsift.models import load_model
    from redsift.predict import predict_catalog

    files = [str(f) for f in sorted((real_dir / "boss").glob("spec-*.fits"))[:8]]
    src = files[0]
    with fits.open(src) as h:
        h[1].data = h[1].data[:1]
        h.writeto(tmp_path / "spec-0001-50000-0001.fits")
    files.insert(3, str(tmp_path / "spec-0001-50000-0001.fits"))
    model = load_model("quasarnet-boss-sim")
    batched = predict_catalog(model, files, progress=False)
    one_by_one = predict_catalog(model, [registry.read_file(f) for f in files], progress=False)
    assert batched.colnames == one_by_one.colnames and len(batched) == len(files)
    for c in batched.colnames:
        a, b = np.asarray(batched[c]), np.asarray(one_by_one[c])
        assert a.dtype == b.dtype and (np.array_equal(a, b) if a.dtype.kind not in "fc" else
                                       np.array_equal(a.view(np.uint8), b.view(np.uint8))), c



def _both_paths(path, monkeypatch):
    """``read_file(path)`` through the strict readers and through astropy: Spectra or the error message."""
    out = []
    for fast in (True, False):
        monkeypatch.setattr(registry, "FAST_PATH", fast)
        try:
            out.append(registry.read_file(str(path)))
        except SpectrumFileError as e:
            out.append(str(e))
    monkeypatch.setattr(registry, "FAST_PATH", True)
    return out


def _assert_same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    for k in ("wave", "flux", "ivar", "mask"):
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and x.shape == y.shape, k
        np.testing.assert_array_equal(x, y, err_msg=k)
    assert a.meta.colnames == b.meta.colnames and a.meta.meta == b.meta.meta
    for c in a.meta.colnames:
        assert a.meta[c].dtype == b.meta[c].dtype, c
        np.testing.assert_array_equal(np.asarray(a.meta[c]), np.asarray(b.meta[c]), err_msg=c)


def _edited(src, out, edit):
    """A copy of FITS file ``src`` at ``out`` with ``edit(hdul)`` applied."""
    from astropy.io import fits

    with fits.open(src) as h:
        edit(h)
        h.writeto(out)
    return out


def test_strict_desi_reader_equals_astropy(real_dir, tmp_path, monkeypatch, rng):
    """DESI coadds read without astropy (headers parsed for the cards used, images and FIBERMAP viewed
    at their byte offsets) give the same Spectra as the astropy reader, bit for bit: the real coadds
    (with and without FIBERMAP), an edited copy (strings with trailing blanks, empty strings, NaN and
    inf pixels); files it must not read itself (a scaled column, BZERO on a mask, non-ASCII text, gzip,
    bytes after the last HDU, a truncated file, damaged header bytes) give what astropy gives, Spectra
    or the same one-line error."""
    from astropy.io import fits

    import redsift.io.desi as desi

    used = []
    orig = desi.read_desi_strict
    monkeypatch.setattr(desi, "read_desi_strict", lambda p: (lambda r: used.append(r is not None) or r)(orig(p)))
    for f in sorted((real_dir / "desi").glob("coadd-*.fits")):
        _assert_same(*_both_paths(f, monkeypatch))
    assert used and all(used[::2])  # the strict reader took every real coadd
    real = real_dir / "desi" / "coadd-4-80613-thru20210324.fits"

    def edited(name, edit):
        return _edited(real, tmp_path / name, edit)

    def strings(h):
        h["FIBERMAP"].data["BRICKNAME"][0] = "ab "
        h["FIBERMAP"].data["OBJTYPE"][0] = ""
        h["B_FLUX"].data[0, :3] = [np.nan, np.inf, -np.inf]

    cases = {"coadd-edited.fits": strings,
             "coadd-tzero.fits": lambda h: h["FIBERMAP"].header.set("TZERO1", 0),
             "coadd-bzero.fits": lambda h: h["B_MASK"].header.set("BZERO", 0),
             "coadd-dupname.fits": lambda h: h["R_MASK"].header.set("EXTNAME", "B_MASK")}
    for name, edit in cases.items():
        used.clear()
        path = edited(name, edit)
        _assert_same(*_both_paths(path, monkeypatch))
        assert used[0] == (name == "coadd-edited.fits"), name
    raw = real.read_bytes()
    with fits.open(real) as h:
        fm = h.fileinfo(h.index_of("FIBERMAP"))["datLoc"]
    text = bytearray(raw)
    text[raw.index(b"TGT", fm)] = 0xE9
    card = raw.index(b"NAXIS2  =                    1", fm)  # an arm's row count made negative: the walk
    negative = raw[:card] + b"NAXIS2  =                   -1" + raw[card + 31:]  # must not go backwards
    damaged = {"coadd-text.fits": bytes(text), "coadd-extra.fits": raw + b"\0" * 2880, "coadd-negative.fits": negative,
               "coadd-cut.fits": raw[:fm + 100], "coadd-gz.fits.gz": gzip.compress(raw)}
    for k in range(8):  # bytes of the headers changed at random
        b = bytearray(raw)
        for pos in rng.integers(0, fm, 3):
            b[pos] = int(rng.integers(32, 127))
        damaged[f"coadd-fuzz{k}.fits"] = bytes(b)
    for name, data in damaged.items():
        used.clear()
        (tmp_path / name).write_bytes(data)
        a, b = _both_paths(tmp_path / name, monkeypatch)
        _assert_same(a, b)
        if name in ("coadd-text.fits", "coadd-extra.fits", "coadd-cut.fits", "coadd-negative.fits"):
            assert used == [False], name
    assert "coadd-cut.fits" in _both_paths(tmp_path / "coadd-cut.fits", monkeypatch)[0]


def test_strict_spplate_reader_equals_astropy(boss_files, tmp_path, monkeypatch, rng):
    """spPlates read without astropy (primary cards parsed, images viewed where they lie, the plug map's
    columns copied out) give the astropy reader's Spectra bit for bit: a plate built from the real spec files
    of plate 3655, a plate written from the SDSS data model, edited copies (NaN and inf pixels, air
    wavelengths, a SKY fibre, lower-case plug-map names, no FIBERID, unparseable ids); files it must not read
    itself (BZERO on the AND mask, a scaled plug-map column, duplicated cards, a LAMOST telescope card, bytes
    after the last HDU, a truncated file, gzip, damaged header bytes) give what astropy gives."""
    from astropy.io import fits
    from astropy.table import Table

    import redsift
    import redsift.io.sdss as sdss

    used = []
    orig = sdss.read_spplate_strict
    monkeypatch.setattr(sdss, "read_spplate_strict", lambda p: (lambda r: used.append(r is not None) or r)(orig(p)))
    real = tmp_path / "spPlate-3655-55240.fits"
    sdss.write_spplate(redsift.read([f for f in boss_files if f.name.startswith("spec-3655-")]), real)
    a, b = _both_paths(real, monkeypatch)
    _assert_same(a, b)
    assert used == [True] and a.meta["FORMAT"][0] == "sdss-spplate" and a.nspec > 10
    # images converted a block of rows at a time (one row; three and a remainder), each block's pages dropped
    import redsift.io.fastspec as fastspec

    whole = fastspec._CONVERT_BYTES
    for block in (1, 3 * 4 * a.flux.shape[1] + 5):
        monkeypatch.setattr(fastspec, "_CONVERT_BYTES", block)
        _assert_same(_both_paths(real, monkeypatch)[0], b)
    monkeypatch.setattr(fastspec, "_CONVERT_BYTES", whole)
    assert used == [True] * 3

    def edited(name, edit):
        return _edited(real, tmp_path / name, edit)

    def pixels(h):
        h[0].data[0, :3] = [np.nan, np.inf, -np.inf]
        h[1].data[1, :2] = [-1, np.nan]
        h[5].data["OBJTYPE"][2] = "SKY"

    def lower_names(h):
        t = Table(h[5].data)
        t.rename_columns(list(t.colnames), [c.lower() for c in t.colnames])
        h[5] = fits.BinTableHDU(t, name="PLUGMAP")

    def no_fiberid(h):
        t = Table(h[5].data)
        t.remove_column("FIBERID")
        t["THING_ID"] = np.array([str(v) for v in t["THING_ID"]])  # ids as text: -1 where not whole numbers
        t["THING_ID"][0] = "x"
        h[5] = fits.BinTableHDU(t, name="PLUGMAP")

    cases = {"spPlate-1-edited.fits": pixels,
             "spPlate-2-air.fits": lambda h: h[0].header.set("VACUUM", False),
             "spPlate-3-lower.fits": lower_names,
             "spPlate-4-nofiber.fits": no_fiberid,
             "spPlate-5-bzero.fits": lambda h: h[2].header.set("BZERO", 0),
             "spPlate-6-tzero.fits": lambda h: h[5].header.set("TZERO1", 0),
             "spPlate-7-lamost.fits": lambda h: h[0].header.set("TELESCOP", "LAMOST")}
    for name, edit in cases.items():
        used.clear()
        _assert_same(*_both_paths(edited(name, edit), monkeypatch))
        assert used[0] == (name[8] in "1234"), name
    raw = real.read_bytes()
    with fits.open(real) as h:
        plug = h.fileinfo(5)["datLoc"]
    card = raw.index(b"MJD     =")
    dup = raw[:card + 80] + raw[card:card + 80] + raw[card + 160:]  # MJD twice (a blank card dropped)
    damaged = {"spPlate-8-extra.fits": raw + b"\0" * 2880, "spPlate-8-cut.fits": raw[:plug + 100],
               "spPlate-8-gz.fits.gz": gzip.compress(raw)}
    if raw[card + 80:card + 160].strip() == b"":
        damaged["spPlate-8-dup.fits"] = dup
    for k in range(8):  # bytes of the primary header changed at random
        b = bytearray(raw)
        for pos in rng.integers(0, 2880, 3):
            b[pos] = int(rng.integers(32, 127))
        damaged[f"spPlate-9-fuzz{k}.fits"] = bytes(b)
    for name, data in damaged.items():
        used.clear()
        (tmp_path / name).write_bytes(data)
        _assert_same(*_both_paths(tmp_path / name, monkeypatch))
        if name.startswith("spPlate-8"):
            assert used in ([], [False]), name
