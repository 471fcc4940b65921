"""Readers against the real files in ../shared/data/real and against fixtures built from data models."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import redsift
from redsift.io.registry import identify_format, readers
from redsift.io.sdss import write_spplate
from redsift.preprocess import prepare
from redsift.zwarning import ZWarningMask

LABEL_COLUMNS = {"CLASS", "SUBCLASS", "Z", "Z_ERR", "ZWARNING", "SPECTYPE", "Z_VI"}


def test_every_format_is_registered():
    names = {r.name for r in readers()}
    assert {"sdss-spec", "sdss-spplate", "desi-coadd", "desi-spectra", "lamost-lrs-image", "lamost-lrs-coadd",
            "generic-hdf5", "generic-npz", "generic-text"} <= names


def test_boss_spec_files(boss_files):
    assert len(boss_files) == 22
    for f in boss_files:
        s = redsift.read(f)
        plate, mjd, fiber = (int(x) for x in f.stem.split("-")[1:])
        m = s.meta[0]
        assert m["FORMAT"] == "sdss-spec" and m["SURVEY"] == "boss"
        assert (m["PLATE"], m["MJD"], m["FIBERID"]) == (plate, mjd, fiber)
        assert m["TARGETID"] == plate * 1_000_000_000 + mjd * 10_000 + fiber
        assert m["SOURCE"] == str(f) and m["INDEX"] == 0 and not m["AIRTOVAC"]
        assert np.isfinite(m["RA"]) and np.isfinite(m["DEC"])
        assert 3550 < s.wave[0] < 3620 and 10300 < s.wave[-1] < 10400
        # spec files are on the exact SDSS lattice: log10 step 1e-4
        np.testing.assert_allclose(np.diff(np.log10(s.wave)), 1e-4, rtol=1e-9)
        assert not (LABEL_COLUMNS & set(s.meta.colnames)), "pipeline labels must not be loaded"


def test_int32_ids_do_not_overflow(real_dir):
    s = redsift.read(real_dir / "boss" / "spec-10656-58163-0366.fits")
    assert s.meta["TARGETID"][0] == 10656581630366


def test_boss_files_share_one_grid_when_read_together(boss_files):
    s = redsift.read(boss_files)
    assert s.nspec == 22 and s.shared_wave
    singles = [redsift.read(f) for f in boss_files[:3]]
    for k, one in enumerate(singles):
        start = np.searchsorted(s.wave, one.wave[0] - 1e-6)
        np.testing.assert_allclose(s.wave[start:start + one.npix], one.wave, rtol=1e-12)
        np.testing.assert_array_equal(s.flux[k, start:start + one.npix], one.flux[0])


def test_masked_pixels_follow_and_mask(real_dir):
    f = real_dir / "boss" / "spec-9367-57758-0500.fits"
    s = redsift.read(f)
    with fits.open(f) as h:
        and_mask = h[1].data["AND_MASK"]
    np.testing.assert_array_equal(s.mask[0], and_mask != 0)
    assert s.weights[0][and_mask != 0].sum() == 0


def test_sdss1_lowercase_vintage(real_dir):
    s = redsift.read(real_dir / "sdss1" / "spec-0266-51602-0001.fits")
    m = s.meta[0]
    assert m["FORMAT"] == "sdss-spec" and m["SURVEY"] == "sdss"
    assert (m["PLATE"], m["MJD"], m["FIBERID"]) == (266, 51602, 1)
    assert 3800 < s.wave[0] < 3810 and 9200 < s.wave[-1] < 9210
    assert s.npix == 3835 and np.median(s.flux) > 0


def test_desi_coadd_full_data_model(real_dir):
    f = real_dir / "desi" / "coadd-4-80613-thru20210324.fits"
    s = redsift.read(f)
    assert s.meta["FORMAT"][0] == "desi-coadd" and s.meta["SURVEY"][0] == "desi"
    assert s.meta["TARGETID"][0] == 39633345008634465
    assert "FLUX_G" in s.meta.colnames and "TARGET_RA" in s.meta.colnames  # FIBERMAP carried along
    assert s.meta["RA"][0] == s.meta["TARGET_RA"][0]
    assert s.wave[0] == pytest.approx(3600.0) and s.wave[-1] == pytest.approx(9824.0)
    np.testing.assert_allclose(np.diff(s.wave), 0.8, atol=1e-6)
    assert s.npix == 7781  # 2751 + 2326 + 2881 minus the two overlaps


def test_desi_coadd_without_fibermap(real_dir):
    s = redsift.read(real_dir / "desi" / "coadd-quasarnp-test.fits")
    assert s.nspec == 25 and np.all(s.meta["TARGETID"] == -1)
    assert list(s.meta["INDEX"]) == list(range(25))
    assert s.meta["ZWARN"][11] & ZWarningMask.NODATA  # no ivar in any arm
    assert np.sum(s.meta["ZWARN"] & ZWarningMask.NODATA > 0) == 1


def _desi_file(path, name="coadd"):
    """A DESI coadd built from the DESI data model (two spectra, three arms with overlaps)."""
    arms = {"B": np.round(np.arange(3600.0, 5800.1, 0.8), 1), "R": np.round(np.arange(5760.0, 7620.1, 0.8), 1),
            "Z": np.round(np.arange(7520.0, 9824.1, 0.8), 1)}
    hdus = [fits.PrimaryHDU()]
    fm = Table({"TARGETID": np.array([11, 22], np.int64), "TARGET_RA": [10.0, 20.0],
                "TARGET_DEC": [-1.0, 1.0], "OBJTYPE": ["TGT", "TGT"]})
    hdus.append(fits.BinTableHDU(fm, name="FIBERMAP"))
    values = {"B": 1.0, "R": 3.0, "Z": 5.0}
    ivars = {"B": 1.0, "R": 3.0, "Z": 1.0}
    for a, w in arms.items():
        hdus.append(fits.ImageHDU(w, name=f"{a}_WAVELENGTH"))
        hdus.append(fits.ImageHDU(np.full((2, w.size), values[a], np.float32), name=f"{a}_FLUX"))
        hdus.append(fits.ImageHDU(np.full((2, w.size), ivars[a], np.float32), name=f"{a}_IVAR"))
        m = np.zeros((2, w.size), np.int32)
        if a == "R":
            m[1] = 1  # spectrum 1: whole R arm masked
        hdus.append(fits.ImageHDU(m, name=f"{a}_MASK"))
    p = path / f"{name}-test.fits"
    fits.HDUList(hdus).writeto(p)
    return p


def test_desi_arm_merge_weights_overlaps_by_ivar(tmp_path):
    s = redsift.read(_desi_file(tmp_path))
    w = s.wave
    in_br = (w >= 5760) & (w <= 5800)
    only_r = (w > 5800.5) & (w < 7519)
    # overlap B (f=1, ivar=1) and R (f=3, ivar=3): (1*1 + 3*3)/4 = 2.5, ivar 4
    np.testing.assert_allclose(s.flux[0, in_br], 2.5)
    np.testing.assert_allclose(s.ivar[0, in_br], 4.0)
    np.testing.assert_allclose(s.flux[0, only_r], 3.0)
    # spectrum 1 has R masked: the overlap takes B alone, the R-only range has no weight
    np.testing.assert_allclose(s.flux[1, in_br], 1.0)
    assert np.all(s.weights[1, only_r] == 0) and np.all(s.mask[1, only_r])
    assert list(s.meta["TARGETID"]) == [11, 22]


def test_desi_fibermap_sets_redrocks_zwarn_bits(tmp_path, monkeypatch):
    """A DESI FIBERMAP's sky and bad fibres and its fibre status bits become the ZWARN bits Redrock's DESI front end
    sets (SKY, NODATA, UNPLUGGED, POORDATA, LITTLE_COVERAGE), through the strict reader and astropy alike; a target
    with a clean status keeps 0."""
    from redsift.io import registry
    from redsift.io.desi import FIBERMASK, read_desi_strict
    from redsift.zwarning import ZWarningMask as Z

    n = 6
    w = np.round(np.arange(3600.0, 9824.1, 0.8), 1)
    status = np.array([0, 0, 0, 1 << FIBERMASK["BROKENFIBER"], 1 << FIBERMASK["POORPOSITION"],
                       1 << FIBERMASK["BADAMPR"]], np.int32)
    fm = Table({"TARGETID": np.arange(n, dtype=np.int64), "OBJTYPE": ["TGT", "SKY", "BAD", "TGT", "TGT", "TGT"],
                "COADD_FIBERSTATUS": status})
    rng = np.random.default_rng(3)
    hdus = [fits.PrimaryHDU(), fits.BinTableHDU(fm, name="FIBERMAP"), fits.ImageHDU(w, name="B_WAVELENGTH"),
            fits.ImageHDU(rng.normal(1, 0.1, (n, w.size)).astype(np.float32), name="B_FLUX"),
            fits.ImageHDU(np.full((n, w.size), 100, np.float32), name="B_IVAR")]
    p = tmp_path / "coadd-sky.fits"
    fits.HDUList(hdus).writeto(p)
    want = [0, int(Z.SKY), int(Z.NODATA), int(Z.NODATA | Z.UNPLUGGED), int(Z.POORDATA), int(Z.LITTLE_COVERAGE)]
    assert list(np.asarray(read_desi_strict(p).meta["ZWARN"])) == want  # the strict reader
    monkeypatch.setattr(registry, "FAST_PATH", False)
    assert list(np.asarray(redsift.read(p).meta["ZWARN"])) == want  # astropy


def test_desi_spectra_file_is_detected(tmp_path):
    p = _desi_file(tmp_path, name="spectra")
    assert identify_format(p).name == "desi-spectra"
    assert redsift.read(p).meta["FORMAT"][0] == "desi-spectra"


def test_lamost_both_layouts(real_dir):
    old = redsift.read(real_dir / "lamost" / "spec-55859-F5902_sp01-001_dr7.fits.gz")
    new = redsift.read(real_dir / "lamost" / "spec-55859-F5902_sp01-002.fits.gz")
    assert old.meta["FORMAT"][0] == "lamost-lrs-image" and new.meta["FORMAT"][0] == "lamost-lrs-coadd"
    assert old.meta["OBSID"][0] == 101001 and new.meta["OBSID"][0] == 101002
    assert old.meta["TARGETID"][0] == 101001
    for s in (old, new):
        assert s.meta["SURVEY"][0] == "lamost" and not s.meta["AIRTOVAC"][0]  # VACUUM = T
        assert 3690 < s.wave[0] < 3710 and 9090 < s.wave[-1] < 9110
        assert s.weights.sum() > 0
        assert not (LABEL_COLUMNS & set(s.meta.colnames))


def test_air_wavelengths_are_converted(real_dir, tmp_path):
    src = real_dir / "lamost" / "spec-55859-F5902_sp01-002.fits.gz"
    with fits.open(src) as h:
        h[0].header["VACUUM"] = False
        h.writeto(tmp_path / "spec-air.fits", output_verify="silentfix")
    vac = redsift.read(src)
    air = redsift.read(tmp_path / "spec-air.fits")
    assert air.meta["AIRTOVAC"][0]
    # the air->vacuum shift is about 1.6 A at 6000 A
    k = np.searchsorted(vac.wave, 6000)
    assert 1.4 < air.wave[k] - vac.wave[k] < 1.9


def _spplate_from_data_model(path, nfiber=6, npix=300):
    """An spPlate written directly from the SDSS data model (no real spPlate file exists in shared/):
    HDU0 flux image with COEFF0/COEFF1, HDU1 ivar, HDU2 AND mask, HDU3 OR mask, HDU4 WAVEDISP,
    HDU5 PLUGMAP table, HDU6 SKY."""
    rng = np.random.default_rng(0)
    flux = rng.normal(10, 1, (nfiber, npix)).astype(np.float32)
    ivar = np.ones((nfiber, npix), np.float32)
    andmask = np.zeros((nfiber, npix), np.int32)
    andmask[2, 10:20] = 2**22
    h0 = fits.PrimaryHDU(flux)
    h0.header["PLATEID"], h0.header["MJD"] = 4321, 55555
    h0.header["COEFF0"], h0.header["COEFF1"] = 3.5800, 1e-4
    plug = Table({"OBJTYPE": ["QSO", "SKY", "GALAXY", "QSO", "STAR", "QSO"][:nfiber],
                  "RA": np.linspace(1, 2, nfiber), "DEC": np.linspace(3, 4, nfiber),
                  "FIBERID": np.arange(1, nfiber + 1, dtype=np.int32)})
    fits.HDUList([h0, fits.ImageHDU(ivar), fits.ImageHDU(andmask), fits.ImageHDU(andmask),
                  fits.ImageHDU(np.ones_like(ivar)), fits.BinTableHDU(plug),
                  fits.ImageHDU(np.zeros_like(ivar))]).writeto(path)
    return flux, andmask


def test_spplate_fixture_from_data_model(tmp_path):
    p = tmp_path / "spPlate-4321-55555.fits"
    flux, andmask = _spplate_from_data_model(p)
    s = redsift.read(p)
    assert s.meta["FORMAT"][0] == "sdss-spplate" and s.nspec == 6
    assert list(s.meta["FIBERID"]) == [1, 2, 3, 4, 5, 6]
    assert s.meta["TARGETID"][0] == 4321 * 1_000_000_000 + 55555 * 10_000 + 1
    np.testing.assert_array_equal(s.flux, flux)
    np.testing.assert_allclose(np.log10(s.wave[0]), 3.58)
    assert s.mask[2, 10:20].all() and not s.mask[2, 20]
    assert s.meta["ZWARN"][1] & ZWarningMask.SKY and s.meta["OBJTYPE"][1] == "SKY"


def test_spplate_round_trip_from_real_spec_files_of_one_plate(boss_files, tmp_path):
    plate = [f for f in boss_files if f.name.startswith("spec-3655-")]
    specs = redsift.read(plate)
    out = tmp_path / "spPlate-3655-55240.fits"
    write_spplate(specs, out)
    back = redsift.read(out)
    assert back.meta["FORMAT"][0] == "sdss-spplate" and back.nspec == len(plate)
    np.testing.assert_array_equal(back.meta["TARGETID"], specs.meta["TARGETID"])
    np.testing.assert_allclose(back.wave, specs.wave, rtol=1e-12)
    np.testing.assert_array_equal(back.flux, specs.flux)
    np.testing.assert_array_equal(back.weights, specs.weights)
    # and the model inputs are identical whichever file they came from
    X1, _, _ = prepare(specs)
    X2, _, _ = prepare(back)
    np.testing.assert_array_equal(X1, X2)


@pytest.mark.parametrize("ext", ["h5", "npz", "csv", "txt", "ecsv"])
def test_generic_formats(tmp_path, rng, ext):
    wave = np.linspace(3700, 9000, 500)
    flux = rng.normal(1, 0.1, wave.size)
    err = np.full(wave.size, 0.1)
    p = tmp_path / f"spectrum.{ext}"
    if ext == "h5":
        import h5py

        with h5py.File(p, "w") as f:
            f["wavelength"], f["flux"], f["ivar"] = wave, flux[None], (1 / err**2)[None]
    elif ext == "npz":
        np.savez(p, wave=wave, flux=flux, error=err)
    elif ext == "csv":
        Table({"wave": wave, "flux": flux, "ivar": 1 / err**2}).write(p, format="ascii.csv")
    elif ext == "ecsv":
        Table({"lambda": wave, "flux": flux, "sigma": err}).write(p, format="ascii.ecsv")
    else:
        np.savetxt(p, np.c_[wave, flux, 1 / err**2])  # header-less: wave, flux, ivar
    s = redsift.read(p)
    assert s.nspec == 1 and s.meta["SURVEY"][0] == "generic"
    assert s.meta["FORMAT"][0].startswith("generic-")
    np.testing.assert_allclose(s.wave, wave)
    np.testing.assert_allclose(s.flux[0], flux, rtol=1e-6)
    np.testing.assert_allclose(s.ivar[0], 100.0, rtol=1e-5)


def test_mixed_formats_in_one_batch(boss_files, real_dir):
    s = redsift.read([boss_files[0], real_dir / "desi" / "coadd-4-80613-thru20210324.fits",
                      real_dir / "lamost" / "spec-55859-F5902_sp01-002.fits.gz"])
    assert s.nspec == 3 and not s.shared_wave
    assert list(s.meta["SURVEY"]) == ["boss", "desi", "lamost"]
    assert s.meta["PLATE"][1] == -1 and s.meta["OBSID"][0] == -1  # filled, not masked
    X, _, zwarn = prepare(s)
    assert X.shape == (3, 443) and np.all(zwarn == 0)


def test_directory_is_expanded(real_dir):
    s = redsift.read(real_dir / "lamost")
    assert s.nspec == 2


@pytest.mark.parametrize("compiled", [True, False])
def test_merge_arms_is_the_inverse_variance_mean(rng, compiled, monkeypatch):
    """DESI arms merged: one arm's pixels as they are, shared pixels the ivar-weighted mean (the plain mean,
    masked, where no arm has weight); NaN, negative or masked inputs carry no weight. Checked against the
    definition computed in float64 on overlapping arms with every kind of bad pixel, through the compiled
    pass (``redsift.kernels.merge_arms``, numba) and the numpy path."""
    from redsift import kernels
    from redsift.io.desi import merge_arms

    if compiled and not kernels.AVAILABLE:
        pytest.skip("numba is not installed (pip install redsift[fast])")
    monkeypatch.setattr(kernels, "AVAILABLE", compiled)
    monkeypatch.setattr(kernels, "MIN_PIXELS", 0)  # small test batches through the compiled path too

    step = 0.8
    waves = [3600 + step * np.arange(0, 300), 3600 + step * np.arange(250, 600), 3600 + step * np.arange(560, 800)]
    fluxes, ivars, masks = [], [], []
    for w in waves:
        f = rng.normal(1, 0.3, (6, w.size)).astype(np.float32)
        iv = rng.uniform(0.5, 4, (6, w.size)).astype(np.float32)
        f[0, :5], iv[1, :7], iv[2, 3:9], f[4, 10:14] = np.nan, 0, -1, -0.0
        iv[3, :] = 0  # a spectrum with no weight in this arm
        m = rng.uniform(size=f.shape) < 0.05
        fluxes.append(f), ivars.append(iv), masks.append(m)
    wave, flux, ivar, mask = merge_arms(waves, fluxes, ivars, masks)
    grid = np.unique(np.round(np.concatenate(waves), 3))
    assert np.array_equal(wave, grid)
    num, den, raw = (np.zeros((6, grid.size)) for _ in range(3))
    cnt = np.zeros(grid.size)
    for w, f, iv, m in zip(waves, fluxes, ivars, masks):
        idx = np.searchsorted(grid, np.round(w, 3))
        f = np.nan_to_num(f.astype(np.float64), nan=0.0)
        iv = np.where(np.isfinite(iv) & (iv > 0) & ~m, iv.astype(np.float64), 0.0)
        num[:, idx] += iv * f
        den[:, idx] += iv
        raw[:, idx] += f
        cnt[idx] += 1
    good = den > 0
    want = np.where(good, num / np.where(good, den, 1), raw / cnt).astype(np.float32)
    assert np.array_equal(flux.view(np.uint32), want.view(np.uint32))  # bits: -0.0 and +0.0 differ
    assert np.array_equal(ivar.view(np.uint32), den.astype(np.float32).view(np.uint32))
    assert np.array_equal(mask, ~good)
    # FITS hands big-endian floats over: the same bits
    big = merge_arms(waves, [f.astype(">f4") for f in fluxes], [iv.astype(">f4") for iv in ivars], masks)
    assert all(np.array_equal(np.asarray(x).view(np.uint8), np.asarray(y).view(np.uint8))
               for x, y in zip(big[1:3], (flux, ivar)))
    # DESI's integer bitmasks as they lie (non-zero = bad, big-endian too), and one arm's flux and ivar in
    # different byte orders: the same bits
    bits = [np.where(m, np.int32(1) << (i % 31), 0).astype(">i4" if i % 2 else "<i4") for i, m in enumerate(masks)]
    mixed = merge_arms(waves, [f.astype(">f4") for f in fluxes], ivars, bits)
    assert all(np.array_equal(np.asarray(x).view(np.uint8), np.asarray(y).view(np.uint8))
               for x, y in zip(mixed[1:3], (flux, ivar)))


@pytest.mark.parametrize("compiled", [True, False])
def test_merge_arms_edge_values(rng, compiled, monkeypatch):
    """The values the compiled pass judges by their bits alone (+-inf, NaN with its sign bit, -0.0, the
    smallest subnormal, the largest float) give the bits of the definition, in both byte orders."""
    from redsift import kernels
    from redsift.io.desi import merge_arms

    if compiled and not kernels.AVAILABLE:
        pytest.skip("numba is not installed (pip install redsift[fast])")
    monkeypatch.setattr(kernels, "AVAILABLE", compiled)
    monkeypatch.setattr(kernels, "MIN_PIXELS", 0)
    edge = np.array([np.inf, -np.inf, np.nan, -np.nan, -0.0, 0.0, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38, 1.5, -2],
                    np.float32)
    waves = [1000 + np.arange(edge.size) * 0.8, 1000 + (edge.size + np.arange(edge.size)) * 0.8]
    f = np.stack([edge, edge[::-1]])
    iv = np.stack([edge[::-1], edge])
    for order in ("<f4", ">f4"):
        wave, flux, ivar, mask = merge_arms(waves, [f.astype(order)] * 2, [iv.astype(order)] * 2, [None, None])
        want_f = np.where(np.isfinite(f), f, 0) + np.float32(0)
        with np.errstate(invalid="ignore"):
            want_iv = np.where(np.isfinite(iv) & (iv > 0), iv, np.float32(0))
        assert np.array_equal(flux.view(np.uint32), np.hstack([want_f, want_f]).view(np.uint32))
        assert np.array_equal(ivar.view(np.uint32), np.hstack([want_iv, want_iv]).view(np.uint32))
        assert np.array_equal(mask, ~(ivar > 0))


def test_desi_merge_compiled_equals_numpy(real_dir, monkeypatch):
    """A real DESI coadd (its integer MASK arms, big-endian, read where they lie by the strict reader): the
    compiled merge and the numpy path give the same spectra, bit for bit."""
    from redsift import kernels
    from redsift.io.desi import read_desi_strict

    if not kernels.AVAILABLE:
        pytest.skip("numba is not installed (pip install redsift[fast])")
    path = real_dir / "desi" / "coadd-4-80613-thru20210324.fits"
    monkeypatch.setattr(kernels, "MIN_PIXELS", 0)
    fast = read_desi_strict(path)
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    slow = read_desi_strict(path)
    assert fast is not None and slow is not None
    for a in ("wave", "flux", "ivar", "mask"):
        x, y = getattr(fast, a), getattr(slow, a)
        assert x.dtype == y.dtype and np.array_equal(x.view(np.uint8), y.view(np.uint8)), a
    assert (fast.ivar > 0).mean() > 0.5
