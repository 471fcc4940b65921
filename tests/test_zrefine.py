"""The quasar refinement net (the ``zrefine`` family): rest-framing exact to the pixel, the family's training path
learns a line's offset from its prior, the release calibrates ZERR, and the default takes the net's answer only for
quasars whose redshift is still the classifier's."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from astropy.table import Table

from redsift.errors import RedsiftError
from redsift.models import create_model, load_model, save_model
from redsift.models.registry import get_family
from redsift.models.zrefine import ZRefineConfig, refine, rest_inputs

TINY = {"rest_lo": 1300.0, "nrest": 1024, "channels": (8, 16, 16, 32), "fc": 32, "zmin": 1.5}


def test_rest_inputs_put_each_pixel_at_its_rest_wavelength(rng):
    cfg = ZRefineConfig(**TINY)
    wave = cfg.logrid.wave
    n, npix = 5, cfg.logrid.npix
    flux = rng.normal(1, 0.1, (n, npix)).astype(np.float32)
    ivar = rng.uniform(1, 4, (n, npix)).astype(np.float32)
    ivar[:, 100:140] = 0  # masked pixels stay masked
    t0 = np.log1p(rng.uniform(1.6, 2.4, n))
    X, k = rest_inputs(cfg, flux, ivar, t0)
    X = X.reshape(n, 3, cfg.nrest)
    rest0 = math.exp(cfg.logrid.loglam0 * math.log(10) - cfg.rest_offset * cfg.step)  # rest pixel 0 (A)
    assert abs(rest0 / cfg.rest_lo - 1) < cfg.step  # the grid starts at rest_lo, to a pixel
    for j in range(n):
        i = np.arange(cfg.nrest) - cfg.rest_offset + k[j]
        inside = (i >= 0) & (i < npix)
        r = np.flatnonzero(inside)
        # rest wavelength of rest pixel r, moved by the whole shift k, is the observed wavelength of pixel i
        np.testing.assert_allclose(rest0 * np.exp(r * cfg.step) * np.exp(k[j] * cfg.step), wave[i[r]], rtol=1e-9)
        good = inside & (ivar[j, np.clip(i, 0, npix - 1)] > 0)
        ratio = X[j, 0, good] / flux[j, i[good]]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)  # one normalisation per spectrum
        assert np.all(X[j, 2] == good) and np.all(X[j, :2, ~good] == 0)
    assert np.all(np.abs(t0 / cfg.step - k) <= 0.5)


def _line_spectra(cfg, z, rng, snr=20.0):
    """Spectra of one broad emission line (C IV 1549 A, sigma 1,500 km/s) on a flat continuum at redshifts z."""
    wave = cfg.logrid.wave
    sig = 1549.06 * 1500 / 299792.458
    flux = 1 + 3 * np.exp(-0.5 * ((wave[None, :] / (1 + z[:, None]) - 1549.06) / sig) ** 2)
    flux = flux + rng.normal(0, 1 / snr, flux.shape)
    return flux.astype(np.float32), np.full(flux.shape, snr**2, np.float32)


def test_the_family_learns_a_lines_offset_from_its_prior(rng):
    """labels -> augment (the priors) -> batch -> training_step, then refine(): the answers beat the priors."""
    torch.manual_seed(0)
    fam = get_family("zrefine")
    model = create_model("zrefine", **TINY)
    cfg = model.config
    opt = fam.configure_optimizers(model, type("C", (), {"lr": 3e-3, "amsgrad": False})())
    z = rng.uniform(1.6, 2.4, 2048)
    flux, ivar = _line_spectra(cfg, z, rng)
    meta = Table({"Z": z, "CLASS": np.full(len(z), "QSO"), "SURVEY": np.full(len(z), "boss")})
    labels = fam.labels(meta, model)
    model.train()
    for step in range(150):
        b = rng.choice(len(z), 64, replace=False)
        f, iv, lab = fam.augment(model, flux[b], ivar[b], {k: v[b] for k, v in labels.items()}, rng)
        X, targets = fam.batch(model, f, iv, lab)
        fam.training_step(model, X, targets, opt)
    zt = rng.uniform(1.6, 2.4, 300)
    ft, it = _line_spectra(cfg, zt, rng)
    prior = np.expm1(np.log1p(zt) + rng.normal(0, cfg.prior_sigma_px, 300) * cfg.step)
    r = refine(model, np.concatenate([ft, it], 1), prior)
    before = np.median(np.abs(prior - zt) / (1 + zt))
    after = np.median(np.abs(r["z"] - zt) / (1 + zt))
    assert after < 0.5 * before, (before, after)
    assert r["ok"].mean() > 0.95


def test_labels_and_window(rng):
    fam = get_family("zrefine")
    model = create_model("zrefine", **TINY)
    meta = Table({"Z": [0.5, 2.0, 2.5, np.nan], "CLASS": ["QSO", "STAR", "BAL", "QSO"]})
    np.testing.assert_array_equal(fam.labels(meta, model)["W"], [0, 0, 1, 0])
    with pytest.raises(RedsiftError, match="no training rows"):
        fam.labels(Table({"Z": [2.0], "CLASS": ["STAR"]}), model)
    # an offset beyond the window is not a refinement; a missing prior gives no answer
    flux, ivar = _line_spectra(model.config, np.array([2.0, 2.0]), rng)
    with torch.no_grad():
        model.head[-1].bias[0] = 100.0  # every answer 100 pixels from its prior
    r = refine(model, np.concatenate([flux, ivar], 1), np.array([2.0, np.nan]))
    assert not r["ok"].any() and np.isnan(r["z"][1])


def test_release_calibrates_zerr_and_the_default_uses_the_net_for_quasars_only(tmp_path, rng):
    from redsift.data.store import Dataset
    from redsift.models.combined import combine
    from redsift.simulate import simulate
    from redsift.train.release import release

    simulate(300, "boss", tmp_path / "val", mix={"QSO": 0.7, "STAR": 0.3}, seed=31, grid="boss", progress=False,
             block=300)
    torch.manual_seed(0)
    save_model(create_model("zrefine", **TINY), tmp_path / "zr")
    rec = release(tmp_path / "zr", tmp_path / "val", tmp_path / "zr_rel")
    zr = load_model(tmp_path / "zr_rel")
    assert set(zr.config.zerr_scale) >= {"all", "boss"} and "zerr_boss" in rec
    # the chosen factor puts 68.3% of the validation pulls within 1 (priors drawn as the release draws them)
    from redsift.models.zrefine import draw_prior_px

    ds = Dataset(tmp_path / "val")
    meta = ds.meta
    z = np.asarray(meta["Z"], float)
    w = np.isin(np.char.strip(np.asarray(meta["CLASS"]).astype(str)), ["QSO", "BAL"]) & (z >= 1.5)
    flux, ivar, _ = ds.read(np.arange(len(ds)))
    prior = np.expm1(np.log1p(z) + draw_prior_px(zr.config, len(z), np.random.default_rng(12345)) * zr.config.step)
    r = refine(zr, np.concatenate([flux, ivar], 1)[w], prior[w], np.full(w.sum(), "boss"))
    pull = np.abs(r["z"] - z[w]) / r["zerr"]
    assert np.mean(pull[r["ok"]] <= 1.0) == pytest.approx(0.683, abs=0.02)

    # in the default: only QSO-typed rows still on the classifier's redshift, at z >= zrefine_zmin
    c = create_model("classifier", channels=[4, 4, 4, 4], fc=8)
    q = load_model("quasarnet-boss-sim")
    save_model(combine(c, q, zrefine=zr), tmp_path / "comb")
    model = load_model(tmp_path / "comb")
    assert model.zrefine is not None and "zrefine" in model.config.sources
    with torch.no_grad():  # an untrained classifier that types everything QSO, at z ~2 (its pdf's middle bin)
        model.classifier.cls_head.bias[:] = -10.0
        model.classifier.cls_head.bias[0] = 10.0
        model.classifier.z_head.weight.zero_()
        model.classifier.z_head.bias[:] = -10.0
        tc = model.classifier.config.t_centres
        model.classifier.z_head.bias[int(np.argmin(np.abs(tc - np.log1p(2.0))))] = 10.0
    from redsift.predict.backend import infer
    from redsift.predict.pipeline import dataset_batches

    fam = get_family(model)

    def columns(m):
        (_, p), = list(dataset_batches(m, ds, 300))
        return fam.columns(m, infer(m, p["X"]), p)[0]

    cols = columns(model)
    meth = np.asarray(cols["Z_METHOD"]).astype(str)
    assert set(np.char.strip(np.asarray(cols["SPECTYPE"]).astype(str))) == {"QSO"}
    net = meth == "ZNET"
    assert net.any() and set(meth[~net]) <= {"CLASSIFIER"}
    np.testing.assert_array_equal(np.asarray(cols["Z"])[net], np.asarray(cols["Z_ZNET"])[net])
    np.testing.assert_array_equal(np.asarray(cols["Z"])[~net], np.asarray(cols["Z_CLASSIFIER"])[~net])
    # beyond the net's window the classifier's answer stays; below zrefine_zmin the net does not run
    with torch.no_grad():
        model.zrefine.head[-1].bias[0] = 100.0
    cols = columns(model)
    assert set(np.asarray(cols["Z_METHOD"]).astype(str)) == {"CLASSIFIER"} and np.isfinite(cols["Z_ZNET"]).all()
    model.config = dataclasses.replace(model.config, zrefine_zmin=2.5)
    cols = columns(model)
    assert set(np.asarray(cols["Z_METHOD"]).astype(str)) == {"CLASSIFIER"} and np.isnan(cols["Z_ZNET"]).all()


def test_standalone_prior_column_sentinels_and_masks_give_no_redshift(rng):
    """Alone the family refines the metadata's Z_PRIOR; a masked prior (a join without a match), a sentinel (-999) or
    none gives no answer (Z NaN, no spectral type), whatever value the mask hides."""
    from astropy.table import MaskedColumn

    fam = get_family("zrefine")
    model = create_model("zrefine", **TINY)
    flux, ivar = _line_spectra(model.config, np.full(4, 2.0), rng)
    prior = MaskedColumn([2.0, 2.0, -999.0, np.nan], mask=[False, True, False, False])
    p = fam.prepare_gridded(model, flux, ivar, np.zeros(4, np.int64), meta=Table({"Z_PRIOR": prior}))
    with torch.no_grad():
        cols, zwarn = fam.columns(model, model(torch.from_numpy(p["X"])).numpy(), p)
    assert np.isfinite(cols["Z"][0]) and abs(cols["Z"][0] - 2.0) < 0.02 and cols["SPECTYPE"][0] == "QSO"
    assert np.all(np.isnan(cols["Z"][1:])) and set(cols["SPECTYPE"][1:]) == {""}
    assert np.all(np.isnan(cols["Z_PRIOR"][1:]))


def test_combine_base_keeps_the_parts_and_settings_and_drops_the_release(tmp_path, capsys):
    """``redsift combine --base M --zrefine R``: M's parts, sources and own settings, the net added, M's release
    decisions dropped (a release chooses them again with the net in place)."""
    from redsift.cli.main import main
    from redsift.models.combined import combine

    c = create_model("classifier", channels=[4, 4, 4, 4], fc=8)
    q = load_model("quasarnet-boss-sim")
    base = combine(c, q)
    base.config = dataclasses.replace(base.config, refine_nsigma=3.0, zrefine_zmin=2.0, rule="qn-z",
                                      zerr_scale={"QSO": 2.0})
    save_model(base, tmp_path / "base")
    save_model(create_model("zrefine", **TINY), tmp_path / "zr")
    assert main(["combine", "--base", str(tmp_path / "base"), "--zrefine", str(tmp_path / "zr"),
                 "-o", str(tmp_path / "out")]) == 0
    out = load_model(tmp_path / "out")
    assert out.zrefine is not None and out.config.refine_nsigma == 3.0 and out.config.zrefine_zmin == 2.0
    assert out.config.rule == "qn-z" and out.config.zerr_scale is None
    assert str(tmp_path / "zr") in out.config.sources["zrefine"]["source"]
    for name in ("classifier", "quasarnet"):
        a, b = getattr(base, name).state_dict(), getattr(out, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    assert main(["combine", "--base", str(tmp_path / "zr"), "--zrefine", str(tmp_path / "zr"), "-o", str(tmp_path / "x")]) != 0
    assert "is not a combined model" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_znet_rows_take_their_own_zerr_cells_by_snr_then_survey_then_all():
    """The default's ZERR at the net's answers: "ZNET@bin/survey", "ZNET@bin", "ZNET/survey", "ZNET" in that order;
    the classifier's rows keep the type's cells and other methods' rows are left alone."""
    from redsift.models.combined import CombinedConfig, CombinedFamily

    cfg = CombinedConfig(zerr_scale={"QSO": 2.0, "ZNET": 3.0, "ZNET@0": 5.0, "ZNET@1/desi": 7.0}, zerr_floor={},
                         zerr_snr_edges=[4.0, 8.0])
    cols = {"Z": np.full(5, 2.0), "ZERR": np.full(5, 0.003), "SPECTYPE": np.full(5, "QSO"),
            "Z_METHOD": np.array(["CLASSIFIER", "ZNET", "ZNET", "ZNET", "EIGEN"]),
            "SNR_MODEL": np.array([1.0, 1.0, 5.0, 20.0, 1.0])}
    got = CombinedFamily._classifier_zerr(cfg, cols, np.array(["boss", "boss", "desi", "boss", "boss"]))
    np.testing.assert_allclose(got / 0.003, [2.0, 5.0, 7.0, 3.0, 1.0])


def test_refine_shows_the_net_one_input_shape_and_pads_without_changing_answers(rng):
    """``refine`` runs the net on ``batch_size`` rows every call, the last batch padded (oneDNN caches primitives
    per input shape: a new row count per prediction batch grew the default's memory ~20 MB a batch), and a row's
    answer does not depend on how many rows came with it."""
    model = create_model("zrefine", **TINY).eval()
    z = rng.uniform(2.0, 3.0, 11)
    flux, ivar = _line_spectra(model.config, z, rng)
    fi = np.concatenate([flux, ivar], 1)
    shapes = []
    model.register_forward_pre_hook(lambda mod, args: shapes.append(tuple(args[0].shape)))
    whole = refine(model, fi, z + 0.001, batch_size=4)
    assert len(shapes) == 3 and len(set(shapes)) == 1 and shapes[0][0] == 4
    for k in (1, 5, 11):
        part = refine(model, fi[:k], z[:k] + 0.001, batch_size=4)
        for key in ("z", "zerr", "offset"):
            np.testing.assert_allclose(part[key], whole[key][:k], rtol=0, atol=1e-9)
