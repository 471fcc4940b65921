"""``redsift release``: a release directory from a trained model, its decisions chosen on a VALIDATION set.

The family chooses and calibrates its decisions (:meth:`redsift.models.family.Family.release`; for
QuasarNET: ``c_th``, ``c_bal``, ``z_method`` and the ``ZERR`` table) from the model's raw outputs on the
validation set — never on the held-out set the model is judged on. The weights are copied unchanged;
``config.json`` gets the chosen values, a ``release`` record (the rule, the validation figures, the set
they were chosen on) and the command. The directory is built beside the target and renamed onto it
once it loads.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from ..errors import RedsiftError
from ..models import get_family, load_model
from ..models.family import Prepared

__all__ = ["release", "raw_outputs"]

log = logging.getLogger(__name__)


def raw_outputs(model, ds, chunk: int = 4096, full: bool = True) -> tuple[np.ndarray, Prepared]:
    """The model's raw outputs and prepared rows for every row of dataset ``ds``."""
    from ..predict.backend import infer
    from ..predict.pipeline import dataset_batches

    raws, parts = [], []
    for _, p in dataset_batches(model, ds, chunk, full=full):
        raws.append(infer(model, p["X"]))
        parts.append(p)
    if not parts:
        raise RedsiftError(f"{ds.path}: the validation set is empty")
    return np.concatenate(raws), Prepared.concatenate(parts)


def _check_option_names(fam, options: dict):
    """A ``RedsiftError`` naming the options the family's ``release`` does not take, and those it does."""
    import inspect

    params = inspect.signature(fam.release).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    taken = [n for n, p in params.items() if n not in ("model", "raw", "prepared", "meta")
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(taken))
    if unknown:
        raise RedsiftError(f"release: unknown option(s) {', '.join(unknown)} for the {fam.name} family; it takes "
                           f"{', '.join(taken) or 'none'}")


def release(model_dir, val, out, description: str | None = None, command: str = "", **options) -> dict:
    """Make release directory ``out`` from ``model_dir`` with decisions chosen on dataset ``val``.

    ``options`` go to the family's ``release`` (QuasarNET: ``keep_c_th=True`` keeps the config's c_th).
    Returns the release record written into ``config.json``.
    """
    from ..data.store import Dataset
    from ..models.registry import _resolve

    model_dir = _resolve(model_dir)  # (a released model's name, as predict and combine take it, or a directory)
    model = load_model(model_dir)
    fam = get_family(model)
    _check_option_names(fam, options)  # (before the validation set's inference: a misspelt --set fails at once)
    ds = Dataset(val)
    raw, prepared = raw_outputs(model, ds)
    updates, record = fam.release(model, raw, prepared, ds.meta, **options)
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, tmp)
    try:
        cfg = json.loads((tmp / "config.json").read_text())
        cfg["config"].update(updates)
        if description:
            cfg["description"] = description
        cfg["release"] = {"chosen_on": str(val), "n_validation": len(ds), **record}
        if command:
            cfg["release_command"] = command
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
        load_model(tmp)  # the release loads
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("released %s: %s", out, updates)
    return cfg["release"]
