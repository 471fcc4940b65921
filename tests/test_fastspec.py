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
