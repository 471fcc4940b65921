import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from redsift.cli.main import main
from redsift.metrics import BAL_ZMIN, C_KMS, bal_metrics, bal_threshold, nmad, qso_metrics, velocity_difference
from redsift.models import create_model, save_model
from redsift.simulate import simulate


def test_qso_metrics_by_hand():
    cls = np.array(["QSO", "QSO", "QSO", "GALAXY", "STAR", "QSO"])
    zt = np.array([2.0, 2.0, 1.0, 0.5, 0.0, 3.0])
    pred = np.array([True, True, True, True, True, False])
    zp = np.array([2.0 + 3 * 0.001, 2.5, 1.0, 0.5, 1.0, 3.0])  # one catastrophic, one star false positive
    m = qso_metrics(pred, zp, cls, zt)
    # correct: QSO 0 (dv ~300 km/s), QSO 2, and the GALAXY with the right redshift
    assert m["purity"] == pytest.approx(3 / 5)
    assert m["completeness"] == pytest.approx(2 / 4)
    assert m["catastrophic"] == pytest.approx(1 / 3)
    assert velocity_difference([2.003], [2.0])[0] == pytest.approx(299.792458, rel=1e-6)
    assert nmad([1, 1, 1, 1]) == 0


def test_bal_metrics_by_hand():
    m = bal_metrics([True, False, True, False, True], [1, 1, 0, 0, -1], [True] * 5)
    assert m["bal_completeness"] == 0.5 and m["nonbal_rejection"] == 0.5 and m["n_bal"] == 2
    # quasars below BAL_ZMIN cannot show a CIV BAL on a 3600 A grid: not counted when z is given
    m = bal_metrics([True, False, True, False, False], [1, 1, 0, 0, 0], [True] * 5, z_true=[2, 2, 2, 2, 1.0])
    assert m["n_nonbal"] == 2 and m["nonbal_rejection"] == 0.5 and BAL_ZMIN == pytest.approx(1.5714, abs=1e-4)
    # with BI known, flag and BI must agree (the paper's consistent set); BI alone is measured beside it
    pred = [True, False, True, True, False, False]
    flag = [1, 1, 1, 0, 0, 0]
    bi = [900.0, 50.0, 0.0, 300.0, 0.0, 0.0]  # rows 2 (a flagged mini-BAL) and 3 (an unseen weak BAL) disagree
    m = bal_metrics(pred, flag, [True] * 6, bi_civ=bi)
    assert (m["n_bal"], m["n_nonbal"]) == (2, 2)
    assert m["bal_completeness"] == 0.5 and m["nonbal_rejection"] == 1.0
    assert (m["n_bal_bi"], m["n_nonbal_bi"]) == (3, 3)
    assert m["bal_completeness_bi"] == pytest.approx(2 / 3) and m["nonbal_rejection_bi"] == pytest.approx(2 / 3)


def test_bal_threshold_maximises_the_worse_of_the_two():
    # BALs score 0.6-0.95, non-BALs 0.1-0.7: the best threshold separates them best
    rng = np.random.default_rng(0)
    c = np.r_[rng.uniform(0.6, 0.95, 100), rng.uniform(0.1, 0.7, 900)]
    bal = np.r_[np.ones(100, int), np.zeros(900, int)]
    th, m = bal_threshold(c, np.ones(1000, bool), bal, np.ones(1000, bool), np.full(1000, 2.5))
    assert 0.6 <= th <= 0.7
    assert min(m["bal_completeness"], m["nonbal_rejection"]) > 0.8
    # an asymmetric operating point: the largest margin over (0.98 completeness, 0.90 rejection)
    th2, m2 = bal_threshold(c, np.ones(1000, bool), bal, np.ones(1000, bool), np.full(1000, 2.5), targets=(0.98, 0.90))
    assert th2 < th and m2["bal_completeness"] >= m["bal_completeness"]
    # nothing to choose on (no BALs): the default threshold and its (NaN) figures, no crash
    th3, m3 = bal_threshold(c[100:], np.ones(900, bool), bal[100:], np.ones(900, bool))
    assert th3 == 0.4 and np.isnan(m3["bal_completeness"]) and m3["n_nonbal"] == 900
    margin = min(m2["bal_completeness"] - 0.98, m2["nonbal_rejection"] - 0.90)
    for t in np.arange(0.05, 0.95, 0.01):  # no threshold does better
        comp, rej = np.mean(c[:100] > t), np.mean(c[100:] <= t)
        assert min(comp - 0.98, rej - 0.90) <= margin + 1e-12


def test_evaluate_and_plot_commands(tmp_path, capsys, boss_files):
    ds = tmp_path / "sim"
    simulate(600, "boss", ds, seed=9, block=600, progress=False)
    model = save_model(create_model("quasarnet", filters=8, fc=8), tmp_path / "model")
    cat = tmp_path / "cat.fits"
    assert main(["predict", "--model", str(model), str(ds), "-o", str(cat), "--quiet"]) == 0
    out = tmp_path / "report"
    assert main(["evaluate", str(cat), "--truth", str(ds), "-o", str(out), "--label", "test"]) == 0
    text = capsys.readouterr().out
    assert "| purity |" in text and "By redshift:" in text and "By S/N per pixel:" in text
    # simulated truth has BI_CIV: BAL counted on the flag/BI-consistent set, BI alone beside it
    assert "| bal_completeness_bi |" in text and "whose BAL flag and BI_CIV agree" in text
    # the catalog header carries the decision rule that made IS_QSO / IS_BAL, and the report quotes it
    hdr = fits.getheader(cat, 1)
    assert (hdr["C_TH"], hdr["N_LINES"], hdr["C_BAL"], hdr["Z_METHOD"], hdr["ZERR"]) == (0.4, 1, 0.4, "best", "none")
    assert "decision rule (catalog header): C_TH = 0.4, N_LINES = 1, C_BAL = 0.4, Z_METHOD = best" in text
    for f in ("summary.md", "purity_completeness.png", "dv_hist.png", "bal.png", "zbins.png", "examples.png"):
        assert (out / f).stat().st_size > 0
    png = tmp_path / "one.png"
    assert main(["plot", str(boss_files[0]), "--model", str(model), "-o", str(png)]) == 0
    assert png.stat().st_size > 10_000
    assert main(["plot", str(boss_files[0]), "--index", "3", "--model", str(model), "-o", str(png)]) == 1
    assert "out of range (the file has 1 spectra)" in capsys.readouterr().err


def test_evaluate_without_common_targets(tmp_path, capsys):
    cat = tmp_path / "c.fits"
    Table({"TARGETID": [1], "ZWARN": [0], "C_LYA": [0.9], "Z_LYA": [2.0]}).write(cat)
    truth = tmp_path / "t.csv"
    Table({"TARGETID": [2], "CLASS": ["QSO"], "Z": [2.0]}).write(truth)
    assert main(["evaluate", str(cat), "--truth", str(truth), "-o", str(tmp_path / "r")]) == 1
    assert "no TARGETID in common" in capsys.readouterr().err


def test_zerr_calibration_gives_unit_pulls():
    from redsift.metrics import pull_metrics
    from redsift.models.quasarnet import QuasarNetConfig, calibrate_zerr, redshift_error

    rng = np.random.default_rng(3)
    n = 20000
    snr = rng.uniform(0.5, 30, n)
    nag = rng.integers(1, 6, n)
    sigma = 300 + 2000 / snr / np.sqrt(np.minimum(nag, 4))  # km/s: worse at low S/N, better with more lines
    z = rng.uniform(0.5, 4, n)
    dv = rng.normal(0, sigma)
    table = calibrate_zerr(dv[: n // 2], snr[: n // 2], nag[: n // 2])
    cfg = QuasarNetConfig(zerr_table=table)
    zp = z + dv * (1 + z) / C_KMS
    zerr = redshift_error(zp[n // 2:], snr[n // 2:], nag[n // 2:], cfg)
    m = pull_metrics(zp[n // 2:], zerr, z[n // 2:], np.ones(n - n // 2, bool))
    assert 0.9 < m["pull_std"] < 1.1
    # without a table the error is NaN, never a constant
    assert np.isnan(redshift_error([1.0], [5.0], [2], QuasarNetConfig())).all()
    # an empty cell falls back to its S/N row
    t2 = calibrate_zerr(dv[:100], np.full(100, 3.0), np.ones(100, int), min_count=30)
    assert t2["sigma_kms"][1][3] == t2["sigma_kms"][1][0]
