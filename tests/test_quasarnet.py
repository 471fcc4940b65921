import json

import numpy as np
import pytest
import torch
from astropy.table import Table

from redsift.cli.main import main
from redsift.errors import RedsiftError
from redsift.models import create_model, load_model, save_model
from redsift.models.quasarnet import QuasarNetConfig, decode, make_targets, quasarnet_loss
from redsift.simulate import simulate
from redsift.train import TrainConfig, learning_rate, train
from redsift.zwarning import ZWarningMask


@pytest.fixture(scope="module")
def simset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "train"
    simulate(1200, "boss", out, seed=5, block=600, progress=False)  # parametric mode: runs anywhere
    return out


def test_architecture_follows_the_config():
    m = create_model("quasarnet")
    assert m.flat_length == 20  # 443 -> 217 -> 104 -> 48 -> 20 with valid padding, k=10, s=2
    assert m(torch.randn(3, 443)).shape == (3, 7, 26)
    same = create_model("quasarnet", nconv=6, padding="same")
    assert same.flat_length == 7  # as QuasarNP's qn6 file: FC input 700 = 7 px x 100 channels
    small = create_model("quasarnet", filters=25, fc=25)
    assert small.fc.in_features == 20 * 25
    with pytest.raises(ValueError, match="padding"):
        create_model("quasarnet", padding="full")


def test_targets_decode_back_to_the_redshift():
    cfg = QuasarNetConfig()
    z = np.array([0.3, 1.2, 2.4, 3.9, 5.2])
    box, off, full, w = make_targets(z, np.ones(5, bool), np.zeros(5), np.zeros(5), cfg)
    raw = np.concatenate([box, np.repeat(off[..., None], cfg.nboxes, 2)], 2)
    d = decode(raw, cfg)
    for k in range(5):
        present = full[k, :6]
        np.testing.assert_allclose(d["z_line"][k, present], z[k], atol=1e-9)
    # Lyman-alpha is in the grid only from z = 3600/1215.67 - 1 = 1.96
    assert not full[0, 0] and not full[1, 0] and full[2, 0]
    # non-quasars have no lines
    box, _, full, _ = make_targets(z, np.zeros(5, bool), np.zeros(5), np.zeros(5), cfg)
    assert not full.any() and box.sum() == 0


def test_weighted_redshift_averages_the_lines_that_agree():
    cfg = QuasarNetConfig(z_method="weighted")
    best = QuasarNetConfig()
    z = np.array([2.4])
    box, off, full, _ = make_targets(z, np.ones(1, bool), np.zeros(1), np.zeros(1), cfg)
    raw = np.concatenate([box * 0.9, np.repeat(off[..., None], cfg.nboxes, 2)], 2)
    lines = np.flatnonzero(full[0, :6])  # Lya, CIV, CIII] (and MgII) at z = 2.4
    # move each line's offset: the most confident line (conf 0.99) by +0.002 in z, the others by -0.001;
    # one line disagrees wildly (a misidentification) and must be left out
    raw2 = raw.copy()
    j = box[0].argmax(axis=1)
    dz_per_offset = []
    for f in lines:
        r = raw.copy()
        r[0, f, cfg.nboxes + j[f]] += 0.01
        dz_per_offset.append((decode(r, best)["z_line"][0, f] - z[0]) / 0.01)
    targets = {lines[0]: 0.002, lines[1]: -0.001, lines[2]: -0.001}
    for f, dz in targets.items():
        k = list(lines).index(f)
        raw2[0, f, cfg.nboxes + j[f]] += dz / dz_per_offset[k]
    raw2[0, lines[0], j[lines[0]]] = 0.99
    if len(lines) > 3:
        raw2[0, lines[3], cfg.nboxes + j[lines[3]]] += 0.5  # ~ +0.1 in z: disagrees by > 3000 km/s
    db, dw = decode(raw2, best), decode(raw2, cfg)
    assert db["zbest"][0] == pytest.approx(z[0] + 0.002, abs=2e-5)
    expect = z[0] + (0.99 * 0.002 - 0.9 * 0.001 - 0.9 * 0.001) / (0.99 + 0.9 + 0.9)
    assert dw["zbest"][0] == pytest.approx(expect, abs=2e-5)
    with pytest.raises(RedsiftError, match="unknown z_method"):
        QuasarNetConfig(z_method="mean")


def test_bal_finder_weights():
    cfg = QuasarNetConfig()
    z = np.full(4, 2.5)
    bal = np.array([1, 0, -1, 1])
    bi = np.array([900.0, 0.0, 500.0, 0.0])  # the last is flagged BAL with BI = 0: inconsistent
    box, _, full, w = make_targets(z, np.ones(4, bool), bal, bi, cfg)
    assert list(w[:, -1]) == [1, 1, 0, 0]
    assert list(full[:, -1]) == [True, False, False, True]
    assert np.all(w[:, :-1] == 1)


def test_loss_balances_full_and_empty_boxes():
    cfg = QuasarNetConfig()
    z = np.array([2.5, 2.5])
    t = [torch.from_numpy(np.asarray(a, np.float32)) for a in make_targets(z, np.ones(2, bool), np.zeros(2), np.zeros(2), cfg)]
    box = t[0]
    # perfect logits for the boxes and offsets: the loss approaches 0
    logits = torch.where(box > 0, 30.0, -30.0)
    perfect = torch.cat([logits, t[1][..., None].expand(-1, -1, cfg.nboxes)], 2)
    total, per = quasarnet_loss(perfect, *t)
    assert float(total) < 1e-6
    # all-0.5 boxes: each finder with a line costs log 2 for full + log 2 for empty, whatever the counts of
    # full and empty boxes (1 full box against nboxes - 1 empty ones: the balancing of eq. 1)
    half = torch.cat([torch.zeros_like(logits), t[1][..., None].expand(-1, -1, cfg.nboxes)], 2)
    _, per = quasarnet_loss(half, *t)
    present = t[2].any(dim=0)
    np.testing.assert_allclose(per[present].numpy(), 2 * np.log(2), rtol=1e-5)
    # an offset error of 0.1 in the full box adds 0.1^2 to that finder only
    shifted = perfect.clone()
    shifted[..., cfg.nboxes:] += 0.1
    _, per_shift = quasarnet_loss(shifted, *t)
    np.testing.assert_allclose(per_shift[present].numpy(), 0.01, rtol=1e-4, atol=1e-6)


def test_save_and_load_safely(tmp_path):
    m = create_model("quasarnet", filters=8, fc=8)
    save_model(m, tmp_path / "m")
    back = load_model(tmp_path / "m")
    x = torch.randn(2, 443)
    m.eval()
    np.testing.assert_array_equal(m(x).detach().numpy(), back(x).detach().numpy())
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["model"] == "quasarnet" and meta["config"]["filters"] == 8 and len(meta["weights_sha256"]) == 64


def test_bad_weights_fail_clearly(tmp_path):
    m = create_model("quasarnet", filters=8, fc=8)
    d = save_model(m, tmp_path / "m")
    # corrupt weights
    w = d / "model.safetensors"
    good = w.read_bytes()
    w.write_bytes(good[:100])
    with pytest.raises(RedsiftError, match="model.safetensors: corrupt or unreadable weights"):
        load_model(d)
    w.write_bytes(good)
    # a config that disagrees with the weights
    meta = json.loads((d / "config.json").read_text())
    meta["config"]["filters"] = 16
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(RedsiftError, match="shape"):
        load_model(d)
    # another model family
    meta["model"] = "resnet"
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(RedsiftError, match="unknown model family 'resnet'"):
        load_model(d)
    with pytest.raises(RedsiftError, match="no such model directory"):
        load_model(tmp_path / "nothing")


def _train(simset, out, **kw):
    cfg = TrainConfig(data=str(simset), out=str(out), epochs=2, batch_size=64, seed=3, checkpoint_every=0,
                      model={"filters": 16, "fc": 16}, **kw)
    return cfg


def test_resume_is_exact(simset, tmp_path):
    # N steps straight ...
    # (with the cosine schedule, whose rate depends on the global step)
    train(_train(simset, tmp_path / "a", max_steps=20, lr_schedule="cosine"), progress=False)
    # ... equal k steps, a stop, and a resume to N (across the epoch boundary: 17 steps per epoch)
    train(_train(simset, tmp_path / "b", max_steps=7, lr_schedule="cosine"), progress=False)
    # the stop's checkpoint rewritten as runs before the family plug-ins wrote them (one "optimizer"):
    # such checkpoints (checkpoints/quasarnet-boss-v2) resume exactly too
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    ck["optimizer"] = ck.pop("optimizers")[0]
    torch.save(ck, tmp_path / "b" / "checkpoint.pt")
    cfg = _train(simset, tmp_path / "b", max_steps=20, lr_schedule="cosine")
    train(cfg, resume=True, progress=False)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 20
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    assert len(a["optimizers"]) == len(b["optimizers"]) == 1
    for (ka, va), (kb, vb) in zip(a["optimizers"][0]["state"].items(), b["optimizers"][0]["state"].items()):
        for key in va:
            torch.testing.assert_close(va[key], vb[key], rtol=0, atol=0)


def test_training_writes_history_best_model_and_config(simset, tmp_path):
    hist = train(_train(simset, tmp_path / "r"), progress=False)
    assert len(hist) == 2 and {"purity", "completeness", "dv_std", "loss", "train_spectra_per_s"} <= set(hist[0])
    # the BAL figures at the paper's operating point, as the release will choose it
    assert {"bal_threshold_op", "bal_completeness_op", "nonbal_rejection_op"} <= set(hist[0])
    assert 0.05 <= hist[0]["bal_threshold_op"] < 1
    assert (tmp_path / "r" / "best" / "model.safetensors").exists()
    cfg = json.loads((tmp_path / "r" / "train_config.json").read_text())
    assert cfg["train"]["seed"] == 3 and cfg["model"]["filters"] == 16 and cfg["data_provenance"]["seed"] == 5
    with pytest.raises(RedsiftError, match="a run exists there"):
        train(_train(simset, tmp_path / "r"), progress=False)
    # fine-tuning starts from the released weights: after 0 further steps the weights are the same
    train(_train(simset, tmp_path / "f", init=str(tmp_path / "r" / "best"), max_steps=1, lr=0.0),
                    progress=False)
    src = load_model(tmp_path / "r" / "best").state_dict()
    got = torch.load(tmp_path / "f" / "checkpoint.pt", weights_only=True)["model"]
    for k, v in src.items():
        if "running" not in k and "num_batches" not in k:  # batch-norm statistics move in train mode
            torch.testing.assert_close(got[k], v, rtol=0, atol=0)
    # ... and refuses another architecture, naming the difference
    cfg = TrainConfig(data=str(simset), out=str(tmp_path / "g"), init=str(tmp_path / "r" / "best"),
                      model={"filters": 8, "fc": 16})
    with pytest.raises(RedsiftError, match="differs in filters"):
        train(cfg, progress=False)


def test_cosine_learning_rate():
    cfg = TrainConfig(data="x", out="y", epochs=4, lr=1e-3, lr_min=1e-5, lr_schedule="cosine")
    assert learning_rate(cfg, 0, 100) == pytest.approx(1e-3)
    assert learning_rate(cfg, 200, 100) == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert learning_rate(cfg, 400, 100) == pytest.approx(1e-5)
    assert learning_rate(TrainConfig(data="x", out="y", lr=3e-4), 123, 100) == 3e-4
    with pytest.raises(RedsiftError, match="unknown lr_schedule"):
        learning_rate(TrainConfig(data="x", out="y", lr_schedule="step"), 0, 1)
    # a linear warm-up over the first steps, on either schedule, then the schedule itself
    warm = TrainConfig(data="x", out="y", epochs=4, lr=1e-3, lr_min=1e-5, lr_schedule="cosine", warmup_steps=10)
    assert learning_rate(warm, 0, 100) == pytest.approx(1e-4)
    assert learning_rate(warm, 4, 100) == pytest.approx(5e-4 * (1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + np.cos(np.pi * 4 / 400))) / 1e-3)
    assert learning_rate(warm, 200, 100) == learning_rate(cfg, 200, 100)
    assert learning_rate(TrainConfig(data="x", out="y", lr=3e-4, warmup_steps=3), 1, 100) == pytest.approx(2e-4)


def test_predict_every_input_gets_a_row(simset, tmp_path, boss_files):
    m = create_model("quasarnet", filters=8, fc=8)
    save_model(m, tmp_path / "model")
    bad = tmp_path / "spec-bad.fits"
    bad.write_bytes(boss_files[0].read_bytes()[:30000])
    out = tmp_path / "cat.fits"
    args = ["predict", "--model", str(tmp_path / "model"), str(boss_files[0]), str(bad), str(boss_files[1]),
            "-o", str(out), "--quiet"]
    assert main(args) == 3  # EXIT_PARTIAL: the catalog is written, one input could not be read
    cat = Table.read(out)
    assert len(cat) == 3
    assert cat.colnames[:6] == ["TARGETID", "Z", "ZERR", "ZWARN", "SPECTYPE", "SUBTYPE"]
    for col in ("IS_QSO", "IS_BAL", "C_LYA", "C_CIV", "C_CIII", "C_MGII", "C_HBETA", "C_HALPHA", "C_BAL",
                "Z_LYA", "Z_HALPHA", "Z_BAL", "SOURCE", "INDEX", "PLATE", "MJD", "FIBERID"):
        assert col in cat.colnames
    assert cat["ZWARN"][1] & ZWarningMask.NODATA and cat["ZWARN"][1] & ZWarningMask.BAD_INPUT
    c_lya = np.ma.filled(cat["C_LYA"], np.nan)  # NaN in FITS float columns reads back masked
    assert not cat["IS_QSO"][1] and np.isnan(c_lya[1]) and "truncated" in cat["ERROR"][1]
    assert np.all(np.isfinite(c_lya[[0, 2]]))
    # a dataset input, with a grid check
    assert main(["predict", "--model", str(tmp_path / "model"), str(simset), "-o", str(tmp_path / "d.fits"),
                 "--quiet"]) == 0
    assert len(Table.read(tmp_path / "d.fits")) == 1200


def test_onnx_backend_matches_torch():
    pytest.importorskip("onnxruntime")
    from redsift.predict import infer as predict_arrays

    for padding in ("valid", "same"):
        m = _with_random_bn(create_model("quasarnet", filters=8, fc=8, padding=padding))
        X = np.random.default_rng(0).normal(size=(50, 443)).astype(np.float32)
        a = predict_arrays(m, X, backend="torch")
        b = predict_arrays(m, X, backend="onnx")
        assert a.shape == b.shape == (50, 7, 26)
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_onnx_session_is_warmed_at_the_pipelines_batch_shape(monkeypatch):
    """A new ONNX Runtime session is run twice at the predict pipeline's batch shape before use (its arena filled,
    so a short run's peak memory is a long run's), and those calls change no answer."""
    pytest.importorskip("onnxruntime")
    from redsift.predict import backend, pipeline

    assert backend.WARM_ROWS == pipeline.BATCH_ROWS
    m = create_model("quasarnet", filters=8, fc=8).eval()
    calls = []
    real = backend.onnx_session
    sess = real(m)
    assert sess is not None
    X = np.random.default_rng(1).normal(size=(7, 443)).astype(np.float32)
    first = sess.run(None, {"x": X})[0]
    m2 = create_model("quasarnet", filters=8, fc=8).eval()
    m2.load_state_dict(m.state_dict())
    import onnxruntime as ort

    orig_run = ort.InferenceSession.run

    def run(self, out, feeds, *a, **kw):
        calls.append(feeds["x"].shape)
        return orig_run(self, out, feeds, *a, **kw)

    monkeypatch.setattr(ort.InferenceSession, "run", run)
    sess2 = real(m2)
    monkeypatch.undo()
    assert calls == [(pipeline.BATCH_ROWS, 443)] * 2
    np.testing.assert_array_equal(sess2.run(None, {"x": X})[0], first)


def _with_random_bn(m):
    """Non-trivial batch-norm statistics and affine parameters, so that folding them is tested."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in list(m.bns) + [m.fc_bn]:
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.weight.copy_(torch.randn(bn.num_features, generator=g))
            bn.bias.copy_(torch.randn(bn.num_features, generator=g))
    return m.eval()


def test_inference_form_equals_the_model():
    from redsift.models.quasarnet import QuasarNetInference

    for padding, nconv in (("valid", 4), ("same", 6)):
        m = _with_random_bn(create_model("quasarnet", filters=8, fc=8, padding=padding, nconv=nconv))
        X = torch.from_numpy(np.random.default_rng(2).normal(size=(20, 443)).astype(np.float32))
        with torch.no_grad():
            torch.testing.assert_close(QuasarNetInference(m)(X), m(X), rtol=0, atol=2e-6)


def test_release_chooses_decisions_on_validation(simset, tmp_path, capsys):
    """``redsift release`` (the package's release step, run as a user runs it) for QuasarNET."""
    src = save_model(_with_random_bn(create_model("quasarnet", filters=8, fc=8)), tmp_path / "m")
    out = tmp_path / "release"
    assert main(["release", str(src), "--val", str(simset), "-o", str(out), "--description", "test release"]) == 0
    assert f"wrote {out}: chosen_on = {simset}" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    c = cfg["config"]
    assert 0.3 <= c["c_th"] <= 0.95 and 0.05 <= c["c_bal"] < 1 and c["z_method"] in ("best", "weighted")
    assert len(c["zerr_table"]["sigma_kms"]) == len(c["zerr_table"]["snr_edges"]) - 1
    assert cfg["release"]["chosen_on"] == str(simset)
    m = load_model(out)  # the release loads, its decisions in its config
    assert m.config.c_th == c["c_th"] and m.config.zerr_table is not None
    # weights copied unchanged
    assert (out / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    assert cfg["description"] == "test release" and "release_command" in cfg
    # keep_c_th keeps the config's threshold; the rule is recorded
    assert main(["release", str(src), "--val", str(simset), "-o", str(out), "--set", "keep_c_th=true"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["c_th"] == 0.4 and "kept" in cfg["release"]["c_th_rule"]
    # a released model by its name, as predict and combine take it (it once failed: no such file)
    from redsift.models.registry import RELEASED_DIR

    assert main(["release", "quasarnet-boss-sim", "--val", str(simset), "-o", str(tmp_path / "again")]) == 0
    assert ((tmp_path / "again" / "model.safetensors").read_bytes()
            == (RELEASED_DIR / "quasarnet-boss-sim" / "model.safetensors").read_bytes())
