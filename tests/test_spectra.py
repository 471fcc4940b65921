import numpy as np
import pytest
from astropy.table import Table

from redsift import Spectra, ZWarningMask
from redsift.spectra import sdss_targetid
from redsift.zwarning import describe


def test_sdss_targetid_does_not_overflow_int32():
    plate, mjd, fiber = np.int32(10656), np.int32(58163), np.int32(366)
    assert sdss_targetid([plate], [mjd], [fiber])[0] == 10656581630366


def test_nonfinite_and_negative_values_are_masked_and_flagged():
    flux = np.ones((3, 5))
    ivar = np.ones((3, 5))
    flux[0, 1] = np.nan
    ivar[1, 2] = np.inf
    ivar[2, 3] = -1
    s = Spectra(np.arange(5.0) + 4000, flux, ivar)
    assert s.mask[0, 1] and s.mask[1, 2] and s.mask[2, 3]
    assert np.all(np.isfinite(s.flux)) and np.all(s.ivar >= 0)
    assert np.all(s.meta["ZWARN"] & ZWarningMask.BAD_VALUES)
    assert s.weights[0, 1] == 0 and s.weights[0, 0] == 1


def test_all_zero_ivar_is_nodata():
    s = Spectra(np.arange(4.0) + 4000, np.ones((2, 4)), np.vstack([np.zeros(4), np.ones(4)]))
    assert describe(s.meta["ZWARN"][0]) == ["NODATA"]
    assert s.meta["ZWARN"][1] == 0


def test_core_metadata_columns_and_indexing():
    meta = Table({"RA": [1.0, 2.0, 3.0]})
    s = Spectra(np.arange(4.0) + 4000, np.ones((3, 4)), np.ones((3, 4)), meta=meta)
    assert s.meta.colnames[:8] == ["TARGETID", "SURVEY", "FORMAT", "SOURCE", "INDEX", "AIRTOVAC", "ZWARN", "ERROR"]
    assert list(s.meta["INDEX"]) == [0, 1, 2]
    sub = s[1:]
    assert sub.nspec == 2 and list(sub.meta["RA"]) == [2.0, 3.0]
    assert s[np.array([True, False, True])].nspec == 2
    assert s[0].nspec == 1


def test_shape_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        Spectra(np.arange(4.0), np.ones((2, 4)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="wave"):
        Spectra(np.arange(5.0), np.ones((2, 4)), np.ones((2, 4)))


def _loggrid_spectrum(start_pix, npix, value):
    wave = 10 ** (3.55 + 1e-4 * (start_pix + np.arange(npix)))
    return Spectra(wave, np.full((1, npix), value), np.ones((1, npix)))


def test_concatenate_on_a_common_lattice_keeps_a_shared_grid():
    a = _loggrid_spectrum(0, 100, 1.0)
    b = _loggrid_spectrum(7, 100, 2.0)
    c = Spectra.concatenate([a, b])
    assert c.shared_wave and c.npix == 107
    # b's first pixel sits at index 7 of the union grid; a has no data past 99
    np.testing.assert_allclose(c.wave[7], b.wave[0], rtol=1e-12)
    assert c.flux[1, 7] == 2.0 and c.ivar[1, 6] == 0 and c.mask[1, 6]
    assert c.ivar[0, 100] == 0 and c.mask[0, 100]
    assert c.flux[0, 99] == 1.0


def test_concatenate_different_grids_gives_padded_per_spectrum_arrays():
    a = Spectra(np.linspace(4000, 5000, 50), np.ones((1, 50)), np.ones((1, 50)))
    b = Spectra(np.linspace(3000, 9000, 80), np.ones((2, 80)), np.ones((2, 80)))
    c = Spectra.concatenate([a, b])
    assert not c.shared_wave and c.wave.shape == (3, 80)
    assert np.all(np.diff(c.wave, axis=1) > 0)  # padding continues the grid
    assert np.all(c.mask[0, 50:]) and np.all(c.ivar[0, 50:] == 0)
    np.testing.assert_allclose(c.wave_of(1), b.wave)


def test_placeholder_row():
    p = Spectra.placeholder("missing.fits", "no such file")
    assert p.nspec == 1
    assert set(describe(p.meta["ZWARN"][0])) == {"NODATA", "BAD_INPUT"}
    assert p.meta["ERROR"][0] == "no such file" and p.meta["INDEX"][0] == -1


def test_construction_checks_compiled_and_numpy_agree(monkeypatch, rng):
    """The construction's value checks (``redsift.kernels.check_values`` when numba is installed, numpy
    otherwise) give the same spectra, masks and ZWARN bits: NaN and inf flux, NaN and negative ivar, rows
    with every pixel masked or zero-weighted, and clean rows."""
    from redsift import kernels

    if not kernels.AVAILABLE:
        pytest.skip("numba is not installed (pip install redsift[fast])")
    flux = rng.normal(size=(6, 50)).astype(np.float32)
    ivar = rng.uniform(0.5, 2, (6, 50)).astype(np.float32)
    mask = np.zeros((6, 50), bool)
    flux[1, 3], flux[2, 7], ivar[3, 9], ivar[4, 1] = np.nan, np.inf, np.nan, -1.0
    mask[5] = True  # every pixel masked: NODATA
    ivar[0, :] = 0  # no weight anywhere: NODATA
    out = {}
    monkeypatch.setattr(kernels, "MIN_PIXELS", 0)
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "loaded", lambda c=compiled: c)
        s = Spectra(np.linspace(4000, 5000, 50), flux, ivar, mask)
        out[compiled] = s
    a, b = out[True], out[False]
    assert np.array_equal(np.asarray(a.meta["ZWARN"]), np.asarray(b.meta["ZWARN"]))
    assert np.array_equal(a.flux, b.flux) and np.array_equal(a.ivar, b.ivar) and np.array_equal(a.mask, b.mask)
    zw = np.asarray(a.meta["ZWARN"])
    assert [bool(z & int(ZWarningMask.BAD_VALUES)) for z in zw] == [False, True, True, True, True, False]
    assert [bool(z & int(ZWarningMask.NODATA)) for z in zw] == [True, False, False, False, False, True]


def test_handed_over_columns_build_the_table_only_when_asked(rng):
    """A reader's columns (``MetaColumns``) are taken over without copies; the metadata table is built on
    first use, equal to the one built from a table, and columns read, changed or added before that are in it."""
    from redsift.spectra import MetaColumns

    n = 4
    cols = {"TARGETID": np.arange(n) + 10, "SURVEY": np.full(n, "desi"), "FLUX_G": rng.normal(size=n),
            "ZWARN": np.array([0, 4, 0, 0])}
    flux = np.ones((n, 6))
    flux[1, 2] = np.nan
    eager = Spectra(np.arange(6.0) + 4000, flux, np.ones((n, 6)), meta=Table({k: v.copy() for k, v in cols.items()}))
    handed = MetaColumns({k: v.copy() for k, v in cols.items()}, {"FIBERMAP_COLUMNS": ["TARGETID", "FLUX_G"]})
    lazy = Spectra(np.arange(6.0) + 4000, flux, np.ones((n, 6)), meta=handed)
    assert lazy.__dict__["_meta"] is None  # nothing built yet
    assert lazy.column("FLUX_G") is handed["FLUX_G"]  # taken over, not copied
    assert list(lazy.column("ZWARN")) == list(eager.meta["ZWARN"])  # BAD_VALUES set on the columns
    assert lazy.meta_rows() == n and lazy.has_column("SURVEY") and not lazy.has_column("RA")
    view = lazy.columns
    assert view.nrows == n and list(view)[:8] == list(eager.meta.colnames)[:8]
    lazy.set_column("SOURCE", np.full(n, "f.fits"))
    with pytest.raises(ValueError, match="rows"):
        lazy.set_column("BAD", np.zeros(n + 1))
    assert lazy.__dict__["_meta"] is None
    table = lazy.meta  # built now, once
    assert lazy.meta is table and table.meta["FIBERMAP_COLUMNS"] == ["TARGETID", "FLUX_G"]
    assert list(table["SOURCE"]) == ["f.fits"] * n
    for name in eager.meta.colnames:
        if name != "SOURCE":
            assert np.array_equal(np.asarray(table[name]), np.asarray(eager.meta[name])), name
    lazy.set_column("RA", np.zeros(n))  # after: into the table
    assert "RA" in table.colnames and lazy.column("RA") is table["RA"]
    # a copy of handed-over columns is not handed over again: the table copies them
    again = Spectra(np.arange(6.0) + 4000, np.ones((n, 6)), np.ones((n, 6)), meta=handed.copy())
    assert again.meta["FLUX_G"] is not handed["FLUX_G"] and not np.shares_memory(again.meta["FLUX_G"], handed["FLUX_G"])


def test_desi_predict_path_reads_columns_without_the_table(real_dir, monkeypatch):
    """The predict pipeline's per-file work (ids, errors, ZWARN, the family's inputs) on a DESI coadd reads
    the handed-over columns only; the table built afterwards equals the astropy reader's."""
    from redsift.catalog import id_columns
    from redsift.io import registry
    from redsift.io.registry import read_file
    from redsift.models import get_family, load_model

    path = real_dir / "desi" / "coadd-4-80613-thru20210324.fits"
    s = read_file(path)
    model = load_model("quasarnet-boss-sim")
    get_family(model).prepare(model, s)
    ids = id_columns(s.columns)
    assert s.__dict__["_meta"] is None and len(ids["TARGETID"]) == s.nspec and (ids["TARGETID"] > 0).all()
    monkeypatch.setattr(registry, "FAST_PATH", False)  # the astropy reader
    ref = read_file(path)
    assert s.meta.colnames == ref.meta.colnames
    for name in ref.meta.colnames:
        assert np.array_equal(np.asarray(s.meta[name]), np.asarray(ref.meta[name])), name
