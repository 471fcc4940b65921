import numpy as np
import pytest

from redsift.cli.main import main
from redsift.data import Dataset
from redsift.simulate import REST_GRID, simulate, simulate_block
from redsift.simulate.instrument import SURVEYS, sample_magnitudes
from redsift.simulate.parametric import tau_eff
from redsift.simulate.physics import (
    absorption_index,
    bal_troughs,
    balnicity_index,
    dla_transmission,
    forest_transmission,
    lyman_limit,
    visual_bal_flag,
)
from redsift.zwarning import ZWarningMask

MIX = {"QSO": 0.6, "STAR": 0.25, "GALAXY": 0.15}


@pytest.fixture(scope="module")
def templates(data_dir):
    return str(data_dir / "templates")


@pytest.mark.parametrize("survey", ["boss", "desi", "lamost"])
def test_parametric_mode_needs_no_files(monkeypatch, survey):
    monkeypatch.delenv("REDSIFT_TEMPLATES", raising=False)
    s = simulate_block(0, 60, 0, survey, MIX, seed=1)
    assert s.nspec == 60 and set(s.meta["SIM_MODE"]) == {"parametric"}
    assert set(s.meta["CLASS"]) <= {"QSO", "STAR", "GALAXY"}
    assert np.all(np.isfinite(s.flux)) and (s.weights > 0).mean() > 0.9


@pytest.mark.parametrize("survey", ["boss", "desi", "lamost"])
def test_surveys_have_their_grids(templates, survey):
    s = simulate_block(0, 40, 0, survey, MIX, seed=2, templates=templates)
    inst = SURVEYS[survey]
    assert s.wave[0] == pytest.approx(inst.wmin, abs=1) and s.wave[-1] == pytest.approx(inst.wmax, abs=3)
    if survey == "desi":
        np.testing.assert_allclose(np.diff(s.wave), 0.8, atol=1e-9)
    else:
        np.testing.assert_allclose(np.diff(np.log10(s.wave)), 1e-4, rtol=1e-6)
    assert set(s.meta["SIM_MODE"]) == {"templates"}


def test_truth_columns_and_labels(templates):
    s = simulate_block(0, 300, 0, "boss", MIX, seed=3, templates=templates)
    m = s.meta
    for col in ("TARGETID", "CLASS", "SUBCLASS", "Z", "Z_CONF", "BAL_FLAG", "BI_CIV", "SNR", "MAG_G"):
        assert col in m.colnames
    q = m["CLASS"] == "QSO"
    assert np.all(m["Z"][q] > 0.09) and np.all(m["Z"][q] < 5.51)
    # BAL_FLAG is the simulated visual flag where the CIV trough region is in the spectrum, else -1
    visible = m["Z"] >= 3600 / (1549.06 * (1 - 25000 / 299792.458)) - 1
    seen = visual_bal_flag(m["AI_CIV"], m["CIV_ABS_Q"], m["SNR"])
    assert np.all(m["BAL_FLAG"][visible & q] == seen[visible & q])
    assert np.all(m["BAL_FLAG"][~visible] <= 0)
    trough = (m["BI_CIV"] > 0) | (m["AI_CIV"] > 0)
    assert np.all((m["BAL_FLAG"][~visible & q] == -1) == trough[~visible & q])
    assert np.all(m["BAL_FLAG"][~q] == 0) and np.all(m["BI_CIV"][~q] == 0)
    assert (m["BAL_FLAG"] == 1).any()
    stars = m["CLASS"] == "STAR"
    assert np.all(np.abs(m["Z"][stars]) < 0.002)  # radial velocities only
    assert set(m["SUBCLASS"][stars]) <= {"O", "B", "A", "F", "G", "K", "M", "L", "WD", "C", "CV"}
    fine = set(m["SUBCLASS_FINE"][stars])  # MK types where the template says, e.g. 'K5III', 'M+WD'
    assert any(len(f) > 2 for f in fine)
    gal = m["CLASS"] == "GALAXY"
    assert np.all((m["Z"][gal] >= 0) & (m["Z"][gal] <= 1.2))
    assert len(np.unique(m["TARGETID"])) == 300


def test_deterministic_and_independent_of_jobs(tmp_path, templates):
    a = simulate(1200, "boss", tmp_path / "j1", MIX, seed=7, templates=templates, jobs=1, block=400, progress=False)
    b = simulate(1200, "boss", tmp_path / "j2", MIX, seed=7, templates=templates, jobs=2, block=400, progress=False)
    np.testing.assert_array_equal(a.read(np.arange(1200))[0], b.read(np.arange(1200))[0])
    np.testing.assert_array_equal(a.meta["Z"], b.meta["Z"])
    np.testing.assert_array_equal(a.meta["TARGETID"], b.meta["TARGETID"])
    c = simulate(400, "boss", tmp_path / "other", MIX, seed=8, templates=templates, block=400, progress=False)
    assert not np.array_equal(c.read(np.arange(400))[0], a.read(np.arange(400))[0])
    assert a.provenance["seed"] == 7 and a.provenance["mode"] == "templates"


def test_snr_distribution_of_boss_quasar_targets(templates):
    # BOSS depth: (S/N)^2 ~ 10 per pixel at fibre2 g = 22 (Dawson et al. 2013), i.e. S/N ~ 3.2 at PSF
    # g ~ 21.2 for a point source; brighter quasars sky-limited to source-limited, and a long tail
    s = simulate_block(0, 1500, 0, "boss", {"QSO": 1.0}, seed=4, templates=templates)
    snr, g = np.asarray(s.meta["SNR"]), np.asarray(s.meta["MAG_G"])
    gsel = np.asarray(s.meta["SEL_BAND"]) == "g"
    at21 = np.median(snr[gsel & (g >= 21.0) & (g < 21.5)])
    assert 2.6 < at21 < 4.0
    assert np.median(snr[gsel & (g >= 19.0) & (g < 19.5)]) > 3.5 * at21
    assert g.max() <= 22.0
    assert np.percentile(snr, 95) > 3 * np.median(snr)


def test_forest_mean_transmission_follows_tau_eff():
    rng = np.random.default_rng(0)
    z = np.full(400, 3.0)
    T = forest_transmission(REST_GRID.wave, z, rng)
    sel = (REST_GRID.wave > 1100) & (REST_GRID.wave < 1150)  # Lyman-alpha only
    zabs = 4.0 * REST_GRID.wave[sel] / 1215.67 - 1
    expected = np.mean(np.exp(-tau_eff(zabs)))
    assert np.mean(T[:, sel]) == pytest.approx(expected, rel=0.03)
    assert np.all(T[:, REST_GRID.wave > 1216] == 1)


def test_lyman_limit_and_dlas_absorb_only_blueward():
    rng = np.random.default_rng(1)
    z = np.full(200, 4.0)
    T = lyman_limit(REST_GRID.wave, z, rng)
    assert np.all(T[:, REST_GRID.wave > 912] == 1) and np.mean(T[:, REST_GRID.wave < 800]) < 0.9
    Td, n, lognhi = dla_transmission(REST_GRID.wave, z, rng)
    assert 0.2 < np.mean(n) < 1.2  # ~0.25 per unit z over z = 2..3.95
    has = n > 0
    assert np.all(lognhi[has] >= 20.3) and np.all(lognhi[has] <= 22.0)
    red = REST_GRID.wave > 1300
    assert np.all(Td[:, red] > 0.9)  # only the damping wings of the strongest DLAs reach this far


def test_balnicity_index_definition():
    w = REST_GRID.wave
    v = 299792.458 * (1 - w / 1549.06)
    flat = np.ones_like(w)
    assert balnicity_index(w, flat) == 0
    # a 5000 km/s wide trough at 50% depth from 5000 to 10000 km/s: BI = (1 - 0.5/0.9) * (5000 - 2000)
    f = np.where((v > 5000) & (v < 10000), 0.5, 1.0)
    assert balnicity_index(w, f) == pytest.approx((1 - 0.5 / 0.9) * 3000, rel=0.03)
    # a 1500 km/s trough (a mini-BAL) never counts
    assert balnicity_index(w, np.where((v > 5000) & (v < 6500), 0.2, 1.0)) == 0
    # absorption below 3000 km/s does not count
    assert balnicity_index(w, np.where((v > 0) & (v < 2900), 0.2, 1.0)) == 0


def test_absorption_index_definition():
    w = REST_GRID.wave
    v = 299792.458 * (1 - w / 1549.06)
    # Trump et al. (2006): from 0 km/s, counting once the trough has lasted 1000 km/s
    f = np.where((v > 500) & (v < 2500), 0.5, 1.0)  # a low-velocity mini-BAL: AI > 0, BI = 0
    assert balnicity_index(w, f) == 0
    assert absorption_index(w, f) == pytest.approx((1 - 0.5 / 0.9) * 1000, rel=0.08)
    assert absorption_index(w, np.where((v > 5000) & (v < 5800), 0.2, 1.0)) == 0  # narrower than 1000 km/s
    # a BAL is also an AI trough, with the larger index
    f = np.where((v > 5000) & (v < 10000), 0.5, 1.0)
    assert absorption_index(w, f) > balnicity_index(w, f) > 0


def test_visual_bal_flag_needs_a_visible_trough():
    # flagged when the absorption index is positive and the trough is detected at 5 sigma
    ai = np.array([0.0, 800.0, 800.0, 50.0, 50.0])
    q = np.array([3.0, 3.0, 3.0, 0.5, 0.5])
    snr = np.array([20.0, 1.0, 2.0, 5.0, 20.0])
    assert visual_bal_flag(ai, q, snr).tolist() == [0, 0, 1, 0, 1]


def test_bal_population():
    rng = np.random.default_rng(5)
    T, truth = bal_troughs(REST_GRID.wave, 3000, rng)
    bi, lobal, ai, quad = truth["BI_CIV"], truth["LOBAL"], truth["AI_CIV"], truth["CIV_ABS_Q"]
    # every BAL is an AI trough; AI troughs are more common than BI ones (mini-BALs), as in Trump et al. 2006
    assert np.all(ai[bi > 0] > 0) and (ai > 0).sum() > (bi > 0).sum()
    # no absorber, no depth; a BI trough is > 0.1 deep over > 2000 km/s (29 pixels): > 0.1 sqrt(29)
    assert np.all(quad[np.all(T == 1, axis=1)] == 0)
    assert quad[bi > 0].min() > 0.1 * np.sqrt(29)
    frac = np.mean(bi > 0)
    assert 0.07 < frac < 0.15
    assert 500 < np.median(bi[bi > 0]) < 2500  # the observed median balnicity is ~900 km/s
    assert 0.05 < lobal[bi > 0].mean() < 0.3  # LoBALs are ~15% of BALs
    assert not lobal[bi == 0].any() or lobal[bi == 0].mean() < 0.02


def test_magnitudes_follow_the_survey_ranges():
    rng = np.random.default_rng(0)
    g = sample_magnitudes("boss", "QSO", 5000, rng)
    # BOSS quasar targets: g <= 22 (Ross et al. 2012), ~10% brighter than 19.5, ~1/3 fainter than 21.5
    assert g.min() >= 18.0 and g.max() <= 22.0
    assert 0.07 < np.mean(g < 19.5) < 0.13 and 0.28 < np.mean(g > 21.5) < 0.38


def test_cli_simulate_and_bad_classes(tmp_path, capsys, monkeypatch, templates):
    out = tmp_path / "sim"
    assert main(["simulate", "-n", "50", "--templates", templates, "--seed", "1", "-o", str(out),
                 "--classes", "QSO:1"]) == 0
    ds = Dataset(out)
    assert len(ds) == 50 and set(ds.meta["CLASS"]) == {"QSO"} and ds.grid.npix == 443
    capsys.readouterr()
    # an append says the mode of ITS spectra (parametric here), not the dataset's first run's
    monkeypatch.delenv("REDSIFT_TEMPLATES", raising=False)
    assert main(["simulate", "-n", "20", "--seed", "2", "--append", "-o", str(out), "--classes", "QSO:1"]) == 0
    assert "mode: parametric" in capsys.readouterr().out
    modes = Dataset(out).meta["SIM_MODE"]
    assert len(modes) == 70 and set(modes[:50]) == {"templates"} and set(modes[50:]) == {"parametric"}
    assert main(["simulate", "-n", "5", "-o", str(tmp_path / "x"), "--classes", "QSO,ALIEN"]) == 1
    assert "unknown class(es) ALIEN" in capsys.readouterr().err
    assert main(["simulate", "-n", "5", "-o", str(tmp_path / "y"), "--templates", str(tmp_path)]) == 1
    assert "not a templates directory" in capsys.readouterr().err


def test_stored_spectra_flag_coverage(templates, tmp_path):
    ds = simulate(200, "lamost", tmp_path / "l", MIX, seed=1, templates=templates, block=200, progress=False)
    # LAMOST starts at 3700 A: the first QuasarNET bins (3600-3700 A) are empty in every spectrum
    _, ivar, mask = ds.read(np.arange(200))
    assert np.all(mask[:, :5]) and np.all(ivar[:, :5] == 0)
    zw = np.asarray(ds.meta["ZWARN"])
    assert np.mean(zw & ZWarningMask.LITTLE_COVERAGE > 0) < 0.1


def test_observed_frame_igm_matches_tau_eff_and_stays_blueward():
    from redsift.simulate.instrument import SURVEYS
    from redsift.simulate.physics import igm_transmission_observed

    rng = np.random.default_rng(3)
    wave = SURVEYS["boss"].wave
    z = np.full(300, 2.8)
    T, n, _ = igm_transmission_observed(wave, z, rng)
    lya = wave * 1 / (1 + 2.8)
    sel = (lya > 1100) & (lya < 1180)  # Lyman-alpha forest only (red-ward of Lyman-beta)
    expected = np.mean(np.exp(-tau_eff(wave[sel] / 1215.67 - 1)))
    assert np.mean(T[:, sel]) == pytest.approx(expected, rel=0.05)
    # only DLA damping wings reach red-ward of Lyman-alpha
    assert np.all(T[:, lya > 1260] > 0.9) and np.mean(T[:, lya > 1260]) > 0.999
    assert 0 < n.mean() < 1


def test_dark_sky_has_a_continuum_at_the_nominal_brightness(templates):
    """desi_spec-sky.dat holds sky lines only: the simulator adds the continuum between them so that the
    r-band sky is DESI's nominal dark sky (21.07 mag/arcsec^2), and keeps the line-free pixels at that
    continuum on every survey grid (interpolating across them made the blue sky ~8x too bright)."""
    from redsift.simulate.instrument import SURVEYS, _sky_model
    from redsift.simulate.library import DARK_SKY_R, TemplateLibrary, load_sky

    lib = TemplateLibrary(mode="templates")
    load_sky(lib, templates)
    w = np.asarray(lib.sky_wave)
    ref = 2.998e18 * 3631e-23 / w**2 * 1e17  # 0-mag AB, flat in f_nu
    for band, lo, hi in (("r", 21.0, 21.15), ("g", 21.5, 22.4)):
        resp = np.interp(w, *lib.filters[band], left=0, right=0) * w
        mag = -2.5 * np.log10(np.sum(lib.sky_flux * resp) / np.sum(ref * resp))
        assert lo < mag < hi, (band, mag)
    assert abs(DARK_SKY_R - 21.07) < 0.01
    cont = np.interp(4500.0, w, ref) * 10 ** (-0.4 * (DARK_SKY_R + 0.8))  # about the continuum alone
    for name in ("boss", "desi", "lamost"):
        s = SURVEYS[name]
        sky, _ = _sky_model(s, s.wave, lib)
        blue = (s.wave > 4400) & (s.wave < 4600)
        assert 0.7 < np.median(sky[blue]) / s.fibre_area / cont < 1.3, name
