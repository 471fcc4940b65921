"""Shared fixtures. Tests that need ../shared/data skip with a clear message when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("REDSIFT_SHARED_DATA", REPO.parent / "shared" / "data"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set REDSIFT_SHARED_DATA or put shared/ beside the repo)")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _need(DATA)


@pytest.fixture(scope="session")
def real_dir(data_dir) -> Path:
    return _need(data_dir / "real")


@pytest.fixture(scope="session")
def boss_files(real_dir) -> list[Path]:
    return sorted((real_dir / "boss").glob("spec-*.fits"))


@pytest.fixture(scope="session")
def qn_reference(data_dir):
    return np.load(_need(data_dir / "models" / "quasarnet_keras" / "reference.npz"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
