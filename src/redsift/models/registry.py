"""Model registry, factory and safe (pickle-free) loading/saving.

Every model family registers an adapter (:class:`redsift.models.family.Family`: its name, config
dataclass, how to build the model and how the generic machinery drives it). A released model is a
directory with

* ``config.json`` — ``{"model": NAME, "config": {...}, "redsift_version": ..., "command": ...}``
* ``model.safetensors`` — the state dict

:func:`load_model` accepts such a directory, or the name of a model shipped
with redsift (``redsift models`` lists them), builds the module from the
config and loads the tensors with safetensors (never ``pickle``), checking
that every tensor matches in name and shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from ..errors import RedsiftError, oneline

__all__ = ["register_family", "families", "get_family", "create_model", "load_model", "save_model",
           "available_models", "resolve_model_name", "DEFAULT_MODELS", "RELEASED_DIR", "weights_sha256", "config_from_dict"]

#: Released models shipped with the package: ``redsift/models/released/NAME/``.
RELEASED_DIR = Path(__file__).parent / "released"


_FAMILIES: dict = {}


def register_family(cls):
    """Class decorator registering a :class:`~redsift.models.family.Family` adapter under ``cls.name``."""
    if not cls.name or cls.config_cls is None:
        raise RedsiftError(f"{cls.__name__}: a family needs a name and a config_cls")
    _FAMILIES[cls.name] = cls()
    return cls


def _builtin():
    from . import classifier, combined, eigen, quasarnet, zrefine  # noqa: F401  (importing a family module registers it)


def families() -> dict:
    """Registered families by name (built-in ones and any imported since, e.g. a test's)."""
    _builtin()
    return dict(sorted(_FAMILIES.items()))


def get_family(name_or_model):
    """The adapter of a family name or of a model (its ``family`` attribute)."""
    name = name_or_model if isinstance(name_or_model, str) else getattr(name_or_model, "family", "")
    fams = families()
    if name not in fams:
        raise RedsiftError(f"unknown model family {name!r}; known: {', '.join(fams) or 'none'}")
    return fams[name]


def create_model(name: str, config=None, **overrides):
    """A new (untrained) model of family ``name`` with its default config, updated by ``overrides``."""
    fam = get_family(name)
    cfg = config if config is not None else fam.config_cls()
    if isinstance(cfg, dict):
        cfg = config_from_dict(fam.config_cls, cfg)
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    model = fam.build(cfg)
    model.family = fam.name
    return model


def config_from_dict(cls, d: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise RedsiftError(f"{cls.__name__}: unknown config field(s) {', '.join(unknown)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in d:
            v = d[f.name]
            kwargs[f.name] = tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
    return cls(**kwargs)


def weights_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def available_models() -> list[dict]:
    """Released models shipped with the package: name, family, description, path."""
    out = []
    if RELEASED_DIR.is_dir():
        for d in sorted(RELEASED_DIR.iterdir()):
            cfg = d / "config.json"
            if cfg.exists():
                meta = json.loads(cfg.read_text())
                out.append({"name": d.name, "family": meta.get("model", "?"),
                            "description": meta.get("description", ""), "path": str(d)})
    return out


#: The default model of ``predict``: the classifier + QuasarNET combination (issue 18), else redsift's own
#: sim-trained QuasarNET, else the imported real-data-trained QuasarNET (QuasarNP's qn6_100f).
DEFAULT_MODELS = ("redsift-sim", "quasarnet-boss-sim", "quasarnet-qn6_100f-quasarnp")


def resolve_model_name(name: str) -> str:
    """``"default"`` -> the first released model of :data:`DEFAULT_MODELS`; anything else unchanged."""
    if name != "default":
        return name
    names = {m["name"] for m in available_models()}
    for cand in DEFAULT_MODELS:
        if cand in names:
            return cand
    raise RedsiftError("no released model is installed; give a model directory")


def _resolve(name_or_path) -> Path:
    p = Path(os.fspath(name_or_path))
    if p.is_dir():
        return p
    q = RELEASED_DIR / str(name_or_path)
    if q.is_dir():
        return q
    known = ", ".join(m["name"] for m in available_models()) or "none"
    raise RedsiftError(f"{name_or_path}: no such model directory or released model (released: {known})")


def save_model(model, directory, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (atomically, each file renamed into place)."""
    from safetensors.torch import save_file

    from .._version import __version__

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = d / ".model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, d / "model.safetensors")
    meta = {"model": model.family, "config": dataclasses.asdict(model.config), "redsift_version": __version__,
            "weights_sha256": weights_sha256(d / "model.safetensors")}
    meta.update(extra or {})
    tmpc = d / ".config.json.tmp"
    tmpc.write_text(json.dumps(meta, indent=1))
    os.replace(tmpc, d / "config.json")
    return d


def load_model(name_or_path, device="cpu"):
    """Load a released model or a model directory (safetensors; no pickle). Returns the module in eval mode.

    Raises
    ------
    RedsiftError
        One line naming the file and the problem: missing files, a corrupt
        weights file, a config of another model family, or tensors whose names
        or shapes disagree with the config.
    """
    d = _resolve(name_or_path)
    cfg_path, w_path = d / "config.json", d / "model.safetensors"
    for p in (cfg_path, w_path):
        if not p.exists():
            raise RedsiftError(f"{p}: missing (a model directory holds config.json and model.safetensors)")
    try:
        meta = json.loads(cfg_path.read_text())
        family, cfg = meta["model"], meta["config"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RedsiftError(f"{cfg_path}: not a redsift model config ({exc})") from None
    model = create_model(family, cfg)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(w_path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise RedsiftError(f"{w_path}: corrupt or unreadable weights ({oneline(exc, 1000)})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = (f"missing {', '.join(missing[:3])}" if missing else "") + \
               ("; " if missing and unexpected else "") + (f"unexpected {', '.join(unexpected[:3])}" if unexpected else "")
        raise RedsiftError(f"{w_path}: weights do not match the config in config.json ({what})")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise RedsiftError(f"{w_path}: tensor {k} has shape {tuple(state[k].shape)}, the config needs {tuple(v.shape)}")
    model.load_state_dict(state)
    model.source = str(d)
    model.weights_sha256 = meta.get("weights_sha256") or weights_sha256(w_path)
    return model.to(device).eval() if hasattr(model, "to") else model
