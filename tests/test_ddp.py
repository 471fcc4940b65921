"""torchrun data-parallel training (issue 20): 2 CPU processes (gloo) take the same steps as one process on
the same global batch, their weights agree, only rank 0 writes, and a DDP run resumes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from redsift.simulate import simulate


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    simulate(192, "boss", d / "train", mix={"QSO": 1.0}, seed=5, grid="quasarnet", progress=False, block=192)
    simulate(64, "boss", d / "val", mix={"QSO": 1.0}, seed=6, grid="quasarnet", progress=False, block=64)
    return d


def _args(sets, out, steps):
    # the FC redshift network (no batch norm, no dropout) without augmentation (each rank draws its own): data
    # parallelism is then exact up to round-off
    return ["train", "classifier", "--data", str(sets / "train"), "--val", str(sets / "val"), "-o", str(out),
            "--set", "preset=fcz", "--set", "fc=32", "--set", "augment_coverage=0", "--batch-size", "32",
            "--epochs", "1", "--max-steps", str(steps), "--threads", "1", "--seed", "0", "--quiet"]


def _run(cmd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def test_two_processes_take_the_single_process_steps(sets, tmp_path):
    _run([sys.executable, "-m", "redsift", *_args(sets, tmp_path / "one", 4)])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    r = _run([*torchrun, "-m", "redsift", *_args(sets, tmp_path / "two", 4)])
    a = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4
    for k in a["model"]:
        np.testing.assert_allclose(b["model"][k].numpy(), a["model"][k].numpy(), rtol=1e-4, atol=1e-6, err_msg=k)
    check = json.loads((tmp_path / "two" / "ddp.json").read_text())
    assert check["world_size"] == 2 and check["ranks_agree"]
    assert r.stdout.count("stopped at step") == 1  # only rank 0 reports
    # resume the DDP run to 6 steps: the same weights as 6 uninterrupted single-process steps
    _run([*torchrun, "-m", "redsift", "train", "classifier", "-o", str(tmp_path / "two"), "--resume", "--max-steps", "6",
          "--quiet"])
    _run([sys.executable, "-m", "redsift", *_args(sets, tmp_path / "six", 6)])
    c = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    d = torch.load(tmp_path / "six" / "checkpoint.pt", weights_only=True)
    assert c["global_step"] == 6
    for k in d["model"]:
        np.testing.assert_allclose(c["model"][k].numpy(), d["model"][k].numpy(), rtol=1e-4, atol=1e-6, err_msg=k)
