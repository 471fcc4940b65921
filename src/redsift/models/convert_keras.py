"""Import QuasarNET models stored as Keras HDF5 files (``redsift convert quasarnet-keras``).

The architecture is read from the file's own ``model_config`` (Keras JSON):
number of convolutions, filters, kernel size, stride, ``valid``/``same``
padding, dense width, number of finders and boxes, batch-norm epsilon, and the
box-offset rescale ``-0.1 + 1.2 * offset`` that the file's ``lambda*`` layers
apply (their stored Python code is never executed or unmarshalled: only their
presence and wiring are read). The line list and grid, which the files do not
store, come from documented defaults (QuasarNET's own line list,
:data:`~redsift.models.quasarnet.LINES_QUASARNET`, and its 443-pixel grid),
overridable. Weights are read with h5py (no TensorFlow) and mapped onto
:class:`~redsift.models.quasarnet.QuasarNet`: convolution kernels
``(k, c_in, c_out)`` -> ``(c_out, c_in, k)``, dense kernels transposed, the
flatten order kept (the model flattens ``(length, channels)`` like Keras).
Batch-norm layers are matched to the layer feeding them in the graph.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import RedsiftError, oneline
from ..grid import LogGrid
from .quasarnet import LINES_QUASARNET, QuasarNet, QuasarNetConfig
from .registry import save_model, weights_sha256

__all__ = ["convert_quasarnet_keras", "read_keras_architecture"]


def _fail(path, msg):
    raise RedsiftError(f"{path}: {msg}")


def _inbound(layer) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    out = []
    for node in nodes:
        for item in node:
            if isinstance(item, list) and item:
                out.append(item[0])
            elif isinstance(item, dict):  # Keras 3 style
                for arg in item.get("args", []):
                    hist = arg.get("config", {}).get("keras_history") if isinstance(arg, dict) else None
                    if hist:
                        out.append(hist[0])
    return out


def read_keras_architecture(path, h5=None) -> tuple[dict, dict]:
    """``(arch, layers_by_name)`` from a QuasarNET Keras file's ``model_config`` (no code executed)."""
    import h5py

    try:
        f = h5 or h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        _fail(path, f"not a readable HDF5 file ({oneline(exc, 1000)})")
    raw = f.attrs.get("model_config")
    if raw is None:
        _fail(path, "no Keras 'model_config' attribute: not a Keras model file")
    try:
        cfg = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        layers = cfg["config"]["layers"]
    except (ValueError, KeyError, TypeError) as exc:
        _fail(path, f"unreadable Keras model_config ({exc})")
    by_name = {lay["config"]["name"]: lay for lay in layers}
    convs = [lay for lay in layers if lay["class_name"] == "Conv1D"]
    boxes = sorted((lay for lay in layers if lay["class_name"] == "Dense" and lay["config"]["name"].startswith("fc_box_")),
                   key=lambda lay: int(lay["config"]["name"].rsplit("_", 1)[1]))
    offsets = sorted((lay for lay in layers if lay["class_name"] == "Dense" and lay["config"]["name"].startswith("fc_offset_")),
                     key=lambda lay: int(lay["config"]["name"].rsplit("_", 1)[1]))
    if not convs or "fc_common" not in by_name or not boxes or len(boxes) != len(offsets):
        _fail(path, "not a QuasarNET Keras model (it needs Conv1D layers, fc_common, and matching fc_box_i/fc_offset_i)")
    for key in ("filters", "kernel_size", "strides", "padding"):
        vals = {json.dumps(c["config"][key]) for c in convs}
        if len(vals) != 1:
            _fail(path, f"convolutions differ in {key} ({', '.join(sorted(vals))}): not expressible as one QuasarNET config")
    c0 = convs[0]["config"]
    bns = [lay for lay in layers if lay["class_name"] == "BatchNormalization"]
    eps = {lay["config"]["epsilon"] for lay in bns}
    if len(eps) > 1:
        _fail(path, f"batch-norm layers differ in epsilon ({sorted(eps)})")
    dropout = [lay["config"]["rate"] for lay in layers if lay["class_name"] == "Dropout"]
    inp = next((lay for lay in layers if lay["class_name"] == "InputLayer"), None)
    shape = (inp or {}).get("config", {}).get("batch_input_shape") or (inp or {}).get("config", {}).get("batch_shape")
    lambdas = [lay for lay in layers if lay["class_name"] == "Lambda"]
    rescaled = {src for lay in lambdas for src in _inbound(lay)}
    if lambdas and rescaled != {o["config"]["name"] for o in offsets}:
        _fail(path, f"lambda layers are wired to {sorted(rescaled)}, not to the offset layers: unknown variant")
    fc_act = [lay for lay in layers if lay["class_name"] == "Activation" and "fc_common" in
              [_src for b in bns if b["config"]["name"] in _inbound(lay) for _src in _inbound(b)]]
    arch = {
        "nconv": len(convs), "filters": int(c0["filters"]), "kernel": int(c0["kernel_size"][0]),
        "stride": int(c0["strides"][0]), "padding": str(c0["padding"]), "fc": int(by_name["fc_common"]["config"]["units"]),
        "nfinders": len(boxes), "nboxes": int(boxes[0]["config"]["units"]),
        "bn_eps": float(eps.pop()) if eps else 1e-3, "dropout": float(dropout[0]) if dropout else 0.0,
        "offset_rescale": bool(lambdas), "npix": int(shape[1]) if shape and len(shape) > 1 and shape[1] else None,
        "fc_activation": fc_act[0]["config"]["activation"] if fc_act else "relu",
    }
    if arch["fc_activation"] != "relu":
        _fail(path, f"dense layer activation {arch['fc_activation']!r} is not supported (QuasarNET uses relu)")
    return arch, by_name


def _weights(f, name):
    g = f["model_weights"]
    if name not in g:
        return {}
    out = {}

    def walk(grp):
        for k in grp.keys():
            if hasattr(grp[k], "shape"):
                out[k.split(":")[0]] = np.asarray(grp[k])
            else:
                walk(grp[k])

    walk(g[name])
    return out


def convert_quasarnet_keras(path, out_dir, lines=LINES_QUASARNET, bal_line=("CIV", 1548.2049),
                            grid: LogGrid | None = None, description: str = "", overwrite: bool = False) -> Path:
    """Convert a QuasarNET Keras HDF5 file to a redsift model directory; returns it.

    Nothing is written unless the whole conversion succeeds.
    """
    import h5py

    path = os.fspath(path)
    grid = grid or LogGrid.quasarnet()
    if not os.path.exists(path):
        _fail(path, "no such file")
    out = Path(out_dir)
    if (out / "model.safetensors").exists() and not overwrite:
        _fail(out, "a model exists there (use --overwrite)")
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        _fail(path, f"not a readable HDF5 file ({oneline(exc, 1000)})")
    with f:
        arch, layers = read_keras_architecture(path, f)
        if "model_weights" not in f:
            _fail(path, "no 'model_weights' group: not a Keras model file with weights")
        if arch["npix"] is not None and arch["npix"] != grid.npix:
            _fail(path, f"the model takes {arch['npix']} input pixels but the grid has {grid.npix}")
        nlines = arch["nfinders"] - (1 if bal_line else 0)
        if nlines != len(lines):
            _fail(path, f"{arch['nfinders']} finders for {len(lines)} lines"
                        f"{' + BAL' if bal_line else ''}: give the model's line list")
        cfg = QuasarNetConfig(grid=grid.to_dict(), lines=tuple(tuple(x) for x in lines),
                              bal_line=tuple(bal_line) if bal_line else (), nboxes=arch["nboxes"],
                              nconv=arch["nconv"], filters=arch["filters"], kernel=arch["kernel"],
                              stride=arch["stride"], padding=arch["padding"], fc=arch["fc"], dropout=arch["dropout"],
                              bn_eps=arch["bn_eps"], offset_rescale=arch["offset_rescale"])
        try:
            model = QuasarNet(cfg)
        except ValueError as exc:
            _fail(path, f"architecture not expressible: {exc}")
        state = model.state_dict()
        new = {}

        def put(key, value, layer):
            value = torch.from_numpy(np.ascontiguousarray(value, np.float32))
            if tuple(value.shape) != tuple(state[key].shape):
                _fail(path, f"layer {layer}: weights of shape {tuple(value.shape)} do not match the config's "
                            f"{tuple(state[key].shape)} for {key}")
            new[key] = value

        def need(name, keys):
            w = _weights(f, name)
            missing = [k for k in keys if k not in w]
            if missing:
                _fail(path, f"layer {name} lacks weights {', '.join(missing)}")
            return w

        convs = [lay["config"]["name"] for lay in layers.values() if lay["class_name"] == "Conv1D"]
        for i, name in enumerate(convs):
            w = need(name, ("kernel", "bias"))
            put(f"convs.{i}.weight", np.transpose(w["kernel"], (2, 1, 0)), name)
            put(f"convs.{i}.bias", w["bias"], name)
        feeds = {}
        for lay in layers.values():
            if lay["class_name"] == "BatchNormalization":
                src = _inbound(lay)
                feeds[src[0] if src else ""] = lay["config"]["name"]
        targets = [(c, f"bns.{i}") for i, c in enumerate(convs)] + [("fc_common", "fc_bn")]
        for src, prefix in targets:
            if src not in feeds:
                _fail(path, f"no batch-norm layer after {src}")
            bn = feeds[src]
            w = need(bn, ("gamma", "beta", "moving_mean", "moving_variance"))
            put(f"{prefix}.weight", w["gamma"], bn)
            put(f"{prefix}.bias", w["beta"], bn)
            put(f"{prefix}.running_mean", w["moving_mean"], bn)
            put(f"{prefix}.running_var", w["moving_variance"], bn)
        w = need("fc_common", ("kernel", "bias"))
        put("fc.weight", w["kernel"].T, "fc_common")
        put("fc.bias", w["bias"], "fc_common")
        for i in range(arch["nfinders"]):
            for kind, prefix in (("box", "box"), ("offset", "offset")):
                name = f"fc_{kind}_{i}"
                w = need(name, ("kernel", "bias"))
                put(f"{prefix}.{i}.weight", w["kernel"].T, name)
                put(f"{prefix}.{i}.bias", w["bias"], name)
    for key, v in state.items():
        if key not in new:
            if key.endswith("num_batches_tracked"):
                new[key] = v
            else:
                _fail(path, f"no weights for {key}")
    model.load_state_dict(new)
    model.eval()
    extra = {"description": description or f"QuasarNET imported from {os.path.basename(path)} (Keras HDF5)",
             "source_file": os.path.basename(path), "source_sha256": weights_sha256(path),
             "converted_by": "redsift convert quasarnet-keras", "licence": "MIT (desihub/QuasarNP); see LICENSE",
             "line_list": "QuasarNET's own (LINES_QUASARNET; H-alpha 6562.8 is an air value)"}
    save_model(model, out, extra)
    return out
