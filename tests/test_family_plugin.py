"""The proof that the family interface is enough: a tiny family defined here, in the tests, goes through
train, release, predict and evaluate using only the generic commands, and through the Python API."""

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from astropy.table import Table
from torch import nn

import redsift
from redsift.cli.main import main
from redsift.grid import LogGrid
from redsift.models import Family, families, register_family
from redsift.models.family import nodata_rows
from redsift.simulate import simulate
from redsift.zwarning import ZWarningMask

CLASSES = ("QSO", "STAR", "GALAXY")


@dataclass(frozen=True)
class TinyConfig:
    """A linear classifier with a redshift output, on QuasarNET's grid."""

    grid: dict = field(default_factory=lambda: LogGrid.quasarnet().to_dict())
    hidden: int = 8
    p_min: float = 0.5  # below this class probability a row is LOW_CONFIDENCE (chosen at release)

    @property
    def logrid(self) -> LogGrid:
        return LogGrid.from_dict(self.grid)

    def decisions(self) -> dict:
        return {"p_min": self.p_min}


class Tiny(nn.Module):
    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.body = nn.Linear(config.logrid.npix, config.hidden)
        self.head = nn.Linear(config.hidden, len(CLASSES) + 1)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))


@register_family
class TinyFamily(Family):
    name = "tiny"
    config_cls = TinyConfig
    description = "a test family: linear classifier + redshift"

    def build(self, config):
        return Tiny(config)

    def schema(self, model):
        return [(f"P_{c}", "float32") for c in CLASSES]

    def columns(self, model, raw, prepared):
        p = torch.softmax(torch.from_numpy(np.asarray(raw[:, :3], np.float32)), 1).numpy()
        best = p.argmax(1)
        zwarn = np.asarray(prepared["zwarn"], np.int64)
        bad = nodata_rows(zwarn)
        low = (p.max(1) < model.config.p_min) & ~bad
        zwarn = zwarn | np.where(low, int(ZWarningMask.LOW_CONFIDENCE), 0)
        cols = {"Z": np.where(bad, np.nan, np.clip(raw[:, 3], 0, 6)), "ZERR": np.full(len(p), np.nan),
                "SPECTYPE": np.where(bad, "", np.array(CLASSES)[best]), "SUBTYPE": np.full(len(p), "")}
        cols.update({f"P_{c}": np.where(bad, np.nan, p[:, k]) for k, c in enumerate(CLASSES)})
        return cols, zwarn

    def labels(self, meta, model=None):
        cls = np.asarray(meta["CLASS"]).astype(str)
        return {"y": np.array([CLASSES.index(c) for c in cls]), "z": np.asarray(meta["Z"], np.float32)}

    def batch(self, model, flux, ivar, labels):
        from redsift.preprocess import normalize_mean_rms

        return torch.from_numpy(normalize_mean_rms(flux, ivar)), [torch.from_numpy(labels["y"]),
                                                                   torch.from_numpy(labels["z"])]

    def loss(self, model, X, targets):
        out = model(X)
        return F.cross_entropy(out[:, :3], targets[0]) + F.mse_loss(out[:, 3], targets[1])

    def eval_step(self, model, X, targets):
        return float(self.loss(model, X, targets)), model(X).cpu().numpy()

    def metrics(self, model, raw, labels):
        return {"accuracy": float(np.mean(raw[:, :3].argmax(1) == labels["y"]))}

    def release(self, model, raw, prepared, meta, **options):
        p = torch.softmax(torch.from_numpy(np.asarray(raw[:, :3], np.float32)), 1).numpy()
        y = np.array([CLASSES.index(c) for c in np.asarray(meta["CLASS"]).astype(str)])
        right = p.argmax(1) == y
        # the lowest threshold above which 90% of the validation rows are right (0.34 if none)
        cands = [t for t in np.round(np.arange(0.34, 1.0, 0.02), 2)
                 if (p.max(1) >= t).any() and right[p.max(1) >= t].mean() >= 0.9]
        p_min = float(cands[0]) if cands else 0.34
        return {"p_min": p_min}, {"p_min": p_min, "accuracy": float(right.mean())}

    def report(self, t, out, header, overrides, truth_path=""):
        acc = np.mean(np.asarray(t["SPECTYPE"]).astype(str) == np.asarray(t["TRUE_CLASS"]).astype(str))
        return ["## tiny", "", f"accuracy {acc:.4f} at p_min = {header.get('P_MIN')}"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    simulate(600, "boss", root / "train", seed=21, block=600, progress=False)
    simulate(200, "boss", root / "val", seed=22, block=200, progress=False)
    return root


def test_tiny_family_goes_through_every_generic_command(sets, tmp_path, capsys, boss_files):
    assert "tiny" in families()
    run = tmp_path / "run"
    assert main(["train", "tiny", "--data", str(sets / "train"), "--val", str(sets / "val"), "-o", str(run),
                 "--epochs", "2", "--batch-size", "64", "--lr", "3e-3", "--set", "hidden=16", "--quiet"]) == 0
    hist = json.loads((run / "history.json").read_text())
    assert len(hist) == 2 and 0 <= hist[-1]["accuracy"] <= 1 and np.isfinite(hist[-1]["loss"])
    assert json.loads((run / "best" / "config.json").read_text())["config"]["hidden"] == 16
    # exact resume through the generic loop: 5 steps, stop, resume to 12 == 12 steps straight
    for name, steps in (("a", [12]), ("b", [5, 12])):
        for k, n in enumerate(steps):
            args = ["train", "tiny", "-o", str(tmp_path / name), "--max-steps", str(n), "--quiet"]
            args += ["--resume"] if k else ["--data", str(sets / "train"), "--val", str(sets / "val"),
                                            "--batch-size", "64", "--epochs", "2"]
            assert main(args) == 0
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)

    rel = tmp_path / "release"
    assert main(["release", str(run / "best"), "--val", str(sets / "val"), "-o", str(rel)]) == 0
    cfg = json.loads((rel / "config.json").read_text())
    assert cfg["config"]["p_min"] == cfg["release"]["p_min"] and cfg["release"]["chosen_on"] == str(sets / "val")

    cat = tmp_path / "cat.fits"
    assert main(["predict", "--model", str(rel), str(sets / "val"), "-o", str(cat), "--quiet"]) == 0
    t = Table.read(cat)
    assert len(t) == 200 and t.colnames[-4:] == ["P_QSO", "P_STAR", "P_GALAXY", "ERROR"]
    assert set(np.asarray(t["SPECTYPE"]).astype(str)) <= set(CLASSES)
    report = tmp_path / "report"
    capsys.readouterr()
    assert main(["evaluate", str(cat), "--truth", str(sets / "val"), "-o", str(report)]) == 0
    text = capsys.readouterr().out
    assert "## Every row" in text and "## tiny" in text and f"p_min = {cfg['config']['p_min']}" in text

    # the Python API and real files: a row each, in order, whatever the family
    out = redsift.predict([*map(str, boss_files[:2]), str(sets / "val")], model=str(rel))
    assert len(out) == 202 and list(out["SOURCE"][:2]) == [str(p) for p in boss_files[:2]]
    assert out.meta["MODEL"].startswith("tiny:") and out.meta["P_MIN"] == cfg["config"]["p_min"]


def test_unknown_family_is_one_line(tmp_path, capsys):
    assert main(["train", "nosuch", "--data", str(tmp_path), "-o", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("redsift: error: unknown model family 'nosuch'; known: ") and "quasarnet" in err
    assert "\n" not in err
