"""The eigen family (issue 19): EM-PCA eigenspectra, the coarse + native chi-square scan, the Redrock-style
columns, refinement inside the combined default, bad input and the evaluation section.

Real code paths: datasets written by the simulator (parametric mode, seeded), the generic train loop's fit
hook and release, predict on real fixture files and datasets, ``redsift evaluate``."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from redsift.errors import RedsiftError
from redsift.evaluate.eigen import eigen_metrics, roc_auc
from redsift.models import create_model, load_model, save_model
from redsift.models.eigen import RAW_FIELDS, D, decode, empca, scan, scan_window
from redsift.predict import predict_catalog
from redsift.simulate import simulate
from redsift.train import TrainConfig, train
from redsift.zwarning import ZWarningMask

MIX = {"QSO": 0.3, "STAR": 0.4, "GALAXY": 0.3}
TYPES = {"name": "types", "classes": [{"name": t, "spectype": t, "match": {"CLASS": [t]}}
                                      for t in ("QSO", "GALAXY", "STAR")]}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    d = tmp_path_factory.mktemp("eig")
    simulate(900, "boss", d / "train", mix=MIX, seed=11, grid="boss", star_mix="uniform", progress=False, block=450)
    simulate(300, "boss", d / "val", mix=MIX, seed=12, grid="boss", star_mix="uniform", progress=False, block=300)
    return d


@pytest.fixture(scope="module")
def fitted(sets):
    out = sets / "run"
    train(TrainConfig(data=str(sets / "train"), val=str(sets / "val"), out=str(out), family="eigen", seed=0,
                      model={"ncomp": 3, "em_iter": 8, "taxonomy": TYPES}), progress=False)
    return out


def _toy_model(ncomp=2):
    """An eigen model with known templates (smooth continuum + lines) on the rest grid of the qso taxonomy."""
    m = create_model("eigen", taxonomy="qso", ncomp=ncomp)
    cfg = m.config
    lam = 10 ** cfg.rest_grid.loglam
    cont = (lam / 3000.0) ** -0.5
    lines = sum(np.exp(-0.5 * ((lam - c) / 6.0) ** 2) for c in (1216, 1549, 1909, 2799, 4862, 5008, 6564))
    basis = [cont, lines, np.sin(lam / 300.0) * 0.1][:ncomp]
    with torch.no_grad():
        for k in range(len(cfg.tax.classes)):
            m.templates[k] = torch.tensor(np.array(basis), dtype=torch.float32)
            m.valid[k] = 1.0
    m.config = dataclasses.replace(cfg, zranges={c: [0.05, 4.0] for c in cfg.tax.classes})
    m._cache = {}
    return m


def _spectrum_at(m, s, amps, noise=0.0, rng=None):
    cfg = m.config
    npix = cfg.logrid.npix
    o = cfg.s_max - s
    T = m.templates[0].numpy()[:, o:o + npix]
    f = np.asarray(amps) @ T
    ivar = np.full(npix, 100.0, np.float32)
    if noise:
        f = f + rng.normal(0, noise, npix)
        ivar[:] = 1 / noise**2
    return f.astype(np.float32), ivar


def test_empca_recovers_a_noisy_masked_subspace(rng):
    n, r, k = 400, 300, 3
    basis = np.linalg.qr(rng.normal(size=(r, k)))[0].T
    coef = rng.normal(size=(n, k)) * np.array([10, 5, 2])
    F = coef @ basis + rng.normal(0, 0.05, (n, r))
    W = np.where(rng.uniform(size=(n, r)) < 0.3, 0.0, 1 / 0.05**2)  # 30% missing
    P, C = empca(F, W, k, iters=15)
    # principal angles between the learned and the true subspaces are ~0
    s = np.linalg.svd(P @ basis.T, compute_uv=False)
    assert s.min() > 0.999
    assert np.allclose(P @ P.T, np.eye(k), atol=1e-4)


def test_decoder_fit_recovers_the_subspace_empca_finds(rng):
    """The linear decoder trained by gradient descent (from random orthonormal rows) reaches the subspace
    of a noisy, 30%-masked low-rank set that EM-PCA reaches, its loss falls epoch by epoch to the noise's
    level, the result is orthonormal, and the same seed gives the same bits."""
    import torch

    from redsift.models.eigen import decoder_fit

    n, r, k = 400, 300, 3
    basis = np.linalg.qr(rng.normal(size=(r, k)))[0].T
    coef = rng.normal(size=(n, k)) * np.array([10, 5, 2])
    F = (coef @ basis + rng.normal(0, 0.05, (n, r))).astype(np.float32)
    W = np.where(rng.uniform(size=(n, r)) < 0.3, 0.0, 1 / 0.05**2).astype(np.float32)
    torch.manual_seed(1)
    before = torch.rand(2)
    hist = []
    P, C = decoder_fit(F, W, k, epochs=40, lr=0.2, batch=64, seed=3, history=hist)
    assert len(hist) == 40 and hist[-1] < 0.1 * hist[0]
    assert hist[-1] == pytest.approx(0.05**2, rel=0.3)  # the weighted residual per pixel: the noise's variance
    s = np.linalg.svd(P @ basis.T, compute_uv=False)
    assert s.min() > 0.999
    assert np.allclose(P @ P.T, np.eye(k), atol=1e-4)
    Pe, _ = empca(F, W, k, iters=15)
    assert np.linalg.svd(P @ Pe.T, compute_uv=False).min() > 0.999
    P2, C2 = decoder_fit(F, W, k, epochs=40, lr=0.2, batch=64, seed=3)
    assert np.array_equal(P, P2) and np.array_equal(C, C2)
    torch.manual_seed(1)
    assert torch.equal(before, torch.rand(2))  # the global random state left alone


def test_scan_finds_the_shift_and_equals_a_brute_force_chi2(rng):
    m = _toy_model()
    s_true = int(round(math.log10(1 + 2.1234) / D))
    f, iv = _spectrum_at(m, s_true, [2.0, 1.5], noise=0.05, rng=rng)
    X = np.concatenate([f, iv])[None]
    raw = scan(m, X)
    d = decode(raw, m.config)
    assert abs(raw[0, 1] - s_true) < 0.5  # native pixel of the answer (parabola vertex)
    z_true = 10 ** (s_true * D) - 1
    assert abs(d["z"][0] - z_true) / (1 + z_true) < 2e-5
    assert 0.5 < d["rchi2"][0] < 1.5
    # the native stage's chi2 equals an explicit weighted least-squares fit at the same shifts
    from redsift.models.eigen import _data, _native

    flux, ivar, D4, ntot = _data(torch.as_tensor(X), m.config.logrid.npix)
    lo, hi = m.class_shifts()[0][1:]
    cmp, chi2, n, s = _native(m, 0, torch.tensor([s_true]), 3, D4, ntot, lo, hi)
    for j, sj in enumerate(s[0].tolist()):
        o = m.config.s_max - sj
        T = m.templates[0].numpy()[:, o:o + len(f)].astype(float)
        w = iv.astype(float)
        a = np.linalg.solve((T * w) @ T.T, (T * w) @ f)
        brute = float(np.sum(w * (f - a @ T) ** 2))
        assert chi2[0, j].item() == pytest.approx(brute, rel=2e-3, abs=0.5)
    # ZERR from the curvature: a sensible size at this S/N (pulls are calibrated at release)
    assert 0 < d["zerr"][0] < 1e-3


def test_coarse_correlations_by_fft_equal_a_direct_sum(rng):
    """The coarse stage's FFTs span only the block templates its shifts reach (``U + nb - 1`` points): equal to
    the direct float64 sums over every shift, the short-range product path and ranges ending at the rest grid's
    edge (zero padding beyond it) included."""
    from redsift.models.eigen import _blocks, _class_pack, _correlations, _data, _kinds, _q, _tidx

    m = _toy_model(ncomp=2)
    cfg = m.config
    npix = cfg.logrid.npix
    X = np.concatenate([rng.normal(1, 0.3, (3, npix)), rng.uniform(0.5, 2, (3, npix))], 1).astype(np.float32)
    X[1, npix + 100:npix + 900] = 0  # a masked run
    q = _q(cfg, 0)
    D4 = _blocks(_data(torch.as_tensor(X), npix)[2], q)
    pk = _class_pack(m, 0)
    Pb, nb, K = pk["Pb"].double().numpy(), pk["nb"], pk["kc"]
    Pb = np.pad(Pb, ((0, 0), (0, nb)))
    kinds, tidx = _kinds(K), _tidx(K)
    u_end = (pk["Pb"].shape[1] - 1)  # the last shift at which the first block still meets a template block
    for u_lo, u_hi in ((5, 40), (10, 400), (u_end - 300, u_end)):
        c = _correlations(m, 0, u_lo, u_hi, D4).double().numpy()
        assert c.shape == (3, len(tidx), u_hi - u_lo + 1)
        D = D4.double().numpy()
        for p, (kind, t) in enumerate(zip(kinds, tidx)):
            ref = np.stack([D[:, kind] @ Pb[t, u:u + nb] for u in range(u_lo, u_hi + 1)], 1)
            np.testing.assert_allclose(c[:, p], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_compiled_native_sums_equal_the_batched_torch_path(rng, monkeypatch):
    """The native stage's compiled CPU kernel (numba) against the torch path (Hankel rows, batched products,
    float64): numpy's sums to 1e-10 at every shift of a window, with masked pixels; a whole scan gives the same
    answers."""
    pytest.importorskip("numba")
    import redsift.models.eigen as eig
    from redsift.models import eigen_kernels

    m = _toy_model(ncomp=3)
    npix = m.config.logrid.npix
    rows = []
    for z, amps, noise in ((0.4, [1.0, 2.0, 0.3], 0.5), (2.1, [2.0, 1.5, -0.2], 0.05), (3.3, [0.5, 4.0, 0.1], 0.02)):
        f, iv = _spectrum_at(m, int(round(math.log10(1 + z) / D)), amps, noise=noise, rng=rng)
        iv[rng.uniform(size=npix) < 0.1] = 0  # masked pixels
        rows.append(np.concatenate([f, iv]))
    X = np.array(rows)
    flux, ivar, D4, ntot = eig._data(torch.as_tensor(X), npix)
    ks = torch.tensor([0, 0, 0])
    lo, hi = m.class_shifts()[0][1:]
    s0 = torch.tensor([int(round(math.log10(1 + z) / D)) + d for z, d in ((0.4, 2), (2.1, -3), (3.3, 0))])
    # the kernel's sums against numpy's in float64 at every shift of each window
    T, V = eig._kernel_templates(m)
    olo = np.array([3, 250, 1000])
    c = eigen_kernels.window_sums(D4.double().numpy(), T, V, ks.numpy(), olo, 11)
    # float32 data widened as read: the same float64 sums as from the float64 copy
    assert np.array_equal(eigen_kernels.window_sums(D4.numpy(), T, V, ks.numpy(), olo, 11), c)
    K = T.shape[1]
    pairs = [(a, b) for a in range(K) for b in range(a, K)]
    Dn = D4.double().numpy()
    for r in range(3):
        for t in range(11):  # increasing shift: the largest offset first
            o = olo[r] + 10 - t
            Tw, Vw = T[0][:, o:o + npix].astype(float), V[0][o:o + npix].astype(float)
            want = [Dn[r, 0] @ Tw[a] for a in range(K)] + [Dn[r, 1] @ (Tw[a] * Tw[b]) for a, b in pairs]
            want += [Dn[r, 2] @ Vw, Dn[r, 3] @ Vw]
            np.testing.assert_allclose(c[r, :, t], want, rtol=1e-10, atol=1e-9)
    # the native stage through the kernel and through the torch path (float32 template products): same
    # shifts and pixels, chi2 to the products' float32 rounding
    fast = eig._native(m, ks, s0, 5, D4.double(), ntot, lo, hi)
    ref = eig._native(m, ks, s0, 5, D4, ntot, lo, hi, H=eig._hankel(D4, 5, torch.float64))
    assert torch.equal(fast[3], ref[3]) and torch.equal(fast[2], ref[2])
    assert torch.allclose(fast[1], ref[1], rtol=1e-5)
    raw_fast = scan(m, X)
    # without the final stage: the same answer and chi-square, no coefficients or anomaly statistics
    lean = scan(m, X, final=False)
    keep = [RAW_FIELDS.index(n) for n in ("cls", "s", "sigma_s", "chi2", "dchi2", "npix", "zwarn", "rchi2", "s_int")]
    np.testing.assert_array_equal(lean[:, keep], raw_fast[:, keep])
    assert np.isnan(lean[:, RAW_FIELDS.index("anomaly")]).all() and np.isnan(lean[:, len(RAW_FIELDS):]).all()
    # the joint fit of two solutions (the anomaly score's two objects in one fibre): the kernel's chi-squares
    # against explicit float64 least squares on the first solution's coverage
    k1, s1 = torch.tensor([0, 0]), torch.tensor([int(round(math.log10(1 + z) / D)) for z in (0.4, 2.1)])
    k2, s2 = torch.tensor([0, 0]), torch.tensor([int(round(math.log10(1 + z) / D)) for z in (1.3, 0.9)])
    c1, cj = eig._joint_chi2(m, k1, s1, k2, s2, flux[:2], ivar[:2])
    for r in range(2):
        o1, o2 = m.config.s_max - int(s1[r]), m.config.s_max - int(s2[r])
        T1 = (T[0][:, o1:o1 + npix]).astype(float)
        T2 = (T[0][:, o2:o2 + npix]).astype(float)
        w = ivar[r].double().numpy() * (V[0][o1:o1 + npix] > 0)
        f = flux[r].double().numpy()
        for Tm, got in ((T1, c1[r]), (np.vstack([T1, T2]), cj[r])):
            M, b = (Tm * w) @ Tm.T, (Tm * w) @ f
            a = np.linalg.solve(M + m.config.ridge * np.diag(M).mean() * np.eye(len(M)), b)  # _ridge_solve's ridge
            assert float(got) == pytest.approx(float(np.sum(w * f * f) - a @ b), rel=1e-9)
    monkeypatch.setattr(eigen_kernels, "AVAILABLE", False)
    raw_ref = scan(m, X)
    i = {n: RAW_FIELDS.index(n) for n in ("cls", "s_int", "chi2", "s")}
    assert np.array_equal(raw_fast[:, i["cls"]], raw_ref[:, i["cls"]])
    assert np.array_equal(raw_fast[:, i["s_int"]], raw_ref[:, i["s_int"]])
    np.testing.assert_allclose(raw_fast[:, i["chi2"]], raw_ref[:, i["chi2"]], rtol=1e-5)
    np.testing.assert_allclose(raw_fast[:, i["s"]], raw_ref[:, i["s"]], atol=1e-3)


def test_compiled_final_stage_equals_the_torch_path(rng, monkeypatch):
    """The final stage through the compiled kernels (the answer's float64 sums, then every statistic in one pass
    per spectrum) against the torch path (stacked windows, batched products): coefficients, anomaly score and
    its parts, the S/N median and the residuals' shape, with masked pixels, cosmic-ray spikes, an answer
    partly off the templates' coverage, a spectrum without data and rows without an answer or a second one."""
    pytest.importorskip("numba")
    import redsift.models.eigen as eig
    from redsift.models import eigen_kernels

    m = _toy_model(ncomp=3)
    cfg = m.config
    npix = cfg.logrid.npix
    rows, shifts = [], []
    for z, amps, noise in ((0.4, [1.0, 2.0, 0.3], 0.5), (2.1, [2.0, 1.5, -0.2], 0.05), (3.3, [0.5, 4.0, 0.1], 0.02),
                           (1.0, [1.0, 1.0, 0.0], 0.1), (0.8, [1.0, 1.0, 0.0], 0.1)):
        s = int(round(math.log10(1 + z) / D))
        f, iv = _spectrum_at(m, s, amps, noise=noise, rng=rng)
        iv[rng.uniform(size=npix) < 0.1] = 0
        f[rng.choice(npix, 20, replace=False)] += 30 * noise  # spikes: |r| > 5
        rows.append(np.concatenate([f, iv]))
        shifts.append(s)
    rows[4][npix:] = 0  # no data at all
    X = np.array(rows)
    flux, ivar, _, _ = eig._data(torch.as_tensor(X), npix)
    k = torch.tensor([0, 0, 0, -1, 0])  # row 3: no answer
    s = torch.tensor(shifts)
    s[2] = cfg.s_max  # the largest shift: part of the spectrum lies beyond the templates' coverage
    k2 = torch.tensor([0, -1, 0, 0, 0])  # row 1: no second solution
    s2 = torch.tensor([shifts[1], 0, shifts[0], 0, shifts[0]])
    fast = eig._final(m, k, s, flux, ivar, k2, s2)
    monkeypatch.setattr(eigen_kernels, "AVAILABLE", False)
    ref = eig._final(m, k, s, flux, ivar, k2, s2)
    for got, want in zip(fast, ref):
        got, want = got.double().numpy(), want.double().numpy()
        assert np.array_equal(np.isnan(got), np.isnan(want))
        for j in range(got.shape[1]):  # the joint-fit gain and the score adding it: float64 against float32 chi2
            rtol = 2e-3 if got.shape[1] > cfg.ncomp and j in (0, 2) else 1e-4
            np.testing.assert_allclose(got[:, j], want[:, j], rtol=rtol, atol=1e-4, err_msg=f"column {j}")
    anom = fast[1].numpy()
    assert np.isnan(anom[3]).all() and np.isnan(anom[4, 3])  # no answer; no fitted pixel for the S/N
    # as a refinement window calls it: no second solution, no S/N or residual shape
    lean = eig._final(m, k, s, flux, ivar, snr=False)
    monkeypatch.setattr(eigen_kernels, "AVAILABLE", True)
    lean_fast = eig._final(m, k, s, flux, ivar, snr=False)
    np.testing.assert_allclose(lean_fast[0].numpy(), lean[0].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(lean_fast[1][:, :3].numpy(), lean[1][:, :3].numpy(), rtol=1e-4, atol=1e-4)
    assert np.isnan(lean_fast[1][:, 3:].numpy()).all() and (lean_fast[1][[0, 1, 2, 4], 2].numpy() == 0).all()
    assert anom[0, 2] > 0 and (anom[[0, 1, 2], 5] > -4).all()  # a joint-fit gain; spikes counted


def test_compiled_scan_inputs_equal_the_torch_path(rng, monkeypatch):
    """The scan's inputs (cleaned flux and ivar, data vectors, pixel counts) from the compiled pass equal the
    torch path's, for float32 and float64 inputs with NaN, infinite and negative values."""
    pytest.importorskip("numba")
    import redsift.models.eigen as eig
    from redsift.models import eigen_kernels

    npix = 300
    X = np.concatenate([rng.normal(1, 2, (6, npix)), rng.uniform(-0.5, 3, (6, npix))], 1)
    X[0, 5] = X[3, 11] = np.nan
    X[1, npix + 7], X[2, 9], X[4, npix + 13], X[3, npix + 20] = np.inf, -np.inf, np.nan, -np.inf
    X[5, npix:] = 0  # no data
    for dt in (np.float32, np.float64):
        Xt = torch.as_tensor(X.astype(dt))
        fast = eig._data(Xt, npix)
        monkeypatch.setattr(eigen_kernels, "AVAILABLE", False)
        ref = eig._data(Xt, npix)
        monkeypatch.setattr(eigen_kernels, "AVAILABLE", True)
        for got, want in zip(fast, ref):
            assert got.dtype == want.dtype == torch.float32 and torch.equal(got, want)
    assert fast[3][5] == 0 and fast[0][0, 5] == 0 and fast[1][1, 7] == 0
    assert fast[0][3, 20] == np.float32(X[3, 20]) and fast[1][3, 20] == 0  # ivar -inf: clamped to 0, flux kept


def test_scan_window_refines_around_a_prior(rng):
    m = _toy_model()
    s_true = int(round(math.log10(1 + 0.8) / D))
    f, iv = _spectrum_at(m, s_true, [1.0, 3.0], noise=0.05, rng=rng)
    X = np.concatenate([f, iv])[None]
    z_true = 10 ** (s_true * D) - 1
    raw = scan_window(m, X, [0], [z_true + 5e-4 * (1 + z_true)], [20])  # prior 150 km/s off
    d = decode(raw, m.config)
    assert abs(d["z"][0] - z_true) / (1 + z_true) < 2e-5
    assert not d["zwarn"][0] & int(ZWarningMask.Z_FITLIMIT)
    raw = scan_window(m, X, [0], [0.8 * 1.01], [5])  # prior outside a narrow window: the edge is flagged
    assert decode(raw, m.config)["zwarn"][0] & int(ZWarningMask.Z_FITLIMIT)
    # a prior outside the class's range (0.05-4.0): the window moves to the range's end; flagged, even
    # where a local minimum lies inside the moved window
    for prior in (0.01, 4.6):
        assert decode(scan_window(m, X, [0], [prior], [150]), m.config)["zwarn"][0] & int(ZWarningMask.Z_FITLIMIT)


def test_wide_windows_are_scanned_in_bounded_groups(rng, monkeypatch):
    """Many spectra with wide windows: the rows are scanned in groups whose Hankel rows fit WINDOW_BYTES
    (300 of them at 150 pixels once asked for 14 GB at once); the answers are those of one group (to float32 rounding)."""
    import redsift.models.eigen as eig

    m = _toy_model()
    zs = [0.5, 0.8, 1.2, 2.0, 2.5]
    X = np.stack([np.concatenate(_spectrum_at(m, int(round(math.log10(1 + z) / D)), [1.0, 2.0], 0.05, rng)) for z in zs])
    args = (m, X, [0] * 5, [z + 0.002 for z in zs], [150, 150, 150, 150, 40])
    whole = scan_window(*args)
    monkeypatch.setattr(eig, "WINDOW_BYTES", 1)  # one spectrum per group
    np.testing.assert_allclose(scan_window(*args), whole, rtol=1e-4)  # float32 sums: batch-size rounding
    on_pixels = [10 ** (round(math.log10(1 + z) / D) * D) - 1 for z in zs]
    np.testing.assert_allclose((decode(whole, m.config)["z"] - on_pixels) / (1 + np.array(zs)), 0, atol=2e-5)


def test_bad_input_gets_rows_and_bits(rng):
    m = _toy_model()
    from redsift.models.registry import get_family

    fam = get_family("eigen")
    s = int(round(math.log10(1 + 1.5) / D))
    good_f, good_i = _spectrum_at(m, s, [1.0, 1.0], noise=0.05, rng=rng)
    flux = np.tile(good_f, (5, 1))
    ivar = np.tile(good_i, (5, 1))
    ivar[1] = 0  # all masked
    flux[2, ::3] = np.nan  # NaNs
    ivar[3, :2000] = -1  # negative ivar
    ivar[4, 600:] = 0  # shorter than the templates' overlap needs
    p = fam.prepare_gridded(m, flux, ivar, np.zeros(5, np.int64))
    raw = fam.infer(m, p["X"])
    cols, zwarn = fam.columns(m, raw, p)
    assert len(cols["Z"]) == 5
    assert np.isfinite(cols["Z"][[0, 2, 3]]).all()
    assert zwarn[1] & int(ZWarningMask.NODATA) and np.isnan(cols["Z"][1])
    assert zwarn[4] & int(ZWarningMask.LITTLE_COVERAGE)
    assert abs(cols["Z"][2] - 1.5) / 2.5 < 1e-3


def test_fit_release_predict_evaluate(sets, fitted, tmp_path, real_dir):
    from redsift.evaluate.report import write_report
    from redsift.models.registry import get_family
    from redsift.train.release import release

    model = load_model(fitted / "best")
    assert model.family == "eigen" and set(model.config.zranges) >= {"QSO", "GALAXY", "STAR"}
    assert float(model.valid.sum()) > 0
    release(fitted / "best", str(sets / "val"), tmp_path / "rel")
    rel = load_model(tmp_path / "rel")
    assert rel.config.zerr_scale and rel.config.anomaly_threshold is not None
    # held-out simulated spectra (parametric mode): galaxies and quasars placed right, stars typed STAR
    cat = predict_catalog(rel, [str(sets / "val")], progress=False)
    from redsift.data.store import Dataset

    meta = Dataset(sets / "val").meta
    m = eigen_metrics(cat["SPECTYPE"], cat["Z"], cat["ZERR"], meta["CLASS"], meta["Z"], cat["ZWARN"])
    assert m["STAR"]["typed"] > 0.7  # one STAR class of 3 components for every parametric star
    assert m["GALAXY"]["gf_0.01"] > 0.9 and m["GALAXY"]["mad"] < 1e-3
    assert m["QSO"]["gf_0.01"] > 0.8
    for col in ("CHI2", "DELTACHI2", "NPIXELS", "COEFF", "RCHI2", "ANOMALY"):
        assert col in cat.colnames
    assert cat["COEFF"].shape[1] == 3
    # real BOSS files: a row each, Redrock's columns
    files = [str(p) for p in sorted((real_dir / "boss").glob("spec-*.fits"))[:3]]
    real = predict_catalog(rel, files, progress=False)
    assert len(real) == 3 and np.all(np.asarray(real["NPIXELS"]) > 1000)
    # the evaluation section: table, degeneracy plot, chi-square curves (the model is named in the header)
    path = tmp_path / "cat.fits"
    cat.write(path)
    text = write_report(path, str(sets / "val"), tmp_path / "ev", family=get_family("eigen"))
    assert "GF(1e-3)" in text and (tmp_path / "ev" / "deltachi2.png").exists()


def test_combined_with_eigen_refinement(sets, fitted, tmp_path, real_dir):
    from redsift.models.combined import combine

    e = load_model(fitted / "best")
    q = load_model("quasarnet-boss-sim")
    c = create_model("classifier", taxonomy=TYPES, channels=[4, 4, 4, 4], fc=8)
    save_model(combine(c, q, eigen=e), tmp_path / "comb")
    model = load_model(tmp_path / "comb")
    files = [str(p) for p in sorted((real_dir / "boss").glob("spec-*.fits"))[:3]]
    cat = predict_catalog(model, files, progress=False)
    assert {"Z_EIGEN", "ZERR_EIGEN", "CHI2", "ANOMALY"} <= set(cat.colnames)
    used = np.asarray(cat["Z_METHOD"]) == "EIGEN"
    np.testing.assert_array_equal(np.asarray(cat["Z"])[used], np.asarray(cat["Z_EIGEN"])[used])
    np.testing.assert_array_equal(np.asarray(cat["Z"])[~used], np.asarray(cat["Z_CLASSIFIER"])[~used])
    # Z_FITLIMIT exactly where the classifier's redshift lies outside what the eigen part learnt for its type:
    # none here; with the galaxies' learnt range cut to z < 0.5 (the untrained classifier says z ~1.2), all
    assert not np.any(np.asarray(cat["ZWARN"]) & int(ZWarningMask.Z_FITLIMIT))
    zr = dict(model.eigen.config.zranges)
    zr.update({t: [-0.005, 0.5] for t in ("GALAXY", "QSO")})
    model.eigen.config = dataclasses.replace(model.eigen.config, zranges=zr)
    cut = predict_catalog(model, files, progress=False)
    beyond = np.asarray(cut["Z_CLASSIFIER"]) > 0.5
    st = np.char.strip(np.asarray(cut["SPECTYPE"]).astype(str))
    assert beyond.any() and set(st[beyond]) <= {"GALAXY", "QSO"}
    got = (np.asarray(cut["ZWARN"]) & int(ZWarningMask.Z_FITLIMIT)) > 0
    np.testing.assert_array_equal(got, beyond)
    np.testing.assert_array_equal(np.asarray(cut["Z"])[beyond], np.asarray(cut["Z_CLASSIFIER"])[beyond])
    with pytest.raises(Exception, match="eigen"):
        combine(c, q, eigen=q)


def test_roc_auc_is_the_pair_ordering_probability(rng):
    s = np.round(rng.normal(size=200), 1)  # with ties
    y = rng.uniform(size=200) < 1 / (1 + np.exp(-2 * s))
    pos, neg = s[y], s[~y]
    pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
    assert roc_auc(s, y) == pytest.approx(pairs)


def test_empca_is_reproducible_and_leaves_the_global_rng_alone(rng):
    import torch

    from redsift.models.eigen import empca

    F = rng.normal(size=(40, 60)).astype(np.float32)
    W = (rng.uniform(size=F.shape) > 0.1).astype(np.float32)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = empca(F, W, 3, seed=5)
    after = torch.rand(3)
    b = empca(F, W, 3, seed=5)
    assert torch.equal(before, after)
    for x, y in zip(a, b):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_zerr_calibration_recovers_scale_and_floor(rng):
    """fit_zerr_cell: Gaussian errors give no floor and the pulls' spread; errors of a known scale plus a
    known floor (the template mismatch the curvature cannot see) give both back, and the calibrated ZERR
    then covers 68% and 95% of held-out draws."""
    from redsift.models.eigen import fit_zerr_cell

    e = rng.uniform(1e-5, 1e-4, 20000)
    k, f = fit_zerr_cell(rng.normal(0, 1.5 * e), e)
    assert abs(k - 1.5) < 0.05 and f < 1e-5  # below every error: no floor to speak of
    k, f = fit_zerr_cell(rng.normal(0, np.hypot(2.0 * e, 5e-5)), e)
    assert abs(k - 2.0) < 0.2 and abs(f - 5e-5) < 1e-5
    e2 = rng.uniform(1e-5, 1e-4, 20000)
    pull = np.abs(rng.normal(0, np.hypot(2.0 * e2, 5e-5))) / np.hypot(k * e2, f)
    assert abs(np.mean(pull < 1) - 0.683) < 0.015 and abs(np.mean(pull < 1.96) - 0.95) < 0.01


def test_zerr_bands_trade_the_68_point_for_the_95_point_of_heavy_tails(rng):
    """fit_zerr_cell with bands: on Gaussian pulls the same answer as the exact-68% rule; on heavy-tailed pulls
    (Student t, 3 degrees of freedom) the exact rule leaves the 95% coverage far below its band, the bands rule
    puts both coverages nearer the middle of their bands (the larger distance in band half-widths smaller)."""
    from redsift.models.combined import ZERR_BANDS
    from redsift.models.eigen import fit_zerr_cell

    e = rng.uniform(1e-5, 1e-4, 20000)
    dz = rng.normal(0, 1.5 * e)
    k0, f0 = fit_zerr_cell(dz, e)
    k1, f1 = fit_zerr_cell(dz, e, bands=ZERR_BANDS)
    assert abs(k1 / k0 - 1) < 0.03 and f1 < 1e-5

    def miss(k, f, dz):
        p = np.abs(dz) / np.hypot(k * e, f)
        (a1, b1), (a2, b2) = ZERR_BANDS
        c1, c2 = np.mean(p < 1), np.mean(p < 1.96)
        return c1, c2, max(abs(c1 - (a1 + b1) / 2) / ((b1 - a1) / 2), abs(c2 - (a2 + b2) / 2) / ((b2 - a2) / 2))

    dz = rng.standard_t(3, 20000) * 1.5 * e
    c68, c95, m0 = miss(*fit_zerr_cell(dz, e), dz)
    assert abs(c68 - 0.683) < 0.01 and c95 < 0.93
    b68, b95, m1 = miss(*fit_zerr_cell(dz, e, bands=ZERR_BANDS), dz)
    # (measured: exact 0.683 / 0.901, bands 0.725 / 0.920): both misses smaller, the 68% point a little wide
    assert m1 < m0 - 0.5 and b95 > c95 + 0.01 and 0.70 <= b68 <= 0.76


def test_zerr_cells_per_class_undo_the_heavy_tails_of_a_mixed_type(rng):
    """Two classes of one type whose curvature errors are off by different factors (a white dwarf's
    broad lines against a G star's many narrow ones): one factor per type leaves heavy tails (95% coverage
    well below 0.95); cells per class, looked up before the type's, cover 68% and 95% of held-out draws in
    each class; a class without a cell falls back to its type's."""
    from redsift.models.eigen import fit_zerr_cells
    from redsift.models.family import cell_values

    n = 6000
    cls = np.where(np.arange(n) % 2 == 0, "WD", "G")
    e = rng.uniform(1e-5, 1e-4, n)
    true_k = np.where(cls == "WD", 4.0, 1.0)

    def draw():
        return rng.normal(0, true_k * e)

    z = np.full(n, 0.0)
    types, surveys = np.full(n, "STAR"), np.full(n, "boss")
    for by_class in (False, True):
        scale, floor, _ = fit_zerr_cells(draw(), e, z, types, surveys, classes=cls if by_class else None)
        err = np.hypot(cell_values(scale, types, surveys, 1.0, cls) * e, cell_values(floor, types, surveys, 0.0, cls))
        pull = np.abs(draw()) / err
        if not by_class:
            assert np.mean(pull < 1.96) < 0.93 and "WD" not in scale
        else:
            assert set(scale) >= {"WD", "WD/boss", "G", "G/boss", "STAR"}
            for c in ("WD", "G"):
                assert abs(np.mean(pull[cls == c] < 1) - 0.683) < 0.03
                assert abs(np.mean(pull[cls == c] < 1.96) - 0.95) < 0.02
    table = {"STAR": 1.0, "STAR/boss": 2.0, "WD": 3.0, "WD/desi": 4.0}
    got = cell_values(table, ["STAR"] * 4, ["boss", "desi", "desi", "boss"], 0.0, ["K", "WD", "", "WD"])
    np.testing.assert_array_equal(got, [2.0, 4.0, 1.0, 3.0])


def test_zerr_and_anomaly_cells_follow_the_survey():
    """A row takes its spectral type / survey cell, else its spectral type's; RCHI2 > 1 inflates the
    curvature error; the anomaly threshold is the survey's where the release set one."""
    from redsift.models.eigen import EigenConfig, calibrated_zerr
    from redsift.models.family import Prepared
    from redsift.models.registry import get_family

    cfg = EigenConfig(taxonomy=TYPES, ncomp=1, zerr_scale={"GALAXY": 2.0, "GALAXY/lamost": 3.0},
                      zerr_floor={"GALAXY": 0.0, "GALAXY/lamost": 4e-5}, zerr_rchi2=True,
                      anomaly_threshold=10.0, anomaly_survey={"lamost": 13.0})
    sig = np.full(4, 1e-5)
    out = calibrated_zerr(sig, [1.0, 4.0, 1.0, 0.5], ["GALAXY"] * 4, ["boss", "boss", "lamost", ""], cfg)
    np.testing.assert_allclose(out, [2e-5, 4e-5, np.hypot(3e-5, 4e-5), 2e-5])
    m = create_model("eigen", taxonomy=TYPES, ncomp=1)
    m.config = cfg
    raw = np.full((3, len(RAW_FIELDS) + 1), np.nan)
    for name, value in dict(cls=1, s=1000, sigma_s=0.1, chi2=100, npix=100, zwarn=0, rchi2=1.0, anomaly=12.0).items():
        raw[:, RAW_FIELDS.index(name)] = value  # class 1 (GALAXY), anomaly score 12 on every row
    fam = get_family("eigen")
    _, zwarn = fam.columns(m, raw, Prepared(zwarn=np.zeros(3, np.int64), survey=np.array(["boss", "lamost", ""])))
    ood = (zwarn & int(ZWarningMask.OUT_OF_DISTRIBUTION)) > 0
    assert ood.tolist() == [True, False, True]


def _combined_with_answers(sets, fitted, tmp_path, monkeypatch, spectype, z, confident=False):
    """A combined model (an untrained classifier, the released QuasarNET, the fitted eigen model) saved as
    ``tmp_path / "comb"``, whose classifier answers on the validation set (in one batch of 300) are replaced by
    ``spectype`` and ``z`` with ZERR 1e-3: answers the tests choose, in the classes' ranges. ``confident``: and
    without the untrained classifier's ZWARN bits (its low probabilities flag every row)."""
    from redsift.data.store import Dataset
    from redsift.models.classifier import ClassifierFamily
    from redsift.models.combined import combine

    n = len(Dataset(sets / "val").meta)
    plain = ClassifierFamily.columns

    def prior(self, model, raw, prepared):
        cols, zwarn = plain(self, model, raw, prepared)
        if len(cols["Z"]) == n:
            cols.update(CLASS_BEST=np.asarray(spectype), SPECTYPE=np.asarray(spectype), Z=np.asarray(z, float),
                        ZERR=np.full(n, 1e-3))
            if confident:
                zwarn = np.zeros_like(zwarn)
        return cols, zwarn

    monkeypatch.setattr(ClassifierFamily, "columns", prior)
    torch.manual_seed(0)
    c = create_model("classifier", taxonomy=TYPES, channels=[4, 4, 4, 4], fc=8)
    save_model(combine(c, load_model("quasarnet-boss-sim"), eigen=load_model(fitted / "best")), tmp_path / "comb")
    return tmp_path / "comb"


def test_combined_release_calibrates_the_refinement_where_it_is_used(sets, fitted, tmp_path, monkeypatch):
    """``redsift release`` of a combined model fits the eigen part's ZERR cells on the validation rows the
    refinement gave Z (typed right), keeps every other part's decisions, and the released catalog's ZERR
    on those rows is the calibrated error of the same scan. (The classifier here is untrained: its answers
    are replaced by the truth plus 100 km/s, so that the refinement has priors in its classes' ranges.)"""
    from redsift.data.store import Dataset
    from redsift.models.eigen import calibrated_zerr
    from redsift.train.release import release

    meta = Dataset(sets / "val").meta
    zt = np.asarray(meta["Z"], float)
    _combined_with_answers(sets, fitted, tmp_path, monkeypatch, np.asarray(meta["CLASS"], str), zt + 100 / 3e5 * (1 + zt))
    rec = release(tmp_path / "comb", str(sets / "val"), tmp_path / "rel", min_cell=5)
    before, after = load_model(tmp_path / "comb"), load_model(tmp_path / "rel")
    assert rec["eigen_zerr_rows"] > 0 and after.eigen.config.zerr_rchi2
    assert after.config.arbitrate is None and "arbitrate_GALAXY/boss" in rec  # right answers: nothing to fix
    assert after.config.bal_mean_threshold is None  # no BAL class in this taxonomy: the classifier decides
    assert after.eigen.config.zerr_scale and after.eigen.config.zerr_floor is not None
    assert after.config.classifier == before.config.classifier and after.config.quasarnet == before.config.quasarnet
    c0 = predict_catalog(before, [str(sets / "val")], progress=False)
    c1 = predict_catalog(after, [str(sets / "val")], progress=False)
    used = np.asarray(c1["Z_METHOD"]) == "EIGEN"
    assert used.any()
    np.testing.assert_array_equal(np.asarray(c1["Z"]), np.asarray(c0["Z"]))
    sig = np.asarray(c0["ZERR"])[used] / (1 + np.asarray(c0["Z"])[used])  # before: the curvature alone
    scaled = sig * np.sqrt(np.maximum(np.asarray(c0["RCHI2"])[used], 1))
    k = after.eigen.config
    want = (1 + np.asarray(c1["Z"])[used]) * calibrated_zerr(scaled, np.ones(used.sum()),
                                                            np.char.strip(np.asarray(c1["SPECTYPE"], str))[used],
                                                            np.full(used.sum(), "boss"), dataclasses.replace(k, zerr_rchi2=False))
    np.testing.assert_allclose(np.asarray(c1["ZERR"])[used], want, rtol=1e-6)
    assert len(c1) == len(meta)
    # the classifier's ZERR where the default gives its Z (quasars above refine_qso_zmax here): two-parameter
    # cells fitted on those rows; ZERR_CLASSIFIER and the refinement windows drawn from it unchanged
    cls_rows = np.asarray(c1["Z_METHOD"]) == "CLASSIFIER"
    assert rec["classifier_zerr_rows"] >= 5 and after.config.zerr_scale and "QSO" in after.config.zerr_scale
    z1 = np.asarray(c1["Z"])[cls_rows]
    st = np.char.strip(np.asarray(c1["SPECTYPE"], str))[cls_rows]
    kq = np.array([after.config.zerr_scale.get(f"{t}/boss", after.config.zerr_scale.get(t, 1.0)) for t in st])
    fq = np.array([after.config.zerr_floor.get(f"{t}/boss", after.config.zerr_floor.get(t, 0.0)) for t in st])
    want = np.hypot(kq * np.asarray(c0["ZERR"])[cls_rows] / (1 + z1), fq) * (1 + z1)
    np.testing.assert_allclose(np.asarray(c1["ZERR"])[cls_rows], want, rtol=1e-9)
    np.testing.assert_array_equal(np.asarray(c1["ZERR_CLASSIFIER"]), np.asarray(c0["ZERR_CLASSIFIER"]))
    # the cells' rows restricted by a truth column (the template-mode quasars of a two-generator set), and a
    # filter no row matches refused with the values it could have named
    rec2 = release(tmp_path / "comb", str(sets / "val"), tmp_path / "rel2", min_cell=5, zerr_rows="CLASS=QSO")
    assert rec2["classifier_zerr_rule"] == "rows with CLASS = QSO"
    assert 0 < rec2["classifier_zerr_rows"] < rec["classifier_zerr_rows"]  # the quasars among them
    with pytest.raises(RedsiftError, match="no validation row has CLASS = 'quasar'.*GALAXY, QSO, STAR"):
        release(tmp_path / "comb", str(sets / "val"), tmp_path / "rel3", min_cell=5, zerr_rows="CLASS=quasar")
    # quasars refined in the classifier-redshift bins where the refinement beat the classifier on validation
    rec4 = release(tmp_path / "comb", str(sets / "val"), tmp_path / "rel4", min_cell=5, refine_bins=True)
    bins = load_model(tmp_path / "rel4").config.refine_qso_zbins
    assert "refine_qso_zbins" in rec4 and any(k.startswith("refine_qso_z0-0.5") for k in rec4)
    c4 = predict_catalog(load_model(tmp_path / "rel4"), [str(sets / "val")], progress=False)
    zc = np.asarray(c4["Z_CLASSIFIER"], float)
    isq = np.char.strip(np.asarray(c4["SPECTYPE"], str)) == "QSO"
    inside = np.zeros(len(zc), bool)
    for a, b in bins or [[-1.0, 1.5]]:
        inside |= (zc >= a) & (zc < b)
    assert not (isq & ~inside & (np.asarray(c4["Z_METHOD"]) == "EIGEN")).any()
    assert (isq & inside & (np.asarray(c4["Z_METHOD"]) == "EIGEN")).any()
    # the consistency gate: the release records its choice per spectral type; a refinement farther from its prior
    # than the type's gate (in the prior's own errors) is refused and the classifier's Z kept, nothing else moves
    rec5 = release(tmp_path / "comb", str(sets / "val"), tmp_path / "rel5", min_cell=5, refine_gate=True, gate_rows=5)
    assert "refine_gate_GALAXY" in rec5 and "refine_gate_STAR" in rec5
    m5 = load_model(tmp_path / "rel5")
    c5 = predict_catalog(m5, [str(sets / "val")], progress=False)
    m5.config = dataclasses.replace(m5.config, refine_gate={"GALAXY": 0.5})
    c6 = predict_catalog(m5, [str(sets / "val")], progress=False)
    dis = np.abs(np.asarray(c5["Z_EIGEN"], float) - np.asarray(c5["Z_CLASSIFIER"], float)) / np.asarray(c5["ZERR_CLASSIFIER"])
    refined = np.asarray(c5["Z_METHOD"]) == "EIGEN"
    gal = np.char.strip(np.asarray(c5["SPECTYPE"], str)) == "GALAXY"
    far = gal & refined & (dis >= 0.5)
    assert far.any() and (gal & refined & ~far).any()
    assert (np.asarray(c6["Z_METHOD"])[far] == "CLASSIFIER").all()
    np.testing.assert_array_equal(np.asarray(c6["Z"])[far], np.asarray(c6["Z_CLASSIFIER"])[far])
    np.testing.assert_array_equal(np.asarray(c6["Z"])[~far], np.asarray(c5["Z"])[~far])
    np.testing.assert_array_equal(np.asarray(c6["Z_METHOD"])[~far], np.asarray(c5["Z_METHOD"])[~far])
    # the refinement's ZERR cells split by S/N (galaxies and quasars): fitted where a bin has the rows, recorded,
    # written with their edges, and the catalog's ZERR of a refined galaxy is its bin's cell where one was fitted
    from redsift.models.combined import ZERR_SNR_EDGES

    rec6 = release(tmp_path / "comb", str(sets / "val"), tmp_path / "rel6", min_cell=5, zerr_snr=True)
    m6 = load_model(tmp_path / "rel6")
    assert list(m6.config.zerr_snr_edges) == list(ZERR_SNR_EDGES) and rec6["zerr_snr"].startswith("refinement cells split")
    binned = [k for k in m6.eigen.config.zerr_scale if "@" in k]
    assert binned and all(k.split("@")[0].split("/")[0] in ("GALAXY", "QSO", "QSO>1.5") for k in binned)
    c6s = predict_catalog(m6, [str(sets / "val")], progress=False)
    g = (np.asarray(c6s["Z_METHOD"]) == "EIGEN") & (np.char.strip(np.asarray(c6s["SPECTYPE"], str)) == "GALAXY")
    b = np.digitize(np.asarray(c6s["SNR_MODEL"], float), ZERR_SNR_EDGES)
    k = np.array([m6.eigen.config.zerr_scale.get(f"GALAXY@{j}/boss", m6.eigen.config.zerr_scale.get(
        f"GALAXY@{j}", m6.eigen.config.zerr_scale.get("GALAXY/boss"))) for j in b])
    f = np.array([m6.eigen.config.zerr_floor.get(f"GALAXY@{j}/boss", m6.eigen.config.zerr_floor.get(
        f"GALAXY@{j}", m6.eigen.config.zerr_floor.get("GALAXY/boss"))) for j in b])
    sig = np.asarray(c0["ZERR"]) / (1 + np.asarray(c0["Z"])) * np.sqrt(np.maximum(np.asarray(c0["RCHI2"]), 1))
    want = np.hypot(k * sig, f) * (1 + np.asarray(c6s["Z"]))
    assert g.any()
    np.testing.assert_allclose(np.asarray(c6s["ZERR"])[g], want[g], rtol=1e-6)
    for bad, msg in (({"zerr_rows": "CLASS"}, "expected COLUMN=value"), ({"zerr_rows": "KIND=QSO"}, "no column 'KIND'"),
                     ({"zerr_bands": "False"}, "zerr_bands must be true or false"),
                     ({"refine_gate": "yes"}, "refine_gate must be true or false"),
                     ({"refine_bins": 1}, "refine_bins must be true or false"),
                     ({"sign_z": "two"}, "sign_z must be a number"), ({"sign_z": -1}, "sign_z must be a number"),
                     ({"sign_zz": 2}, "unknown option.s. sign_zz for the combined family; it takes .*sign_z")):
        with pytest.raises(RedsiftError, match=msg):
            release(tmp_path / "comb", str(sets / "val"), tmp_path / "rel3", min_cell=5, **bad)
    assert not (tmp_path / "rel3").exists()


def test_type_arbitration_replaces_wrong_types_by_the_scans(sets, fitted, tmp_path, monkeypatch):
    """The type arbitration: the release turns it on for a survey only where the whole scans' answers fix more
    validation answers than they break, and the catalog's replaced rows carry the scan's type and redshift,
    ``Z_METHOD = EIGEN_TYPE`` and ``LOW_CONFIDENCE``; every other row is as without it. (The classifier is
    untrained, so its type probabilities are low everywhere; its answers are replaced by the truth, with three
    galaxies in four typed a star at z 0: wrong answers the scan can put right, more than the small test model's
    scans get wrong.)"""
    from redsift.data.store import Dataset
    from redsift.train.release import release

    meta = Dataset(sets / "val").meta
    t = np.asarray(meta["CLASS"], str)
    zt = np.asarray(meta["Z"], float)
    wrong = (t == "GALAXY") & (np.arange(len(t)) % 4 != 0)
    _combined_with_answers(sets, fitted, tmp_path, monkeypatch, np.where(wrong, "STAR", t),
                           np.where(wrong, 0.0, zt + 100 / 3e5 * (1 + zt)))
    rec = release(tmp_path / "comb", str(sets / "val"), tmp_path / "rel", min_cell=5, type_arbitrate=True)
    after = load_model(tmp_path / "rel")
    assert after.config.type_arbitrate and set(after.config.type_arbitrate) == {"boss"}, rec["type_arbitrate_boss"]
    p_max, dmin = after.config.type_arbitrate["boss"]
    assert rec["type_arbitrate_boss"].startswith(f"P < {p_max:g}, DELTACHI2 >= {dmin:g}")
    assert after.config.decisions()["type_arbitrate"] == f"boss P<{p_max:g} dchi2>={dmin:g}"
    c1 = predict_catalog(after, [str(sets / "val")], progress=False)
    off = load_model(tmp_path / "rel")
    off.config = dataclasses.replace(off.config, type_arbitrate=None)
    c0 = predict_catalog(off, [str(sets / "val")], progress=False)
    e = predict_catalog(load_model(fitted / "best"), [str(sets / "val")], progress=False)  # the eigen model alone
    moved = np.asarray(c1["Z_METHOD"]) == "EIGEN_TYPE"
    assert moved.any() and (moved & wrong).sum() > (moved & ~wrong).sum()
    sp1 = np.char.strip(np.asarray(c1["SPECTYPE"], str))
    np.testing.assert_array_equal(sp1[moved], np.char.strip(np.asarray(e["SPECTYPE"], str))[moved])
    # the same minima as the eigen model's own scan, to float32 rounding (far below a pixel, 2.3e-4), but for a
    # few near-ties of this small test model's minima that batches of other rows can tip (float32 FFTs)
    same = np.abs(np.asarray(c1["Z"])[moved] - np.asarray(e["Z"])[moved]) < 1e-6
    assert same.mean() > 0.85, same.mean()
    assert (sp1[moved] != np.char.strip(np.asarray(c0["SPECTYPE"], str))[moved]).all()
    assert ((np.asarray(c1["ZWARN"])[moved] & int(ZWarningMask.LOW_CONFIDENCE)) > 0).all()
    # the replacing answer's own coefficients, anomaly score and class (consistent with its type)
    assert np.isfinite(np.asarray(c1["COEFF"])[moved]).all() and np.isfinite(np.asarray(c1["ANOMALY"])[moved]).all()
    a1, a0 = np.asarray(c1["ANOMALY"], float)[moved][same], np.asarray(e["ANOMALY"], float)[moved][same]
    # where the minima agree so does the score, but for the few whose second solution (the joint fit's partner)
    # another batch tipped
    assert np.mean(np.isclose(a1, a0, rtol=1e-3, atol=1e-3)) > 0.9
    assert (np.char.strip(np.asarray(c1["CLASS_BEST"], str))[moved] == sp1[moved]).all()  # one class per type here
    for col in ("SPECTYPE", "Z", "Z_METHOD", "ZWARN"):
        np.testing.assert_array_equal(np.asarray(c1[col])[~moved], np.asarray(c0[col])[~moved])
    # more galaxies typed right than without it
    assert ((sp1 == "GALAXY") & (t == "GALAXY")).sum() > ((np.char.strip(np.asarray(c0["SPECTYPE"], str)) == "GALAXY")
                                                          & (t == "GALAXY")).sum()
    # released again from the released model: the same choice (its own arbitration cleared while choosing)
    rec2 = release(tmp_path / "rel", str(sets / "val"), tmp_path / "rel2", min_cell=5, type_arbitrate=True)
    assert rec2["type_arbitrate_boss"] == rec["type_arbitrate_boss"]
    assert load_model(tmp_path / "rel2").config.type_arbitrate == after.config.type_arbitrate
    # the second-peak arbitration: chosen per type / survey (recorded), and where a cell lets every usable second
    # peak through, those rows take the eigen window's redshift there and nothing else moves
    rec3 = release(tmp_path / "comb", str(sets / "val"), tmp_path / "rel3", min_cell=5, peak_arbitrate=True)
    assert "peak_arbitrate_GALAXY/boss" in rec3 and "peak_arbitrate_QSO/boss" in rec3
    assert "truth at the second peak's refinement" in rec3["peak_arbitrate_QSO/boss"]
    open_cells = {"GALAXY/boss": [0.0, -1e30], "QSO/boss": [0.0, -1e30], "STAR/boss": [0.0, -1e30]}
    off.config = dataclasses.replace(off.config, peak_arbitrate=open_cells)
    c2 = predict_catalog(off, [str(sets / "val")], progress=False)
    peak = np.asarray(c2["Z_METHOD"]) == "EIGEN_PEAK"
    st0 = np.char.strip(np.asarray(c0["SPECTYPE"], str))
    assert peak.any() and not (peak & (st0 == "STAR")).any()  # galaxies and quasars only
    assert np.isfinite(np.asarray(c2["ZERR"])[peak]).all()
    assert (np.abs(np.asarray(c2["Z"]) - np.asarray(c0["Z"]))[peak] > 0).all()
    for col in ("SPECTYPE", "Z", "ZERR", "Z_METHOD", "ZWARN"):
        np.testing.assert_array_equal(np.asarray(c2[col])[~peak], np.asarray(c0[col])[~peak])
    off.config = dataclasses.replace(off.config, peak_arbitrate={k: [1.5, -1e30] for k in open_cells})
    c3 = predict_catalog(off, [str(sets / "val")], progress=False)  # no second peak holds 150%: nothing moves
    np.testing.assert_array_equal(np.asarray(c3["Z"]), np.asarray(c0["Z"]))
    # a threshold in between keeps exactly the open cells' replacements whose second peak holds that probability
    # (the pdf's mass there, as the release counted it: predict once read the peak's width in its place)
    from redsift.data.store import Dataset
    from redsift.models.classifier import second_peak
    from redsift.train.release import raw_outputs

    raw, _ = raw_outputs(off, Dataset(str(sets / "val")))
    ncls = len(off.classifier.config.tax)
    mass = second_peak(raw[:, ncls:ncls + off.classifier.config.n_z], off.classifier.config)[2]
    mid = float(np.median(mass[peak]))
    off.config = dataclasses.replace(off.config, peak_arbitrate={k: [mid, -1e30] for k in open_cells})
    c3b = predict_catalog(off, [str(sets / "val")], progress=False)
    np.testing.assert_array_equal(np.asarray(c3b["Z_METHOD"]) == "EIGEN_PEAK", peak & (mass >= mid))
    # the full scan of every row: ANOMALY is the eigen model's own score (but for near-ties other batches tip) and
    # OUT_OF_DISTRIBUTION is set exactly above the eigen part's threshold; the answers do not move
    a_e = np.asarray(e["ANOMALY"], float)
    thr = float(np.nanmedian(a_e))
    off.config = dataclasses.replace(off.config, peak_arbitrate=None, full_scan=True, anomaly_flag=True)
    off.eigen.config = dataclasses.replace(off.eigen.config, anomaly_threshold=thr, anomaly_survey=None)
    c4 = predict_catalog(off, [str(sets / "val")], progress=False)
    a4 = np.asarray(c4["ANOMALY"], float)
    assert np.mean(np.isclose(a4, a_e, rtol=1e-3, atol=1e-3)) > 0.9
    ood = (np.asarray(c4["ZWARN"]) & int(ZWarningMask.OUT_OF_DISTRIBUTION)) > 0
    np.testing.assert_array_equal(ood, np.isfinite(a4) & (a4 > thr))
    assert 0.3 < ood.mean() < 0.7
    for col in ("SPECTYPE", "Z", "Z_METHOD"):
        np.testing.assert_array_equal(np.asarray(c4[col]), np.asarray(c0[col]))
    off.config = dataclasses.replace(off.config, anomaly_flag=False)  # the score without the bit
    c5 = predict_catalog(off, [str(sets / "val")], progress=False)
    np.testing.assert_array_equal(np.asarray(c5["ANOMALY"]), np.asarray(c4["ANOMALY"]))
    np.testing.assert_array_equal(np.asarray(c5["ZWARN"]), np.asarray(c4["ZWARN"]) & ~int(ZWarningMask.OUT_OF_DISTRIBUTION))


def test_default_delta_chi2_is_the_answers_gain_over_the_best_fit_elsewhere(sets, fitted, tmp_path, monkeypatch):
    """With the full scan, every answer of the default gets Redrock's ``DELTACHI2``: the chi-square of the best fit
    more than 1,000 km/s away (any class) minus the answer's own. The classifier's answers are replaced by the truth
    (+100 km/s), but for a third of the galaxies put 0.3 in z too far: the true answers' DELTACHI2 is the eigen
    model's own where its scan found the truth (its DELTACHI2 is to the same competitor), the wrong answers' is
    negative (the truth, elsewhere, fits better); ``dchi2_flag`` sets SMALL_DELTA_CHI2 exactly below its value
    and moves nothing else."""
    from redsift.data.store import Dataset

    meta = Dataset(sets / "val").meta
    t = np.asarray(meta["CLASS"], str)
    zt = np.asarray(meta["Z"], float)
    wrong = (t == "GALAXY") & (np.arange(len(t)) % 3 == 0) & (zt < 0.5)
    _combined_with_answers(sets, fitted, tmp_path, monkeypatch, t, np.where(wrong, zt + 0.3, zt + 100 / 3e5 * (1 + zt)),
                           confident=True)
    m = load_model(tmp_path / "comb")
    m.config = dataclasses.replace(m.config, full_scan=True)
    c0 = predict_catalog(m, [str(sets / "val")], progress=False)
    e = predict_catalog(load_model(fitted / "best"), [str(sets / "val")], progress=False)  # the eigen model alone
    d = np.ma.filled(np.ma.asarray(c0["DELTACHI2"], float), np.nan)
    assert np.isfinite(d).mean() > 0.95
    assert wrong.sum() >= 5 and (d[wrong] < 0).mean() > 0.8, d[wrong]
    de = np.ma.filled(np.ma.asarray(e["DELTACHI2"], float), np.nan)
    ze = np.asarray(e["Z"], float)
    agree = (~wrong & (np.char.strip(np.asarray(e["SPECTYPE"], str)) == np.char.strip(np.asarray(c0["SPECTYPE"], str)))
             & (np.abs(ze - zt) / (1 + zt) < 1e-3) & (np.abs(np.asarray(c0["Z"], float) - ze) / (1 + ze) < 2e-4)
             & np.isfinite(de) & (de < 1e6))
    assert agree.sum() > 50
    # the same competitor; the answer's chi-square from its own window, the eigen model's from its scan (the
    # parabola's vertex against the nearest pixel: within a few units of chi-square)
    assert np.median(np.abs(d[agree] - de[agree])) < 2.0
    assert ((np.asarray(c0["ZWARN"]) & int(ZWarningMask.SMALL_DELTA_CHI2)) == 0).all()  # no bit without dchi2_flag
    m.config = dataclasses.replace(m.config, dchi2_flag=9.0)
    c1 = predict_catalog(m, [str(sets / "val")], progress=False)
    small = (np.asarray(c1["ZWARN"]) & int(ZWarningMask.SMALL_DELTA_CHI2)) > 0
    np.testing.assert_array_equal(small, np.nan_to_num(d, nan=np.inf) < 9.0)
    assert small[wrong].mean() > 0.8 and small.any()
    np.testing.assert_array_equal(np.asarray(c1["ZWARN"]) & ~int(ZWarningMask.SMALL_DELTA_CHI2), np.asarray(c0["ZWARN"]))
    for col in ("SPECTYPE", "Z", "ZERR", "Z_METHOD"):
        np.testing.assert_array_equal(np.asarray(c1[col]), np.asarray(c0[col]))
    assert "SMALL_DELTA_CHI2 below 9" in m.config.decisions()["dchi2"]
    # released with dchi2_flag: the galaxies' cell is on (its wrong answers are what the bit takes), and the bit
    # is set there only (sign_z 4 keeps the chi-square arbitration, which would put these answers right, off:
    # +14 -0 is 3.7 sigma)
    from redsift.train.release import release

    rec = release(tmp_path / "comb", str(sets / "val"), tmp_path / "rel", min_cell=5, full_scan=True, dchi2_flag=True,
                  sign_z=4)
    rel = load_model(tmp_path / "rel")
    assert rel.config.dchi2_flag and "GALAXY/boss" in rel.config.dchi2_flag, {k: v for k, v in rec.items() if "dchi2" in k}
    assert rec["dchi2_flag_GALAXY/boss"].startswith("on: DELTACHI2 < 9")
    c2 = predict_catalog(rel, [str(sets / "val")], progress=False)
    small2 = (np.asarray(c2["ZWARN"]) & int(ZWarningMask.SMALL_DELTA_CHI2)) > 0
    cell = np.zeros(len(small2), bool)
    for key in rel.config.dchi2_flag:
        cell |= np.char.strip(np.asarray(c2["SPECTYPE"], str)) == key.split("/")[0]
    d2 = np.ma.filled(np.ma.asarray(c2["DELTACHI2"], float), np.nan)
    np.testing.assert_array_equal(small2, cell & (np.nan_to_num(d2, nan=np.inf) < 9.0))
    assert small2[wrong].mean() > 0.8
    with pytest.raises(RedsiftError, match="dchi2_flag needs full_scan=true"):
        release(tmp_path / "comb", str(sets / "val"), tmp_path / "rel2", min_cell=5, dchi2_flag=True)


def test_no_signal_flags_pure_noise_and_not_spectra_with_objects(sets, fitted, tmp_path, monkeypatch):
    """NO_SIGNAL: the answer's chi-square gain over no object (``signal_gain``) is what fitting templates to noise
    buys (tens) on pure noise with the validation set's own inverse variances, and hundreds on the simulated spectra;
    the bit is set exactly where it is below ``signal_min``, and the release keeps the fixed limit only where its
    right answers stay clear of it (recorded per survey)."""
    from redsift import Spectra
    from redsift.data.store import Dataset
    from redsift.models.combined import SIGNAL_MIN, CombinedFamily
    from redsift.train.release import release

    # the gain: F - ntot - (chi2 - npix), F the chi-square of a zero spectrum over the good pixels
    X = np.array([[1.0, 2.0, 0.0, 4.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]], np.float32)
    np.testing.assert_allclose(CombinedFamily.signal_gain(X, [0.5, -1.0]), [(4 + 4) - 2 - 0.5, 0 - 3 + 1.0])

    meta = Dataset(sets / "val").meta
    zt = np.asarray(meta["Z"], float)
    _combined_with_answers(sets, fitted, tmp_path, monkeypatch, np.asarray(meta["CLASS"], str), zt, confident=True)
    m = load_model(tmp_path / "comb")
    m.config = dataclasses.replace(m.config, full_scan=True, signal_min=SIGNAL_MIN)
    c = predict_catalog(m, [str(sets / "val")], progress=False)
    quiet = (np.asarray(c["ZWARN"]) & int(ZWarningMask.NO_SIGNAL)) > 0
    assert quiet.mean() < 0.05
    ds = Dataset(sets / "val")
    _, ivar, _ = ds.read(np.arange(100))
    rng = np.random.default_rng(5)
    noise = np.where(ivar > 0, rng.normal(size=ivar.shape) / np.sqrt(np.where(ivar > 0, ivar, 1)), 0)
    cn = predict_catalog(m, [Spectra(ds.grid.wave, noise, ivar)], progress=False)
    qn = (np.asarray(cn["ZWARN"]) & int(ZWarningMask.NO_SIGNAL)) > 0
    assert qn.mean() > 0.95, qn.mean()
    m.config = dataclasses.replace(m.config, signal_min=None)  # no limit: no bit, nothing else moves
    c0 = predict_catalog(m, [str(sets / "val")], progress=False)
    np.testing.assert_array_equal(np.asarray(c0["ZWARN"]), np.asarray(c["ZWARN"]) & ~int(ZWarningMask.NO_SIGNAL))
    np.testing.assert_array_equal(np.asarray(c0["Z"]), np.asarray(c["Z"]))
    rec = release(tmp_path / "comb", str(sets / "val"), tmp_path / "reln", min_cell=5, full_scan=True, no_signal=True)
    kept = load_model(tmp_path / "reln").config.signal_min
    assert rec["no_signal"].startswith("on" if kept == SIGNAL_MIN else "off") and "no_signal_boss" in rec
    assert kept in (SIGNAL_MIN, None)
    with pytest.raises(RedsiftError, match="no_signal needs full_scan=true"):
        release(tmp_path / "comb", str(sets / "val"), tmp_path / "reln2", min_cell=5, no_signal=True)


def test_dchi2_flag_cells_need_enriched_wrong_answers_at_little_cost():
    """:func:`choose_dchi2_flag`: a cell is on where the bit takes wrong answers from ZWARN 0 at >= 5x the rate of
    those left, at least 5 of them, for at most 2% of its right answers; rows already flagged are not counted."""
    from redsift.models.combined import choose_dchi2_flag

    def cell(n_right, n_wrong, right_small, wrong_small, t, v="boss"):
        right = np.r_[np.ones(n_right, bool), np.zeros(n_wrong, bool)]
        d = np.r_[np.where(np.arange(n_right) < right_small, -1.0, 50.0), np.where(np.arange(n_wrong) < wrong_small, 3.0, 50.0)]
        return d, right, np.full(n_right + n_wrong, t), np.full(n_right + n_wrong, v)

    parts = [cell(1000, 20, 10, 15, "GALAXY"),  # 15 of 25 flagged wrong vs 5 / 995: on (1% lost)
             cell(1000, 20, 30, 15, "QSO"),  # 3% of the right answers lost: off
             cell(1000, 8, 5, 4, "STAR"),  # 4 wrong: too few
             cell(1000, 40, 10, 6, "GALAXY", "desi")]  # 6 / 16 against 34 / 1024 = 0.033: 11x, on
    d, right, t, v = (np.concatenate(x) for x in zip(*parts))
    zwarn = np.zeros(len(d), np.int64)
    cells, rec = choose_dchi2_flag(d, zwarn, right, t, v)
    assert cells == {"GALAXY/boss": 9.0, "GALAXY/desi": 9.0}, rec
    assert rec["dchi2_flag_QSO/boss"].startswith("off")
    zwarn[(t == "GALAXY") & (v == "boss") & ~right] = 4  # already flagged: nothing left for the bit to take
    cells, _ = choose_dchi2_flag(d, zwarn, right, t, v)
    assert cells == {"GALAXY/desi": 9.0}


def test_window_fallback_takes_the_class_scan_where_the_window_could_not_refine(sets, fitted, tmp_path, monkeypatch):
    """The refinement window's fallback: galaxies whose classifier redshift lies beyond the window's reach of the
    truth (0.8% in 1 + z, short of the catastrophic limit: the window's best fit on its edge, unusable) keep the
    classifier's redshift without it; with it (chosen at release where it fixes more validation answers than it
    breaks) they take the galaxy class's whole-range scan (``Z_METHOD = EIGEN_SCAN``), at the truth, and no other
    row moves."""
    from redsift.data.store import Dataset
    from redsift.train.release import release

    meta = Dataset(sets / "val").meta
    t = np.asarray(meta["CLASS"], str)
    zt = np.asarray(meta["Z"], float)
    off = (t == "GALAXY") & (zt > 0.05)
    _combined_with_answers(sets, fitted, tmp_path, monkeypatch, t,
                           np.where(off, zt + 0.008 * (1 + zt), zt + 100 / 3e5 * (1 + zt)))
    rec = release(tmp_path / "comb", str(sets / "val"), tmp_path / "rel", min_cell=5, scan_fallback=True)
    after = load_model(tmp_path / "rel")
    assert after.config.scan_fallback and "GALAXY" in after.config.scan_fallback, rec["scan_fallback_GALAXY"]
    assert rec["scan_fallback_GALAXY"].startswith("on (rows ") and rec["scan_fallback_QSO"].startswith("off (rows 0")
    assert "scan_fallback" in after.config.decisions()
    c1 = predict_catalog(after, [str(sets / "val")], progress=False)
    no = load_model(tmp_path / "rel")
    no.config = dataclasses.replace(no.config, scan_fallback=None)
    c0 = predict_catalog(no, [str(sets / "val")], progress=False)
    m1, m0 = np.asarray(c1["Z_METHOD"]).astype(str), np.asarray(c0["Z_METHOD"]).astype(str)
    moved = m1 != m0  # (the arbitration's own EIGEN_SCAN rows, beyond the catastrophic limit, are in both)
    assert moved.any() and (m0[moved] == "CLASSIFIER").all() and (m1[moved] == "EIGEN_SCAN").all() and off[moved].all()
    dz1 = np.abs(np.asarray(c1["Z"], float) - zt) / (1 + zt)
    dz0 = np.abs(np.asarray(c0["Z"], float) - zt) / (1 + zt)
    assert (dz0[moved] > 0.005).all() and np.mean(dz1[moved] < 1e-3) > 0.8
    assert np.isfinite(np.asarray(c1["ZERR"], float)[moved]).all()
    for col in ("SPECTYPE", "Z", "ZERR", "Z_METHOD", "ZWARN"):
        np.testing.assert_array_equal(np.asarray(c1[col])[~moved], np.asarray(c0[col])[~moved])


def test_fit_logistic_recovers_a_known_model(rng):
    from redsift.models.eigen import fit_logistic

    X = rng.normal(size=(4000, 3)) * [1.0, 2.0, 1.0] + [0.0, 5.0, 0.0]
    w = np.array([2.0, -1.0, 0.0])
    y = rng.uniform(size=4000) < 1 / (1 + np.exp(-(X @ w + 5.5)))  # log-odds 0.5 on average
    m = fit_logistic(X, y, l2=1e-3)
    coef = np.array(m["coef"]) / np.array(m["scale"])  # back to the raw features' units
    np.testing.assert_allclose(coef, w, atol=0.2)
    intercept = m["intercept"] - float(np.dot(coef, m["mean"]))
    assert abs(intercept - 5.5) < 1.0


def test_release_learns_the_anomaly_score_from_injected_validation(sets, fitted, tmp_path):
    """A validation set with injected anomalies (scripts/eigen_anomalies.py) fits the learned score: the
    release records it, the catalog's ANOMALY is its log-odds, and it ranks the injections above the
    normal spectra better than the hand-made score does on the same rows."""
    import runpy
    from pathlib import Path

    from redsift.data.store import Dataset
    from redsift.errors import RedsiftError
    from redsift.train.release import release

    inject = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "eigen_anomalies.py"))["main"]
    anom = tmp_path / "anom"
    inject([str(sets / "val"), "-o", str(anom), "--per-kind", "30", "--normal", "150", "--seed", "3",
            "--kinds", "two-redshifts,star+galaxy,artefact"])
    kinds = np.asarray(Dataset(anom).meta["ANOMALY"]).astype(str)
    assert set(kinds) == {"", "two-redshifts", "star+galaxy", "artefact"}
    rec = release(fitted / "best", str(anom), tmp_path / "rel")
    assert "logistic" in rec["anomaly_model"]
    rel = load_model(tmp_path / "rel")
    assert rel.config.anomaly_model and rel.config.decisions()["anomaly"] == "learned (logistic)"
    cat = predict_catalog(rel, [str(anom)], progress=False)
    hand = predict_catalog(load_model(fitted / "best"), [str(anom)], progress=False)
    lab = kinds != ""
    assert roc_auc(cat["ANOMALY"], lab) > roc_auc(hand["ANOMALY"], lab)
    assert not np.allclose(np.asarray(cat["ANOMALY"]), np.asarray(hand["ANOMALY"]), equal_nan=True)
    # the thresholds come from the normal rows only: about 1% of them flagged
    flagged = (np.asarray(cat["ZWARN"]) & int(ZWarningMask.OUT_OF_DISTRIBUTION)) > 0
    assert flagged[~lab].mean() <= 0.03
    # a set of injections only cannot fit it
    only = tmp_path / "only"
    inject([str(sets / "val"), "-o", str(only), "--per-kind", "10", "--normal", "0", "--kinds", "artefact"])
    with pytest.raises(RedsiftError, match="need both normal"):
        release(fitted / "best", str(only), tmp_path / "rel2")


def test_residual_shape_sees_what_each_statistic_is_for(rng):
    """Each residual statistic of the learned score moves for the misfit it is meant for and stays put on
    pure noise: a continuum offset (neighbour correlation), spikes (outlier fraction), an unfitted
    emission line (peak), an absorption (trough), blue excess (tilt); the anomaly rows of an old release
    (eight inputs) still score with their own feature list."""
    from redsift.models.eigen import ANOMALY_INPUTS, RESIDUAL_FIELDS, anomaly_features, residual_shape

    B, n = 6, 3000
    ivar = torch.full((B, n), 4.0)
    ivar[:, 100:140] = 0.0  # a masked run
    model = torch.ones(B, n)
    flux = model + torch.as_tensor(rng.normal(0, 0.5, (B, n)), dtype=torch.float32)
    flux[1] += 1.0 * torch.sin(torch.arange(n) / 200.0)  # smooth misfit
    flux[2, ::300] += 6.0  # spikes (12 sigma)
    flux[3, 2000:2006] += 2.0  # an unfitted line
    flux[4, 2000:2006] -= 2.0  # an unfitted absorption
    flux[5, : n // 3] += torch.as_tensor(rng.normal(0, 1.0, n // 3), dtype=torch.float32)  # blue excess
    f = dict(zip(RESIDUAL_FIELDS, residual_shape(flux, ivar, model).T.numpy()))
    assert abs(f["res_lag1"][0]) < 0.05 and f["res_lag1"][1] > 0.3
    assert f["res_out"][0] < -2.5 and f["res_out"][2] > f["res_out"][0] + 1
    assert f["res_peak"][3] > f["res_peak"][0] + 5 and f["res_trough"][4] > f["res_trough"][0] + 5
    assert abs(f["res_tilt"][0]) < 0.15 and f["res_tilt"][5] > 1.0
    raw = np.zeros((3, len(RAW_FIELDS) + 5))
    raw[:, RAW_FIELDS.index("rchi2")] = 1.0
    assert anomaly_features(raw, 14).shape[1] > anomaly_features(raw, 14, inputs=ANOMALY_INPUTS[:8]).shape[1]
    with pytest.raises(ValueError, match="unknown input"):
        anomaly_features(raw, 14, inputs=("no_such_input",))


def test_arbitration_threshold_is_chosen_per_cell_on_what_it_fixes_and_breaks():
    """``choose_arbitration``: per type / survey, the threshold whose replacements fix the most catastrophic
    answers net of those they break (the largest on a tie), and no cell where every threshold breaks more."""
    from redsift.models.combined import choose_arbitration

    n = len(RAW_FIELDS) + 1
    rows = [  # (survey, z answered, z true, z of the whole-range scan, chi2 gain of the scan)
        ("desi", 0.5, 0.1, 0.1, 30.0), ("desi", 0.6, 0.2, 0.2, 30.0), ("desi", 0.7, 0.3, 0.3, 40.0),
        ("desi", 0.3, 0.3, 0.7, 60.0),  # right answer, the scan elsewhere: broken below 60
        ("desi", 0.4, 0.4, 0.4005, 90.0),  # the scan agrees (within 0.01): never replaced
        ("lamost", 0.2, 0.2, 0.9, 20.0), ("lamost", 0.25, 0.25, 0.8, 300.0),  # only breaks: off
    ]
    w, f = np.zeros((len(rows), n)), np.zeros((len(rows), n))
    for i, (_, _, _, zs, g) in enumerate(rows):
        w[i, RAW_FIELDS.index("chi2")], f[i, RAW_FIELDS.index("chi2")] = 1000.0 + g, 1000.0
        w[i, RAW_FIELDS.index("npix")] = f[i, RAW_FIELDS.index("npix")] = 4000
        f[i, RAW_FIELDS.index("s")] = math.log10(1 + zs) / D
    cells, rec = choose_arbitration(w, f, [r[1] for r in rows], [r[2] for r in rows], np.full(len(rows), "GALAXY"),
                                    [r[0] for r in rows])
    assert cells == {"GALAXY/desi": 25.0}  # +3 -1 up to 25 (ties: the largest), +0 -1 at 50
    assert rec["arbitrate_GALAXY/lamost"].startswith("off")
    # with the sign test (sign_z = 2) +3 -1 is too few rows to turn the cell on: net 2 < 2 sqrt(4)
    cells, rec = choose_arbitration(w, f, [r[1] for r in rows], [r[2] for r in rows], np.full(len(rows), "GALAXY"),
                                    [r[0] for r in rows], sign_z=2.0)
    assert cells == {} and rec["arbitrate_GALAXY/desi"].startswith("off (n 5")


def test_sign_test_turns_on_cells_whose_gain_is_more_than_chance():
    """``clears_sign_test``: net > 0 always; with ``sign_z`` the net at least sign_z sqrt(fixed + broken). The
    release's DESI quasar cell (+26 -2) clears it, LAMOST's +3 -0 (which broke 3 held-out answers) does not."""
    from redsift.models.combined import clears_sign_test

    assert clears_sign_test(3, 0) and not clears_sign_test(2, 2) and not clears_sign_test(0, 0, 2.0)
    assert clears_sign_test(26, 2, 2.0) and clears_sign_test(20, 2, 2.0) and clears_sign_test(15, 2, 2.0)
    assert not clears_sign_test(3, 0, 2.0) and not clears_sign_test(2, 0, 2.0)
    assert clears_sign_test(4, 0, 2.0) and not clears_sign_test(5, 1, 2.0)  # 4 >= 2 sqrt(4); 4 < 2 sqrt(6)


def test_combined_arbitration_replaces_wrong_redshifts_the_chi2_refutes(sets, fitted, tmp_path, monkeypatch):
    """The release turns the chi-square arbitration on where it fixes validation answers: galaxies answered at a
    wrong redshift (the prior moved by +0.15 for a third of them) are scanned over the whole range, the scan's
    redshift replaces the answer (``Z_METHOD = EIGEN_SCAN``) and lands at the truth; right answers stay."""
    from redsift.data.store import Dataset
    from redsift.train.release import release

    meta = Dataset(sets / "val").meta
    t = np.asarray(meta["CLASS"], str)
    zt = np.asarray(meta["Z"], float)
    moved = (t == "GALAXY") & (np.arange(len(t)) % 3 == 0)
    _combined_with_answers(sets, fitted, tmp_path, monkeypatch, t, np.where(moved, zt + 0.15, zt + 100 / 3e5 * (1 + zt)))
    rec = release(tmp_path / "comb", str(sets / "val"), tmp_path / "rel", min_cell=5)
    after = load_model(tmp_path / "rel")
    assert "GALAXY/boss" in (after.config.arbitrate or {}), rec
    cat = predict_catalog(after, [str(sets / "val")], progress=False)
    z, method = np.asarray(cat["Z"], float), np.asarray(cat["Z_METHOD"]).astype(str)
    scanned = method == "EIGEN_SCAN"
    assert scanned.sum() >= 0.5 * moved.sum() and scanned[~moved].mean() <= 0.02
    assert np.mean(np.abs(z[scanned] - zt[scanned]) / (1 + zt[scanned]) < 0.01) > 0.9
    np.testing.assert_array_equal(np.asarray(cat["Z_CLASSIFIER"])[scanned], (zt + 0.15)[scanned])
    assert len(cat) == len(meta)


def test_bal_rule_of_both_parts_is_chosen_at_quasarnets_operating_point(rng):
    """The default's BAL decision from both parts (the mean of the classifier's BAL share and QuasarNET's C_BAL):
    the release's threshold has a larger margin over QuasarNET's operating point (98% found, 97% kept) than
    either part alone where each sees BALs noisily, and the decision rewrites exactly the quasars' class."""
    from astropy.table import Table

    from redsift.metrics import bal_threshold
    from redsift.models.combined import CombinedFamily, combine

    torch.manual_seed(0)
    c = create_model("classifier", taxonomy="boss14", channels=[4, 4, 4, 4], fc=8)
    model = combine(c, load_model("quasarnet-boss-sim"))
    tax = c.config.tax
    n, N = len(tax), 3000
    bal = rng.uniform(size=N) < 0.2
    s1 = np.clip(np.where(bal, 0.75, 0.25) + rng.normal(0, 0.2, N), 1e-4, 1 - 1e-4)  # the classifier's share
    cb = np.clip(np.where(bal, 0.75, 0.25) + rng.normal(0, 0.2, N), 0, 1)  # QuasarNET's C_BAL, independent noise
    logits = np.full((N, n), -30.0)
    logits[:, tax.classes.index("BAL")], logits[:, tax.classes.index("QSO")] = np.log(s1), np.log(1 - s1)
    meta = Table({"BAL_FLAG": bal.astype(int), "BI_CIV": np.where(bal, 1500.0, 0.0), "Z": np.full(N, 2.5)})
    cols = {"SPECTYPE": np.full(N, "QSO"), "C_BAL": cb, "SUBTYPE": np.where(s1 > 0.5, "BAL", "")}
    fam = CombinedFamily()
    thr, rec = fam._choose_bal(model, logits, cols, meta, np.full(N, "QSO"))
    score = fam.bal_score(model, logits, cb)
    np.testing.assert_allclose(score, 0.5 * (s1 + cb), rtol=1e-6)

    def margin(x, t):
        return min(np.mean(x[bal] > t) - 0.98, np.mean(x[~bal] <= t) - 0.97)

    grid = np.round(np.arange(0.05, 0.995, 0.0025), 4)
    alone = [bal_threshold(x, np.ones(N, bool), meta["BAL_FLAG"], np.ones(N, bool), meta["Z"], grid=grid,
                           bi_civ=meta["BI_CIV"], targets=(0.98, 0.97))[0] for x in (s1, cb)]
    assert margin(score, thr) > max(margin(s1, alone[0]), margin(cb, alone[1])) + 0.05
    assert "bal_rule" in rec
    # the decision: quasars' CLASS_BEST and SUBTYPE follow the score; other types are left alone
    st = np.where(np.arange(N) % 10 == 0, "STAR", "QSO")
    cc = {"CLASS_BEST": np.where(st == "QSO", "QSO", "K"), "SUBTYPE": np.where(st == "QSO", "", "K"), "SPECTYPE": st}
    fam._bal_decision(model, logits, cc, {"C_BAL": cb}, thr)
    q = st == "QSO"
    assert np.array_equal(cc["SUBTYPE"][q] == "BAL", score[q] > thr)
    assert np.array_equal(cc["CLASS_BEST"][q], np.where(score[q] > thr, "BAL", "QSO"))
    assert set(cc["SUBTYPE"][~q]) == {"K"} and set(cc["CLASS_BEST"][~q]) == {"K"}
