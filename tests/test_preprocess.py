import numpy as np
import pytest

import redsift
from redsift import LogGrid, Spectra, ZWarningMask
from redsift.grid import pixel_edges
from redsift.preprocess import (
    SKY_LINES,
    bin_quasarnet,
    coverage_zwarn,
    mask_sky_lines,
    normalize_max,
    normalize_mean_rms,
    prepare,
    rebin,
    snr_median,
)

spectres = pytest.importorskip("spectres", reason="spectres (test-only dependency) is not installed")


def _edges_from_centres(c):
    return pixel_edges(c)


@pytest.mark.parametrize("shared", [True, False])
def test_rebin_matches_spectres(rng, shared):
    wave = np.linspace(4000, 6000, 1501)
    flux = rng.normal(1, 0.3, (4, wave.size))
    err = rng.uniform(0.1, 0.3) * np.ones_like(flux)  # uniform errors: SpectRes' weighting
    w = wave if shared else np.broadcast_to(wave, flux.shape)
    s = Spectra(w, flux, 1 / err**2)
    new = np.geomspace(4100, 5900, 240)
    fl, iv = rebin(s, _edges_from_centres(new))
    ref, ref_err = spectres.spectres(new, wave, flux, err, verbose=False)
    np.testing.assert_allclose(fl, ref, rtol=0, atol=2e-6)
    np.testing.assert_allclose(1 / np.sqrt(iv), ref_err, rtol=1e-5)


def test_rebin_coarse_to_fine_matches_spectres(rng):
    wave = np.linspace(4000, 6000, 101)
    flux = rng.normal(5, 1, (2, wave.size))
    err = np.full_like(flux, 0.5)
    new = np.linspace(4100, 5900, 700)  # new bins smaller than native pixels
    fl, iv = rebin(Spectra(wave, flux, 1 / err**2), pixel_edges(new))
    ref, ref_err = spectres.spectres(new, wave, flux, err, verbose=False)
    np.testing.assert_allclose(fl, ref, atol=2e-6)
    np.testing.assert_allclose(1 / np.sqrt(iv), ref_err, rtol=1e-5)


def test_rebin_conserves_flux(rng):
    wave = 10 ** (3.56 + 1e-4 * np.arange(3000))
    flux = rng.gamma(2.0, 1.0, (3, wave.size))
    s = Spectra(wave, flux, np.ones_like(flux))
    e_native = pixel_edges(wave)
    # new grid covering native pixels 100..2900 exactly (edges on native edges every 10 px)
    new_edges = e_native[100:2901:10]
    fl, _ = rebin(s, new_edges)
    total_native = (flux[:, 100:2900] * np.diff(e_native)[100:2900]).sum(axis=1)
    total_new = (fl * np.diff(new_edges)).sum(axis=1)
    np.testing.assert_allclose(total_new, total_native, rtol=1e-6)


def test_rebin_weights_by_ivar_and_ignores_masked_pixels():
    wave = np.array([1.0, 2.0, 3.0, 4.0])
    flux = np.array([[1.0, 3.0, 100.0, 5.0]])
    ivar = np.array([[1.0, 3.0, 1.0, 1.0]])
    mask = np.array([[False, False, True, False]])
    fl, iv = rebin(Spectra(wave, flux, ivar, mask), np.array([0.5, 2.5, 4.5]))
    assert fl[0, 0] == pytest.approx((1 * 1 + 3 * 3) / 4)
    assert fl[0, 1] == pytest.approx(5.0)  # the masked 100 is ignored
    assert iv[0, 0] == pytest.approx(4.0)  # (sum w ivar)^2 / sum w^2 ivar with w = 1


def test_rebin_bins_without_data_are_empty():
    wave = np.linspace(5000, 6000, 100)
    s = Spectra(wave, np.ones((1, 100)), np.ones((1, 100)))
    fl, iv = rebin(s, LogGrid.quasarnet())
    lo = LogGrid.quasarnet().edges
    native = pixel_edges(wave)
    outside = (lo[1:] <= native[0]) | (lo[:-1] >= native[-1])
    assert np.all(iv[0, outside] == 0) and np.all(fl[0, outside] == 0)
    assert np.all(iv[0, ~outside] > 0) and np.allclose(fl[0, ~outside], 1.0)


def test_quasarnet_mode_reproduces_quasarnp_boss(real_dir, qn_reference):
    files = [real_dir / "boss" / f for f in qn_reference["boss_files"]]
    X, _, zwarn = prepare(redsift.read(files), LogGrid.quasarnet(), mode="quasarnet")
    diff = np.abs(X - qn_reference["boss_X"])
    # float32 round-off on values of order 10: largest difference seen 1.9e-6
    assert diff.max() < 1e-5, diff.max()
    assert np.all(zwarn == 0)


def test_quasarnet_mode_reproduces_quasarnp_desi(real_dir, qn_reference):
    s = redsift.read(real_dir / "desi" / "coadd-quasarnp-test.fits")
    X, _, zwarn = prepare(s, LogGrid.quasarnet(), mode="quasarnet")
    kept = qn_reference["desi_kept"]
    assert np.abs(X[kept] - qn_reference["desi_X"]).max() < 1e-5  # largest seen 3.8e-6
    # the one row QuasarNP dropped has no data at all: it stays in the batch, flagged
    dropped = sorted(set(range(s.nspec)) - set(kept.tolist()))
    assert dropped == [11]
    assert zwarn[11] & ZWarningMask.NODATA


def test_normalize_mean_rms_has_zero_weighted_mean_unit_rms(rng):
    flux = rng.normal(3, 2, (5, 200))
    ivar = rng.uniform(0.5, 2, (5, 200))
    ivar[0] = 0  # no weight: zeros
    X = normalize_mean_rms(flux, ivar)
    w = ivar[1:]
    mean = (w * X[1:]).sum(1) / w.sum(1)
    rms = np.sqrt((w * (X[1:] - mean[:, None]) ** 2).sum(1) / w.sum(1))
    np.testing.assert_allclose(mean, 0, atol=1e-5)
    np.testing.assert_allclose(rms, 1, rtol=1e-5)
    assert np.all(X[0] == 0)


def test_normalize_max():
    flux = np.array([[1.0, -4.0, 2.0], [0.0, 0.0, 0.0]])
    out = normalize_max(flux, np.array([[1, 1, 1], [1, 1, 1]]))
    np.testing.assert_allclose(out[0], [0.25, -1.0, 0.5])
    assert np.all(out[1] == 0)


def test_mask_sky_lines():
    wave = np.linspace(5500, 5700, 201)
    s = mask_sky_lines(Spectra(wave, np.ones((2, wave.size)), np.ones((2, wave.size))), half_width=3)
    near = np.abs(wave - 5578.9) <= 3
    assert np.array_equal(s.mask[0], near) and np.array_equal(s.mask[1], near)
    assert 5578.9 in SKY_LINES


def test_snr_median():
    flux = np.array([[2.0, 4.0, 6.0], [1.0, 1.0, 1.0]])
    ivar = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    snr = snr_median(flux, ivar)
    assert snr[0] == pytest.approx(3.0) and np.isnan(snr[1])


def test_coverage_flags():
    ivar = np.zeros((3, 10))
    ivar[1, :3] = 1
    ivar[2] = 1
    z = coverage_zwarn(ivar)
    assert z[0] & ZWarningMask.NODATA and z[0] & ZWarningMask.LITTLE_COVERAGE
    assert z[1] == ZWarningMask.LITTLE_COVERAGE
    assert z[2] == 0


def test_spectrum_not_covering_the_grid_is_flagged():
    # a spectrum entirely red-ward of the QuasarNET grid
    s = Spectra(np.linspace(10500, 11000, 100), np.ones((1, 100)), np.ones((1, 100)))
    X, ivar, zwarn = prepare(s)
    assert ivar.sum() == 0 and np.all(X == 0)
    assert zwarn[0] & ZWarningMask.NODATA and zwarn[0] & ZWarningMask.LITTLE_COVERAGE


def test_bin_quasarnet_needs_left_grid():
    s = Spectra(np.linspace(4000, 5000, 10), np.ones((1, 10)), np.ones((1, 10)))
    with pytest.raises(ValueError, match="left-edge"):
        bin_quasarnet(s, LogGrid.boss())


@pytest.mark.parametrize("compiled", [True, False])
def test_binning_by_runs_is_the_general_binning(real_dir, compiled, monkeypatch, rng):
    """The shared-grid paths of bin_quasarnet (the compiled pass of ``redsift.kernels``, and without numba
    the sparse product) and the general one (per-spectrum grids, bincount) give the same bits, on real
    spectra and on random ones with masked pixels, zero and negative weights."""
    import redsift
    from redsift import kernels
    from redsift.preprocess import bin_quasarnet

    if compiled and not kernels.AVAILABLE:
        pytest.skip("numba is not installed (pip install redsift[fast])")
    monkeypatch.setattr(kernels, "AVAILABLE", compiled)
    monkeypatch.setattr(kernels, "MIN_PIXELS", 0)  # small test batches through the compiled path too
    s = redsift.read(sorted(str(p) for p in (real_dir / "boss").glob("spec-*.fits")))  # one union grid
    wave = 10 ** (3.55 + 1e-4 * np.arange(4000))
    flux = rng.normal(1, 2, (7, 4000)).astype(np.float32)
    ivar = np.where(rng.uniform(size=(7, 4000)) < 0.1, 0, rng.uniform(0, 3, (7, 4000))).astype(np.float32)
    ivar[0, :50] = -1  # negative: masked on construction
    synth = redsift.Spectra(wave, flux, ivar, rng.uniform(size=(7, 4000)) < 0.05)
    for sp in (s, synth):
        assert sp.wave.ndim == 1
        per_row = redsift.Spectra(np.broadcast_to(sp.wave, sp.flux.shape).copy(), sp.flux, sp.ivar, sp.mask, sp.meta)
        a, b = bin_quasarnet(sp), bin_quasarnet(per_row)
        assert np.array_equal(a.flux.view(np.uint32), b.flux.view(np.uint32))
        assert np.array_equal(a.ivar.view(np.uint32), b.ivar.view(np.uint32))


def test_compiled_flux_conserving_rebin_is_the_sparse_product(rng, monkeypatch):
    """The flux-conserving rebin of spectra on one shared grid: the compiled pass (``redsift.kernels.rebin_shared``)
    gives the bits of the sparse products it replaces, with masked pixels, zero weights and bins without data."""
    import redsift
    from redsift import kernels
    from redsift.preprocess import rebin

    if not kernels.AVAILABLE:
        pytest.skip("numba is not installed (pip install redsift[fast])")
    wave = 10 ** (3.58 + 1e-4 * np.arange(3000))
    flux = rng.normal(1, 2, (9, 3000)).astype(np.float32)
    ivar = np.where(rng.uniform(size=(9, 3000)) < 0.1, 0, rng.uniform(0, 3, (9, 3000))).astype(np.float32)
    ivar[2, 1000:1400] = 0  # a gap: bins without data
    s = redsift.Spectra(wave, flux, ivar, rng.uniform(size=(9, 3000)) < 0.05)
    out = {}
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "AVAILABLE", compiled)
        monkeypatch.setattr(kernels, "MIN_PIXELS", 0)
        out[compiled] = rebin(s, LogGrid.boss())
    for a, b in zip(out[True], out[False]):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert (out[True][1][2] == 0).any()


def test_snr_median_compiled_equals_numpy(rng, monkeypatch):
    """The compiled S/N median (``redsift.kernels.snr_median``) gives the numpy path's bits: odd and even
    numbers of valid pixels, one valid pixel, none, zero and negative ivar, float32 and float64 input."""
    from redsift import kernels

    if not kernels.AVAILABLE:
        pytest.skip("numba is not installed (pip install redsift[fast])")
    flux = rng.normal(1, 2, (40, 57)).astype(np.float32)
    ivar = rng.uniform(0, 3, (40, 57)).astype(np.float32)
    ivar[rng.uniform(size=ivar.shape) < 0.3] = 0
    ivar[1] = 0                      # no valid pixel: NaN
    ivar[2, :] = 0
    ivar[2, 5] = 1.5                 # one valid pixel
    ivar[3, :10] = -1                # negative ivar: not valid
    ivar[4, :] = 1
    ivar[4, 0] = 0                   # an even count
    flux[5, 3] = np.nan              # a NaN among the valid values (sorted last)
    flux[6, :] = 2.0                 # ties
    out = {}
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "AVAILABLE", compiled)
        monkeypatch.setattr(kernels, "MIN_PIXELS", 0)
        out[compiled] = [snr_median(f, i) for f, i in ((flux, ivar), (flux.astype(np.float64), ivar.astype(np.float64)))]
    for a, b in zip(out[True], out[False]):
        assert np.isnan(a[1]) and np.isnan(b[1])
        assert np.array_equal(a.view(np.uint64), b.view(np.uint64))


def test_normalize_mean_rms_compiled_equals_numpy(rng, monkeypatch, boss_files):
    """The compiled renormalisation (``redsift.kernels.normalize_mean_rms``: numpy's pairwise summation
    order) gives the numpy path's bits: random rows of every length from 1 to 300 and of QuasarNET's 443
    bins, rows without weight, zero rms, and the real BOSS spectra on the QuasarNET grid."""
    from redsift import kernels

    if not kernels.AVAILABLE:
        pytest.skip("numba is not installed (pip install redsift[fast])")
    monkeypatch.setattr(kernels, "MIN_PIXELS", 0)
    cases = []
    for n in list(range(1, 301)) + [443, 1000, 4640, 7781]:
        f = (rng.normal(size=(3, n)) * 10 ** rng.uniform(-3, 3, (3, 1))).astype(np.float32)
        w = rng.uniform(0, 2, (3, n)).astype(np.float32)
        w[1] = 0  # no weight
        f[2] = 5.0  # zero rms
        cases.append((f, w))
    b = bin_quasarnet(redsift.read(boss_files))
    cases.append((b.flux, b.ivar))
    for f, w in cases:
        monkeypatch.setattr(kernels, "AVAILABLE", True)
        fast = normalize_mean_rms(f, w)
        monkeypatch.setattr(kernels, "AVAILABLE", False)
        slow = normalize_mean_rms(f, w)
        assert fast.dtype == slow.dtype and np.array_equal(fast.view(np.uint32), slow.view(np.uint32)), f.shape


def test_spectra_snr_in_blocks_equals_the_whole_batch(rng):
    """``spectra_snr`` (a batch's S/N a block of rows at a time, masked pixels not valid, ``redsift ingest``'s)
    gives ``snr_median(flux, weights)`` of the whole batch bit for bit: blocks of one row, of three with a
    remainder, and wider than the batch; a row wholly masked gives NaN."""
    from redsift.preprocess import spectra_snr
    from redsift.spectra import Spectra

    flux = rng.normal(1, 2, (10, 57)).astype(np.float32)
    ivar = rng.uniform(0.1, 3, (10, 57)).astype(np.float32)
    mask = rng.uniform(size=flux.shape) < 0.2
    mask[4] = True
    s = Spectra(np.linspace(4000, 9000, 57), flux, ivar, mask)
    want = snr_median(s.flux, s.weights)
    assert np.isnan(want[4]) and np.isfinite(np.delete(want, 4)).all()
    for rows in (1, 3, 64):
        got = spectra_snr(s, rows=rows)
        assert np.array_equal(got, want, equal_nan=True)
