"""``redsift train``, ``redsift predict`` and ``redsift models``."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

#: The default model of ``predict``/``plot``: redsift's own sim-trained QuasarNET once released, else the
#: imported real-data-trained QuasarNET (QuasarNP's qn6_100f).
DEFAULT_MODELS = ("quasarnet-boss-sim", "quasarnet-qn6_100f-quasarnp")
DEFAULT_MODEL = "default"


def resolve_model_name(name: str) -> str:
    if name != DEFAULT_MODEL:
        return name
    from ..models.registry import available_models

    names = {m["name"] for m in available_models()}
    for cand in DEFAULT_MODELS:
        if cand in names:
            return cand
    from ..errors import RedsiftError

    raise RedsiftError("no released model is installed; give --model DIR")


def _command() -> str:
    return "redsift " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def cmd_train(args) -> int:
    from ..errors import RedsiftError
    from ..train.quasarnet import TrainConfig, load_train_config, train_quasarnet

    if args.family != "quasarnet":
        raise RedsiftError(f"unknown model family {args.family!r} (trainable: quasarnet)")
    out = Path(args.output)
    if args.resume:
        cfg = load_train_config(out / "train_config.json")
        if args.epochs is not None:
            cfg.epochs = args.epochs
        cfg.max_steps = args.max_steps
        if args.device:
            cfg.device = args.device
    else:
        base = {}
        if args.config:
            text = Path(args.config).read_text()
            if args.config.endswith((".yaml", ".yml")):
                import yaml

                base = yaml.safe_load(text) or {}
            else:
                base = json.loads(text)
            base = base.get("train", base)
        if args.data is None:
            raise RedsiftError("--data is required (unless --resume)")
        fields = dict(base, data=args.data, out=str(out))
        for key in ("val", "epochs", "seed", "batch_size", "lr", "lr_schedule", "init", "max_steps", "threads", "patience",
                    "checkpoint_every", "device"):
            v = getattr(args, key, None)
            if v is not None:
                fields[key] = v
        cfg = TrainConfig(**fields)
    history = train_quasarnet(cfg, resume=args.resume, progress=not args.quiet)
    if history:
        last = history[-1]
        print(f"after epoch {last['epoch']}: purity {last['purity']:.4f}, completeness {last['completeness']:.4f}, "
              f"dv std {last['dv_std']:.0f} km/s; best model in {out / 'best'}")
    else:
        print(f"stopped at step {cfg.max_steps}; resume with: redsift train quasarnet -o {out} --resume")
    return 0


def cmd_predict(args) -> int:
    from ..io.output import write_catalog
    from ..models import load_model
    from ..predict import catalog_provenance, predict_catalog

    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(resolve_model_name(args.model), device=device)
    cat = predict_catalog(model, args.inputs, progress=not args.quiet)
    write_catalog(cat, args.output, catalog_provenance(model, getattr(model, "source", args.model), _command()),
                  overwrite=args.overwrite)
    nq = int(cat["IS_QSO"].sum())
    bad = int((cat["ZWARN"] & 512 > 0).sum())
    print(f"wrote {args.output}: {len(cat)} spectra, {nq} quasars, {int(cat['IS_BAL'].sum())} BAL, "
          f"{bad} without data (ZWARN NODATA)")
    return 0


def cmd_models(args) -> int:
    from ..models.registry import available_models

    models = available_models()
    if not models:
        print("no released models in this installation (train one: redsift train quasarnet ...)")
    for m in models:
        print(f"{m['name']:28s} {m['family']:10s} {m['description']}")
    return 0


def cmd_evaluate(args) -> int:
    from ..evaluate.report import write_report

    print(write_report(args.catalog, args.truth, args.output, c_th=args.c_th, label=args.label), end="")
    return 0


def cmd_plot(args) -> int:
    from ..errors import RedsiftError
    from ..evaluate.plots import new_axes, plot_prediction
    from ..io.registry import read_file
    from ..models import load_model
    from ..predict import predict_spectra

    spectra = read_file(args.file)
    if not 0 <= args.index < spectra.nspec:
        raise RedsiftError(f"{args.file}: --index {args.index} out of range (the file has {spectra.nspec} spectra)")
    one = spectra[args.index]
    model = load_model(resolve_model_name(args.model))
    row = predict_spectra(model, one)[0]
    fig, ax = new_axes()
    plot_prediction(one, 0, row, ax=ax, lines=model.config.lines)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}: {row['SPECTYPE']} z={row['Z']:.4f} ZWARN={row['ZWARN']}")
    return 0


def cmd_convert(args) -> int:
    from ..models.convert_keras import convert_quasarnet_keras
    from ..models.quasarnet import LINES_QUASARNET

    lines = LINES_QUASARNET
    if args.lines:
        lines = tuple((n, float(w)) for n, w in (item.split(":") for item in args.lines.split(",")))
    bal = None if args.no_bal else tuple((args.bal_line.split(":")[0], float(args.bal_line.split(":")[1])))
    out = convert_quasarnet_keras(args.file, args.output, lines=lines, bal_line=bal, overwrite=args.overwrite)
    from ..models import load_model

    m = load_model(out)
    c = m.config
    print(f"wrote {out}: QuasarNET {c.nconv} conv x {c.filters} filters (k={c.kernel}, stride {c.stride}, "
          f"{c.padding}), FC {c.fc}, {c.nfinders} finders x {c.nboxes} boxes, offset rescale {c.offset_rescale}")
    return 0
