"""The imported real-data-trained QuasarNET models reproduce QuasarNP (and TensorFlow) on real spectra."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

import redsift
from redsift.cli.main import main
from redsift.errors import RedsiftError
from redsift.models import load_model
from redsift.models.convert_keras import convert_quasarnet_keras
from redsift.predict import predict_spectra

TAGS = ("qn4_25f", "qn6_100f")


@pytest.fixture(scope="module")
def keras_dir(data_dir):
    d = data_dir / "models" / "quasarnet_keras"
    if not d.exists():
        pytest.skip(f"{d} not found")
    return d


@pytest.fixture(scope="module")
def converted(keras_dir, tmp_path_factory):
    out = {}
    for tag in TAGS:
        out[tag] = load_model(convert_quasarnet_keras(keras_dir / f"{tag}.h5", tmp_path_factory.mktemp(tag) / "m"))
    return out


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("part", ["boss", "desi"])
def test_raw_outputs_match_quasarnp(converted, qn_reference, tag, part):
    m = converted[tag]
    with torch.no_grad():
        raw = m(torch.from_numpy(qn_reference[f"{part}_X"])).numpy()
    ref = np.transpose(qn_reference[f"{tag}_{part}_raw"], (1, 0, 2))
    # largest difference seen: 4.3e-7
    assert np.abs(raw - ref).max() < 1e-4


def test_qn6_matches_tensorflow(converted, qn_reference, keras_dir):
    tf = np.load(keras_dir / "qn6_100f_desi_tensorflow_output.npy")
    with torch.no_grad():
        raw = converted["qn6_100f"](torch.from_numpy(qn_reference["desi_X"])).numpy()
    assert np.abs(raw - np.transpose(tf, (1, 0, 2))).max() < 1e-4


@pytest.mark.parametrize("tag", TAGS)
def test_end_to_end_from_files_matches_reference(converted, qn_reference, real_dir, tag):
    """redsift's reading + binning + normalisation + model + decoding reproduce c_line, zbest, c_bal."""
    m = converted[tag]
    files = [real_dir / "boss" / f for f in qn_reference["boss_files"]]
    cat = predict_spectra(m, redsift.read(files))
    names = [n for n, _ in m.config.lines]
    c_line = np.column_stack([cat[f"C_{n}"] for n in names]).T
    z_line = np.column_stack([cat[f"Z_{n}"] for n in names]).T
    assert np.abs(c_line - qn_reference[f"{tag}_boss_c_line"]).max() < 1e-4
    assert np.abs(z_line - qn_reference[f"{tag}_boss_z_line"]).max() < 1e-4
    assert np.abs(np.asarray(cat["C_BAL"]) - qn_reference[f"{tag}_boss_c_bal"][0]).max() < 1e-4
    zbest = z_line[np.argmax(c_line, axis=0), np.arange(c_line.shape[1])]
    assert np.abs(zbest - qn_reference[f"{tag}_boss_zbest"]).max() < 1e-4
    desi = redsift.read(real_dir / "desi" / "coadd-quasarnp-test.fits")
    dcat = predict_spectra(m, desi)
    kept = qn_reference["desi_kept"]
    dc = np.column_stack([dcat[f"C_{n}"] for n in names]).T[:, kept]
    assert np.abs(dc - qn_reference[f"{tag}_desi_c_line"]).max() < 1e-4
    assert dcat["ZWARN"][11] & 512 and not dcat["IS_QSO"][11]  # the row without data stays, flagged


def test_released_models_are_shipped_and_listed(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "quasarnet-qn6_100f-quasarnp" in out and "quasarnet-qn4_25f-quasarnp" in out
    m = load_model("quasarnet-qn6_100f-quasarnp")
    assert m.config.padding == "same" and m.config.nconv == 6 and m.config.offset_rescale
    meta = json.loads((__import__("pathlib").Path(m.source) / "config.json").read_text())
    assert "MIT" in meta["licence"]


def test_cli_convert(keras_dir, tmp_path, capsys):
    out = tmp_path / "qn4"
    assert main(["convert", "quasarnet-keras", str(keras_dir / "qn4_25f.h5"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 conv x 25 filters (k=10, stride 2, valid), FC 25, 7 finders x 13 boxes, offset rescale True" in printed
    assert main(["convert", "quasarnet-keras", str(keras_dir / "qn4_25f.h5"), "-o", str(out)]) == 1
    assert "a model exists there" in capsys.readouterr().err


def test_bad_keras_files(keras_dir, tmp_path):
    src = (keras_dir / "qn4_25f.h5").read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(src[: len(src) // 3])
    with pytest.raises(RedsiftError, match="trunc.h5: not a readable HDF5 file"):
        convert_quasarnet_keras(trunc, tmp_path / "o1")
    noth5 = tmp_path / "text.h5"
    noth5.write_text("hello")
    with pytest.raises(RedsiftError, match="text.h5: not a readable HDF5 file"):
        convert_quasarnet_keras(noth5, tmp_path / "o2")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": {"layers": [
            {"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [None, 32, 32, 3]}},
            {"class_name": "Dense", "config": {"name": "dense", "units": 10}}]}})
        f.create_group("model_weights")
    with pytest.raises(RedsiftError, match="other.h5: not a QuasarNET Keras model"):
        convert_quasarnet_keras(other, tmp_path / "o3")
    # a QuasarNET config whose stored weights do not match it
    bad = tmp_path / "mismatch.h5"
    shutil.copy(keras_dir / "qn4_25f.h5", bad)
    with h5py.File(bad, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        for layer in cfg["config"]["layers"]:
            if layer["class_name"] == "Conv1D":
                layer["config"]["filters"] = 30
        f.attrs["model_config"] = json.dumps(cfg)
    with pytest.raises(RedsiftError, match=r"mismatch.h5: layer conv_1: weights of shape \(25, 1, 10\) do not match"):
        convert_quasarnet_keras(bad, tmp_path / "o4")
    # another grid length than the file's input
    with pytest.raises(RedsiftError, match="takes 443 input pixels but the grid has 400"):
        convert_quasarnet_keras(keras_dir / "qn4_25f.h5", tmp_path / "o5",
                                grid=redsift.LogGrid(np.log10(3600), 1e-3, 400, "left"))
    for k in range(1, 6):
        assert not (tmp_path / f"o{k}").exists()  # nothing written
