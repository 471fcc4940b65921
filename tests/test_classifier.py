"""The classifier family, its taxonomies, the combined default and the stellar-library check.

Real code paths throughout: datasets written by the simulator (parametric mode, seeded), the generic
train loop and release, predict on real fixture files and on datasets, ``redsift evaluate``."""

import json

import numpy as np
import pytest
from astropy.table import Table

from redsift.models import create_model, load_model, save_model
from redsift.models.classifier import ClassifierConfig, decode, make_inputs, preset
from redsift.predict import predict_catalog
from redsift.simulate import simulate
from redsift.taxonomy import TaxonomyError, load_taxonomy
from redsift.train import TrainConfig, train
from redsift.zwarning import ZWarningMask

SMALL = {"channels": [8, 8, 16, 16], "fc": 32}
MIX = {"QSO": 0.25, "STAR": 0.6, "GALAXY": 0.15}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    d = tmp_path_factory.mktemp("cls")
    simulate(600, "boss", d / "train", mix=MIX, seed=1, grid="classifier", star_mix="uniform", progress=False,
             block=300)
    simulate(300, "lamost", d / "train", mix=MIX, seed=2, grid="classifier", star_mix="uniform", progress=False,
             block=300, append=True)
    simulate(300, "desi", d / "val", mix=MIX, seed=3, grid="classifier", star_mix="uniform", progress=False, block=300)
    simulate(120, "boss", d / "test_boss", mix=MIX, seed=4, grid="boss", star_mix="uniform", progress=False, block=120)
    return d


@pytest.fixture(scope="module")
def trained(sets):
    out = sets / "run"
    train(TrainConfig(data=str(sets / "train"), val=str(sets / "val"), out=str(out), family="classifier", epochs=2,
                      batch_size=64, lr=3e-3, seed=0, model=SMALL), progress=False)
    return out


# --- taxonomies ---------------------------------------------------------------------------------------------
def test_builtin_taxonomies_label_simulated_sets(sets):
    from redsift.data.store import Dataset

    meta = Dataset(sets / "train").meta
    for name, k in (("boss14", 14), ("boss12", 12), ("gasnet13", 13), ("lamost", 11), ("qso", 1)):
        tax = load_taxonomy(name)
        assert len(tax) == k
        y = tax.labels(meta)  # strict: every row fits one class or an ignore rule
        assert y.min() >= -1 and y.max() < k
    boss14 = load_taxonomy("boss14")
    y = boss14.labels(meta)
    assert set(np.asarray(meta["CLASS"])[y == boss14.classes.index("GALAXY")]) == {"GALAXY"}
    # the STAR/GALAXY/QSO view sums class probabilities
    p = np.full((2, 14), 1 / 14)
    assert np.allclose(boss14.spectype_probs(p).sum(axis=1), 1)
    assert np.isclose(boss14.spectype_probs(p)[0, 2], 2 / 14)  # QSO, BAL


def test_bad_taxonomy_files_fail_with_the_mismatch_listed(tmp_path):
    bad = {"name": "bad", "classes": [{"name": "Q5O", "spectype": "QUASAR", "match": {"CLASS": ["QS0"]}},
                                      {"name": "K", "spectype": "STAR", "match": {"SUBCLAS": ["K"]}},
                                      {"name": "K", "spectype": "STAR", "match": {"CLASS": ["STAR"], "SUBCLASS": ["K9"]}}]}
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(bad))
    with pytest.raises(TaxonomyError) as e:
        load_taxonomy(f)
    msg = str(e.value)
    assert str(f) in msg and "'QUASAR' is not one of STAR, GALAXY, QSO" in msg and "'QS0'" in msg
    assert "unknown label column 'SUBCLAS'" in msg and "'K9'" in msg and "duplicated class names K" in msg
    with pytest.raises(TaxonomyError, match="no such taxonomy file or built-in taxonomy"):
        load_taxonomy("nonexistent")


def test_labels_that_do_not_fit_fail_before_training(sets, tmp_path):
    tax = load_taxonomy("boss14").to_dict()
    tax["classes"] = [c for c in tax["classes"] if c["name"] not in ("CV", "WD")]  # a taxonomy without them
    with pytest.raises(TaxonomyError) as e:
        train(TrainConfig(data=str(sets / "train"), val=str(sets / "val"), out=str(tmp_path / "r"), family="classifier",
                          epochs=1, model=dict(SMALL, taxonomy=tax)), progress=False)
    msg = str(e.value)
    assert "rows match no class of taxonomy 'boss14'" in msg and "STAR CV x" in msg and "STAR WD x" in msg
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_prefix_range_and_overlap_rules():
    tax = load_taxonomy({"name": "t", "classes": [
        {"name": "K", "spectype": "STAR", "match": {"CLASS": ["STAR"], "SUBCLASS": ["K*"]}},
        {"name": "LOZ", "spectype": "QSO", "match": {"CLASS": ["QSO"], "Z": [0, 2.1]}},
        {"name": "HIZ", "spectype": "QSO", "match": {"CLASS": ["QSO"], "Z": [2.0, 9]}}]})
    meta = {"CLASS": np.array(["STAR", "STAR", "QSO", "QSO"]), "SUBCLASS": np.array(["K5", "K7 (12)", "", ""]),
            "Z": np.array([0.0, 0.0, 1.0, 3.0])}
    assert tax.labels(meta).tolist() == [0, 0, 1, 2]
    meta["Z"][3] = 2.05
    with pytest.raises(TaxonomyError, match="1 rows match several classes \\(LOZ/HIZ"):
        tax.labels(meta)


# --- the family ------------------------------------------------------------------------------------------------
def test_inputs_carry_flux_noise_mask_and_survey():
    cfg = ClassifierConfig()
    flux = np.array([[1.0, 2.0, 3.0, np.nan]] * 2, np.float32)
    ivar = np.array([[4.0, 0.0, 1.0, 1.0]] * 2, np.float32)
    onehot = np.array([[0, 0, 1], [0, 0, 0]], np.float32)
    small = ClassifierConfig(grid="classifier")
    X = make_inputs(flux, ivar, small, onehot)
    assert X.shape == (2, 3 * 4 + 3)
    x = X[0, :12].reshape(3, 4)
    assert np.allclose(x[0], [0.5, 0, 1.5, 0])  # median |flux| of valid pixels (2.0) is the scale
    assert np.allclose(x[1], [0.25, 0, 0.5, 0])  # 1 / (sqrt(ivar) * scale), 0 where masked
    assert x[2].tolist() == [1, 0, 1, 0]
    assert X[0, 12:].tolist() == [0, 0, 1] and X[1, 12:].tolist() == [0, 0, 0]
    assert cfg.nchan == 3 and preset("sdss12").nchan == 1


def test_presets_are_the_seed_systems():
    m = create_model("classifier", preset("sdss12"))
    assert m.config.logrid.npix == 433 and m.config.tax.name == "boss12" and m.config.norm == "max"
    assert sum(isinstance(x, __import__("torch").nn.Conv1d) for x in m.encoder) == 5
    out = m(__import__("torch").zeros(2, 433))
    assert out.shape == (2, 12 + 2)
    assert preset("gasnet2").tax.name == "gasnet13" and preset("fcz").z_head == "point"


def test_train_release_predict_evaluate(sets, trained, tmp_path, real_dir):
    from redsift.evaluate.report import write_report
    from redsift.models import get_family
    from redsift.train.release import release

    hist = json.loads((trained / "history.json").read_text())
    assert len(hist) == 2 and all(np.isfinite(h["loss"]) for h in hist)
    assert {"mean_class_acc", "spectype_acc", "cov68"} <= set(hist[-1])
    rec = release(trained / "best", str(sets / "val"), tmp_path / "rel")
    model = load_model(tmp_path / "rel")
    scale = model.config.zerr_scale
    assert scale and all(v > 0 for v in scale.values())
    assert "zerr_scale" in rec["decisions"] if "decisions" in rec else True
    # predict on real files of every survey plus an unreadable one: one row each, constant schema
    files = [str(p) for p in sorted((real_dir / "boss").glob("spec-*.fits"))[:3]]
    files += [str(p) for p in sorted((real_dir / "lamost").glob("spec-*"))] + [str(tmp_path / "broken.fits")]
    (tmp_path / "broken.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    cat = predict_catalog(model, files, progress=False)
    assert len(cat) == len(files)
    bad = cat[-1]
    assert bad["ZWARN"] & int(ZWarningMask.NODATA) and bad["SPECTYPE"] == "" and not np.isfinite(bad["Z"])
    good = cat[:-1]
    assert set(good["SPECTYPE"]) <= {"STAR", "GALAXY", "QSO"}
    p = np.column_stack([good[f"PROB_{c}"] for c in model.config.tax.classes])
    assert np.allclose(p.sum(axis=1), 1, atol=1e-5)
    assert np.all(np.isfinite(good["ZERR"])) and np.all(good["ZERR"] > 0)
    # a dataset on a finer grid (BOSS pixels) is predicted through the same gridding as files
    out = tmp_path / "cat.fits"
    test = predict_catalog(model, [str(sets / "test_boss")], progress=False)
    test.write(out)
    text = write_report(out, str(sets / "test_boss"), tmp_path / "ev", family=get_family("classifier"))
    assert "mean per-class accuracy" in text and "| true type | n | bias | NMAD |" in text
    # the share with ZWARN == 0 per true type, as the catalog and the truth say
    from astropy.table import Table

    from redsift.evaluate.report import joined, load_truth

    t = joined(Table.read(out), load_truth(str(sets / "test_boss")))
    sel = (np.asarray(t["TRUE_CLASS"]) == "STAR") & (np.char.strip(np.asarray(t["SPECTYPE"]).astype(str)) == "STAR")
    row = next(r for r in text.splitlines() if r.startswith("| STAR (v NMAD"))
    assert row.split("|")[-4].strip() == f"{np.mean(np.asarray(t['ZWARN'])[sel] == 0):.3f}"
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 10000


def test_zerr_calibration_hits_68_percent_on_its_own_set(sets, trained):
    from redsift.data.store import Dataset
    from redsift.models import get_family
    from redsift.train.release import raw_outputs

    model = load_model(trained / "best")
    fam = get_family(model)
    ds = Dataset(sets / "val")
    raw, prepared = raw_outputs(model, ds)
    updates, record = fam.release(model, raw, prepared, ds.meta)
    import dataclasses

    cal = dataclasses.replace(model.config, zerr_scale=updates["zerr_scale"])
    d = decode(raw, cal)
    from redsift.models.classifier import SNR_EDGES, zerr

    surveys = prepared["survey"]
    e = zerr(d, cal, surveys, prepared["snr"])
    bins = np.digitize(np.nan_to_num(prepared["snr"], nan=0.0), SNR_EDGES)
    y = cal.tax.labels(ds.meta, strict=False)
    true_st = np.array(cal.tax.spectypes)[y]
    cells = [k for k in updates["zerr_scale"] if k.count("/") == 2]
    assert cells  # the validation set (DESI) is large enough for per-survey, per-S/N factors
    for key in cells:
        s, v, b = key.split("/")
        sel = (d["spectype"] == s) & (true_st == s) & (surveys == v) & (bins == int(b))
        within = np.abs(d["z"][sel] - np.asarray(ds.meta["Z"])[sel]) < e[sel]
        assert abs(within.mean() - 0.6827) < 0.03, key


@pytest.mark.parametrize("rule", ["classifier", "qn-z"])
def test_combined_model_catalog(sets, trained, tmp_path, real_dir, rule):
    from redsift.models.combined import combine
    from redsift.train.release import release

    release(trained / "best", str(sets / "val"), tmp_path / "rel")  # calibrated: ZERR cells by survey and S/N
    c = load_model(tmp_path / "rel")
    assert any("/" in key for key in c.config.zerr_scale)
    q = load_model("quasarnet-boss-sim")
    save_model(combine(c, q, rule), tmp_path / "comb")
    model = load_model(tmp_path / "comb")
    files = [str(p) for p in sorted((real_dir / "boss").glob("spec-*.fits"))[:4]]
    files.append(str(real_dir / "desi" / "coadd-quasarnp-test.fits"))  # DESI rows: the calibration's survey
    cat = predict_catalog(model, files, progress=False)
    alone = predict_catalog(q, files, progress=False)
    # QuasarNET's columns are QuasarNET's own, unchanged by the combination
    for col in ("IS_QSO", "C_CIV", "Z_CIV"):
        np.testing.assert_array_equal(np.asarray(cat[col]), np.asarray(alone[col]))
    np.testing.assert_array_equal(np.asarray(cat["Z_QUASARNET"]), np.asarray(alone["Z"]))
    # and the classifier's are the classifier's own (its survey-aware ZERR cells included)
    cls_alone = predict_catalog(c, files, progress=False)
    for col in ("Z", "ZERR", "SPECTYPE"):
        np.testing.assert_array_equal(np.asarray(cat[f"{col}_CLASSIFIER" if col != "SPECTYPE" else col]),
                                      np.asarray(cls_alone[col]))
    use = np.asarray(cat["Z_METHOD"]) == "QUASARNET"
    assert np.all(np.asarray(cat["SPECTYPE"])[use] == "QSO")
    if rule == "classifier":
        assert not use.any()
    else:
        assert np.array_equal(use, (np.asarray(cat["SPECTYPE"]) == "QSO") & np.asarray(cat["IS_QSO"], bool))
    np.testing.assert_array_equal(np.asarray(cat["Z"])[use], np.asarray(alone["Z"])[use])
    np.testing.assert_array_equal(np.asarray(cat["Z"])[~use], np.asarray(cat["Z_CLASSIFIER"])[~use])
    disagree = (np.asarray(cat["SPECTYPE"]) == "QSO") != np.asarray(cat["IS_QSO"], bool)
    assert np.all(np.asarray(cat["ZWARN"])[disagree] & int(ZWarningMask.LOW_CONFIDENCE))


# --- the simulator's stars and the real-star check -----------------------------------------------------------
def test_star_library_holds_the_redrock_archetypes(data_dir):
    from redsift.simulate.library import load_library

    lib = load_library(data_dir / "templates", max_stars_per_basis=20)
    cls = np.asarray(lib.star_class)
    # 20 archetype stars per redrock basis (A, B, F, G, K, M, WD) and the Carbon/Ldwarf spectra
    for letter in ("A", "B", "F", "G", "K", "M", "WD"):
        assert (cls == letter).sum() >= 20, letter
    rr = np.char.endswith(np.asarray(lib.star_subclass).astype(str), "(redrock archetype)")
    assert rr.sum() >= 140 and np.all(lib.stars[rr] >= 0)  # PCA rebuilds floored at a small positive flux


def test_stars_vary_and_telluric_bands_are_imprinted():
    from redsift.simulate.instrument import telluric_depth
    from redsift.simulate.library import load_library
    from redsift.simulate.sources import make_stars

    lib = load_library(None)
    spec, z, truth = make_stars(400, lib, np.random.default_rng(0), "uniform")
    fgkm = np.isin(truth["SUBCLASS"], ["F", "G", "K", "M"]) & (truth["SUBTYPE_DETAIL"] != "M+WD")
    assert 0.06 < truth["BINARY"][fgkm].mean() < 0.2 and not truth["BINARY"][~fgkm].any()
    assert truth["EBV_STAR"].mean() > 0.03
    assert len(set(truth["SUBCLASS"])) >= 10
    tau = telluric_depth(np.array([5000.0, 6875.0, 7620.0, 9400.0]))
    assert tau[0] < 1e-3 and tau[1] > 0.2 and tau[2] > 0.5 and tau[3] > 0.3


def test_mk_letters():
    from redsift.evaluate.stars import mk_letter

    assert [mk_letter(s) for s in ("G1V", "sd:F", "KIIvw", "B9.5V", "O5", "C", "M3III", "sdB")] == \
        ["G", "F", "K", "B", "O", "", "M", "B"]


def test_library_stars_observed_as_a_survey(data_dir):
    from redsift.evaluate.stars import load_stars, observe_stars

    stars = load_stars(data_dir / "stars", "jhc")
    assert len(stars) > 100 and stars[0]["wave"][0] > 3490  # nm -> A, air -> vacuum
    s = observe_stars(stars[:4], "boss", 20.0, library="jhc")
    assert s.flux.shape[0] == 4 and s.wave[0] == pytest.approx(3600, abs=1)
    good = s.ivar[0] > 0
    assert 3500 < s.wave[good][0] < 3700 and s.wave[good][-1] < 7500  # the atlas's range only
    assert np.isclose(np.median(s.flux[0][good]), 1.0, atol=0.1)
    assert np.allclose(s.ivar[0][good], 400.0)
    assert Table(s.meta)["LETTER"][0] in "OBAFGKM"


def test_augmented_training_resumes_exactly(sets, tmp_path):
    """Augmentation draws from (seed, epoch, step): 3 steps + a stop + a resume to 6 equal 6 steps."""
    import torch

    def cfg(out, max_steps):
        return TrainConfig(data=str(sets / "train"), val=str(sets / "val"), out=str(out), family="classifier",
                           epochs=1, batch_size=64, lr=3e-3, seed=5, max_steps=max_steps, val_max=64,
                           model=dict(SMALL, augment_coverage=0.5))

    train(cfg(tmp_path / "a", 6), progress=False)
    train(cfg(tmp_path / "b", 3), progress=False)
    c = cfg(tmp_path / "b", 6)
    train(c, resume=True, progress=False)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_bal_decision_at_the_release_operating_point(rng):
    """The BAL/QSO choice is a threshold on P(BAL) / (P(BAL) + P(QSO)), set at release so that
    ``bal_reject`` of the validation non-BAL quasars stay QSO (QuasarNET's 97%); other classes are
    untouched, and without a threshold the larger probability wins as before."""
    import dataclasses

    from redsift.models import get_family
    from redsift.models.classifier import bal_share

    cfg = ClassifierConfig(z_head="none")
    tax = cfg.tax
    b, q, g = tax.classes.index("BAL"), tax.classes.index("QSO"), tax.classes.index("GALAXY")
    n = 400
    logits = np.full((n, len(tax)), -9.0)
    flag = np.where(np.arange(n) < 100, 1, 0)  # 100 BALs, 300 non-BAL quasars
    share = np.where(flag == 1, rng.uniform(0.05, 0.9, n), rng.uniform(0.0, 0.2, n))
    logits[:, b], logits[:, q] = np.log(share), np.log(1 - share)
    logits[-5:, g] = 5.0  # galaxies: never moved between BAL and QSO
    logits = np.concatenate([logits, np.zeros((n, cfg.n_z))], 1)  # the redshift head's outputs (unused)
    meta = Table({"CLASS": np.where(np.arange(n) < n - 5, "QSO", "GALAXY"), "SUBCLASS": np.full(n, ""),
                  "BAL_FLAG": flag, "Z": np.full(n, 2.0)})
    fam = get_family(create_model("classifier", z_head="none"))
    d = decode(logits, cfg)
    y = tax.labels(meta, strict=False)
    thr, rec = fam._bal_threshold(cfg, d, np.array(tax.spectypes)[y], meta)  # every row labelled
    non = share[(flag == 0)][: n - 5 - 100]
    assert abs(rec["rejected"] - 0.97) < 0.01 and thr == pytest.approx(np.quantile(bal_share(d["prob"], tax)[100:n - 5], 0.97))
    cut = decode(logits, dataclasses.replace(cfg, bal_threshold=thr))
    is_q = np.arange(n) < n - 5
    np.testing.assert_array_equal(cut["cls"][is_q], np.where(share[is_q] > thr, b, q))
    assert (cut["cls"][~is_q] == g).all() and (d["cls"][~is_q] == g).all()
    np.testing.assert_array_equal(d["cls"][is_q], np.where(share[is_q] > 0.5, b, q))  # no threshold: argmax
    assert rec["found"] > rec["found_argmax"] and len(non) == 295


def test_p_peak_cells_flag_the_unsure_redshifts_down_to_the_catastrophic_limit(rng):
    """The release raises the pdf-peak threshold of a type / survey cell whose unflagged validation
    redshifts are catastrophic more often than zcat_max, to the least value that meets it; other cells and
    other types keep p_peak_min, and predict applies the cell's threshold."""
    from redsift.models.classifier import ClassifierConfig, ClassifierFamily, p_peak_floor

    cfg = ClassifierConfig(surveys=("boss", "desi"))
    n = 2000
    surveys = np.where(np.arange(n) < n // 2, "boss", "desi")
    z = rng.uniform(0.1, 1.0, n)
    p_peak = rng.uniform(0.3, 1.0, n)
    bad = (surveys == "desi") & (p_peak < 0.8) & (rng.uniform(size=n) < 0.2)  # DESI: low peaks go wrong
    d = {"spectype": np.full(n, "GALAXY"), "p_spectype": np.ones(n), "p_peak": p_peak,
         "z": np.where(bad, z + 0.3, z + 1e-4)}
    cells, record = ClassifierFamily._p_peak_cells(cfg, d, np.full(n, "GALAXY"), z, surveys)
    assert set(cells) == {"GALAXY/desi"} and 0.6 < cells["GALAXY/desi"] <= 0.81
    assert record["GALAXY/desi"]["catastrophic_before"] > 0.01 >= record["GALAXY/desi"]["catastrophic_after"]
    assert record["GALAXY/boss"]["catastrophic_before"] == 0
    assert record["GALAXY/boss"]["kept"] == pytest.approx(np.mean(p_peak[surveys == "boss"] >= cfg.p_peak_min))
    import dataclasses

    floor = p_peak_floor(dataclasses.replace(cfg, p_peak_cells=cells), ["GALAXY", "GALAXY", "QSO"],
                         ["desi", "boss", "desi"])
    np.testing.assert_allclose(floor, [cells["GALAXY/desi"], cfg.p_peak_min, cfg.p_peak_min])


def test_evaluate_reports_zerr_coverage_per_true_class(rng, tmp_path):
    """The redshift section adds each true class's coverage under its type (the type's own line can be right
    on average while its classes are not): numbers as computed from the rows, classes under 20 rows left out."""
    from astropy.table import Table

    from redsift.evaluate.classifier import _redshifts

    n = 300
    cls = np.array(["WD"] * 150 + ["G"] * 140 + ["K"] * 10)
    zt = rng.normal(0, 1e-4, n)
    ze = np.full(n, 1e-5)
    z = zt + rng.normal(0, np.where(cls == "WD", 3e-5, 1e-5))  # white dwarfs' errors three times too small
    t = Table({"Z": z, "TRUE_Z": zt, "ZERR": ze, "SPECTYPE": np.full(n, "STAR"), "ZWARN": np.zeros(n, int)})
    text = "\n".join(_redshifts(t, np.full(n, "STAR"), str(tmp_path), "", "simulated", cls))
    assert "ZERR coverage per true class" in text and "| K (STAR)" not in text
    for c in ("WD", "G"):
        p = np.abs(z - zt)[cls == c] / 1e-5
        row = next(r for r in text.splitlines() if r.startswith(f"| {c} (STAR) |"))
        assert row.split("|")[3].strip() == f"{np.mean(p < 1):.3f}" and row.split("|")[4].strip() == f"{np.mean(p < 1.96):.3f}"
    assert float(next(r for r in text.splitlines() if r.startswith("| WD (STAR)")).split("|")[3]) < 0.45
    # the type's line: coverage over all rows and, last, over the ZWARN == 0 rows (here every row)
    cells = next(r for r in text.splitlines() if r.startswith("| STAR (v NMAD")).split("|")
    assert cells[-2].strip() == f"{cells[7].strip()} / {cells[8].strip()}"
    t["ZWARN"][cls == "WD"] = 4  # flag the white dwarfs: the ZWARN == 0 coverage is the G and K stars'
    text = "\n".join(_redshifts(t, np.full(n, "STAR"), str(tmp_path), "", "simulated", cls))
    p = np.abs(z - zt)[cls != "WD"] / 1e-5
    assert next(r for r in text.splitlines() if r.startswith("| STAR (v NMAD")).split("|")[-2].strip() == \
        f"{np.mean(p < 1):.3f} / {np.mean(p < 1.96):.3f}"


def test_second_peak_reads_the_pdf_outside_the_first_window():
    """The redshift pdf's second solution: the best bins more than ``wide`` bins from the first peak, read as the
    first is (probability-weighted centre, width, probability in its window under the whole pdf)."""
    from redsift.models.classifier import ClassifierConfig, pdf_estimate, second_peak

    cfg = ClassifierConfig(taxonomy="boss14")
    tc = cfg.t_centres
    n = len(tc)
    zl = np.full((4, n), -30.0)
    zl[0, 200], zl[0, 600] = 5.0, 5.0 + np.log(0.25)  # a second peak holding a fifth of the probability
    zl[1, 300] = 5.0  # one peak only: the second is empty probability
    zl[2, 400:460] = 0.0  # one wide plateau: its far end is "another" solution, within the same plateau
    zl[3] = -0.5 * ((np.arange(n) - 500) / 15.0) ** 2  # one broad peak: its shoulders are no second solution
    z2, s2, p2 = second_peak(zl, cfg)
    assert abs(z2[0] - np.expm1(tc[600])) < 1e-9 and abs(p2[0] - 0.2) < 1e-6
    z1, _, p1 = pdf_estimate(zl, cfg)
    assert abs(p1[0] - 0.8) < 1e-6 and abs(np.expm1(z1[0]) - np.expm1(tc[200])) < 1e-9  # the first: unchanged
    assert p2[1] < 1e-10 and np.isfinite(z2[1])  # the best of the flat rest, with no probability to speak of
    assert abs(np.log1p(z2[2]) - tc[400]) > 25 * (tc[1] - tc[0])  # beyond the first window,
    assert abs(p2[2] - 26 / 60) < 1e-9 and p1[2] + p2[2] <= 1 + 1e-12  # its bins counted once
    assert np.isnan(z2[3]) and p2[3] == 0.0
    assert (s2[:3] > 0).all()


def test_evaluate_reports_redshifts_by_method(rng):
    """The combined model's section splits each type's redshifts by the part that gave them: one row per type and
    Z_METHOD present, with the numbers of those rows alone."""
    from astropy.table import Table

    from redsift.evaluate.classifier import _methods

    n = 400
    method = np.array(["EIGEN"] * 200 + ["CLASSIFIER"] * 150 + ["EIGEN_TYPE"] * 50)
    zt = rng.uniform(0.1, 0.5, n)
    z = zt + rng.normal(0, np.where(method == "EIGEN", 1e-5, 1e-3)) * (1 + zt)
    z[-5:] += 0.5  # five catastrophic answers, all of them EIGEN_TYPE
    t = Table({"Z": z, "TRUE_Z": zt, "ZERR": np.where(method == "EIGEN", 1e-5, 1e-3) * (1 + z),
               "SPECTYPE": np.full(n, "GALAXY"), "Z_METHOD": method})
    rows = {r.split("|")[2].strip(): r.split("|") for r in _methods(t, np.full(n, "GALAXY")) if r.startswith("| GALAXY")}
    assert set(rows) == {"EIGEN", "CLASSIFIER", "EIGEN_TYPE"}
    assert int(rows["EIGEN"][3]) == 200 and float(rows["EIGEN"][4]) < 3e-5 < float(rows["CLASSIFIER"][4])
    assert float(rows["EIGEN_TYPE"][5]) == 0.1 and float(rows["CLASSIFIER"][5]) == 0.0


def test_evaluate_reports_the_defaults_delta_chi2(rng, tmp_path):
    """The default's section says what SMALL_DELTA_CHI2 flags and what DELTACHI2 cuts keep, from the answers' own
    DELTACHI2 (negative ones included), and draws it (a real PNG)."""
    from astropy.table import Table

    from redsift.evaluate.classifier import _degeneracy

    n = 500
    zt = rng.uniform(0.1, 0.5, n)
    wrong = np.arange(n) < 50
    z = np.where(wrong, zt + 0.3, zt)
    d = np.where(wrong, rng.normal(-20, 10, n), rng.uniform(5, 500, n))
    d[:3] = np.nan  # not measured
    zwarn = np.where(np.nan_to_num(d, nan=100) < 9, 4, 0)
    t = Table({"Z": z, "TRUE_Z": zt, "SPECTYPE": np.full(n, "GALAXY"), "DELTACHI2": d, "ZWARN": zwarn})
    (line, _) = _degeneracy(t, np.full(n, "GALAXY"), str(tmp_path), "", "test")
    small = zwarn > 0
    assert f"measured for {np.mean(np.isfinite(d)):.3f}" in line
    assert f"`SMALL_DELTA_CHI2` on {np.mean(small):.4f}, wrong (type, or |dv| over 1,000 / 3,000 km/s) among them " \
           f"{np.mean(wrong[small]):.3f}, among the rest {np.mean(wrong[~small]):.4f}" in line
    keep = np.nan_to_num(d, nan=-np.inf) >= 25
    assert f"`DELTACHI2 >= 25` keeps {np.mean(keep):.3f} of the rows, {np.mean(wrong[keep]):.4f} of them wrong" in line
    assert (tmp_path / "deltachi2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_infer_runs_the_network_in_small_chunks_with_the_whole_batchs_answers(rng):
    """The family's ``infer`` runs the network ``INFER_ROWS`` rows at a time whatever batch it is handed (faster a
    row on the CPU, smaller temporaries); the answers are those of one forward pass over the whole batch."""
    import torch

    from redsift.models.registry import get_family

    model = create_model("classifier").eval()
    fam = get_family(model)
    X = rng.normal(size=(fam.INFER_ROWS * 2 + 5, model.n_inputs)).astype(np.float32)
    calls = []
    model.register_forward_pre_hook(lambda mod, args: calls.append(len(args[0])))
    out = fam.infer(model, X, batch_size=1024)
    assert calls == [fam.INFER_ROWS, fam.INFER_ROWS, 5]
    with torch.inference_mode():
        whole = model(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out, whole, rtol=0, atol=1e-5)
