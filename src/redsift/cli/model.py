"""``redsift train``, ``release``, ``predict``, ``evaluate``, ``plot``, ``convert`` and ``models``.

Family choices come from the registry (:func:`redsift.models.families`); nothing here knows a family.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from ..models.family import Family

DEFAULT_MODEL = "default"


def _command() -> str:
    return "redsift " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def parse_options(items) -> dict:
    """``KEY=VALUE`` strings -> dict, values parsed as JSON where they parse (numbers, true/false)."""
    from ..errors import RedsiftError

    out = {}
    for item in items or ():
        if "=" not in item:
            raise RedsiftError(f"--set {item}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def cmd_train(args) -> int:
    from ..errors import RedsiftError
    from ..models import get_family
    from ..train import TrainConfig, load_train_config, train

    fam = get_family(args.family)  # an unknown family: one line listing the registered ones
    if fam.fit is None and type(fam).batch is Family.batch:
        raise RedsiftError(f"model family {fam.name!r} cannot be trained")
    out = Path(args.output)
    if args.resume:
        cfg = load_train_config(out / "train_config.json")
        if cfg.family != args.family:
            raise RedsiftError(f"{out}: a {cfg.family} run, not {args.family}")
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
        fields = dict(base, data=args.data, out=str(out), family=args.family)
        for key in ("val", "epochs", "seed", "batch_size", "lr", "lr_schedule", "warmup_steps", "init", "max_steps", "threads",
                    "patience", "checkpoint_every", "device"):
            v = getattr(args, key, None)
            if v is not None:
                fields[key] = v
        if args.set:
            fields["model"] = dict(fields.get("model", {}), **parse_options(args.set))
        if getattr(args, "ncomp", None) is not None:
            fields["model"] = dict(fields.get("model", {}), ncomp=args.ncomp)
        cfg = TrainConfig(**fields)
    history = train(cfg, resume=args.resume, progress=not args.quiet)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # under torchrun: only rank 0 reports
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank:
            return 0
    if history:
        last = history[-1]
        line = get_family(cfg.family).summary_line(last) if "loss" in last else ""
        print(f"after epoch {last.get('epoch', 1)}: {line}; best model in {out / 'best'}")
    else:
        print(f"stopped at step {cfg.max_steps}; resume with: redsift train {cfg.family} -o {out} --resume")
    return 0


def cmd_release(args) -> int:
    from ..train.release import release

    rec = release(args.model, args.val, args.output, description=args.description, command=_command(),
                  **parse_options(args.set))
    shown = {k: v for k, v in rec.items() if not isinstance(v, (dict, list))}
    print(f"wrote {args.output}: " + ", ".join(f"{k} = {v}" for k, v in shown.items()))
    return 0


def cmd_combine(args) -> int:
    from ..errors import RedsiftError
    from ..models import load_model, resolve_model_name, save_model
    from ..models.combined import carried_settings, combine

    def part(name):
        return load_model(resolve_model_name(name)) if name else None

    base = part(args.base)
    if base is not None and getattr(base, "family", "") != "combined":
        raise RedsiftError(f"combine: --base {args.base} is not a combined model")
    if base is None and not (args.classifier and args.quasarnet):
        raise RedsiftError("combine: --classifier and --quasarnet are required (or --base, a combined model)")
    taken = dict(base.config.sources) if base is not None else {}
    models = {}
    for name in ("classifier", "quasarnet", "eigen", "zrefine"):
        given = part(getattr(args, name, None))
        if given is not None:
            taken.pop(name, None)
        models[name] = given if given is not None else (getattr(base, name, None) if base is not None else None)
    rule = args.rule or (base.config.rule if base is not None else "classifier")
    model = combine(models["classifier"], models["quasarnet"], rule, eigen=models["eigen"],
                    zrefine=models["zrefine"], sources=taken)
    if base is not None:  # the base's own settings carry over (its release decisions do not: release again)
        model.config = carried_settings(base.config, model.config)
    parts = " + ".join(n for n, m in models.items() if m is not None)
    desc = args.description or ("classifier + QuasarNET" + (" + eigen refinement" if models["eigen"] is not None else "")
                                + (" + quasar refinement net" if models["zrefine"] is not None else "") + " (combined)")
    save_model(model, args.output, {"description": desc, "command": _command()})
    print(f"wrote {args.output}: combined model ({parts}{f', from {args.base}' if base is not None else ''}, rule {rule})")
    return 0


def _load(name: str, device: str = "auto"):
    import torch

    from ..models import load_model, resolve_model_name

    device = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    return load_model(resolve_model_name(name), device=device)


def cmd_predict(args) -> int:
    """Exit status 0 when every input was read, :data:`~redsift.predict.EXIT_PARTIAL` (3) when the catalog
    was written but some input could not be (those rows are flagged ``BAD_INPUT``), 1 on an error
    before any work (a missing input, a bad model)."""
    import os

    from ..errors import RedsiftError
    from ..io.output import write_catalog, write_catalog_parts
    from ..predict import EXIT_PARTIAL, catalog_provenance, catalog_summary, predict_catalog, predict_to_file, resolve_inputs
    from ..predict.pipeline import parts_summary

    for path in (args.output, args.redrock):
        if path and os.path.exists(path) and not args.overwrite:
            raise FileExistsError(f"{path}: exists (use --overwrite)")
    resolve_inputs(args.inputs)  # a missing input or an empty glob stops here, before the model loads
    distributed = bool(getattr(args, "workers", None) or getattr(args, "scheduler", None))
    if distributed and args.redrock:
        raise RedsiftError("--redrock is not available with --workers/--scheduler yet")
    model = _load(args.model, args.device)
    metas = [] if args.redrock else None  # the inputs' ids for the Redrock file's FIBERMAP
    fits_out = not args.output.lower().endswith((".parquet", ".csv", ".ecsv"))
    if distributed:
        from ..models import resolve_model_name
        from ..predict.distributed import predict_distributed

        # (to FITS: the shards' paths, written into the output one at a time below; else the merged table)
        cat = predict_distributed(getattr(model, "source", resolve_model_name(args.model)), args.inputs, args.output,
                                  workers=args.workers, scheduler=args.scheduler, files_per_task=args.files_per_task,
                                  rows_per_task=args.rows_per_task, resume=args.resume,
                                  device=str(next(iter([*model.parameters(), *model.buffers()])).device),
                                  progress=not args.quiet, model=model, merge=not fits_out)
    prov = catalog_provenance(model, getattr(model, "source", args.model), _command())
    jobs = max(1, getattr(args, "jobs", 1) or 1)
    if distributed and fits_out:
        write_catalog_parts(cat, args.output, prov, overwrite=args.overwrite)
        summary = parts_summary(cat)
    elif not distributed and not args.redrock and fits_out:
        # a FITS catalog is written as it goes: memory stays flat whatever the number of spectra
        summary = predict_to_file(model, args.inputs, args.output, prov, overwrite=args.overwrite,
                                  progress=not args.quiet, jobs=jobs)
    else:
        if not distributed:
            cat = predict_catalog(model, args.inputs, progress=not args.quiet, input_meta=metas, jobs=jobs)
        write_catalog(cat, args.output, prov, overwrite=args.overwrite)
        if args.redrock:
            from ..io.redrock_format import fibermap_from_meta, write_redrock
            from ..spectra import stack_meta

            fibermap = fibermap_from_meta(stack_meta(metas) if len(metas) > 1 else metas[0])
            write_redrock(cat, args.redrock, fibermap=fibermap, prov=prov, overwrite=args.overwrite)
        summary = catalog_summary(cat["ZWARN"], cat["SPECTYPE"])
    bad, nodata = summary["bad_input"], summary["nodata"]
    kinds = ", ".join(f"{k or 'unmeasured'} {v}" for k, v in sorted(summary["spectype"].items()))
    print(f"wrote {args.output}: {summary['rows']} spectra ({kinds}), {summary['zwarn0']} with ZWARN == 0, "
          f"{nodata} without data (NODATA), {bad} unreadable (BAD_INPUT)")
    if bad:
        print(f"redsift: {bad} input(s) could not be read; their rows are flagged BAD_INPUT (exit {EXIT_PARTIAL})",
              file=sys.stderr)
        return EXIT_PARTIAL
    return 0


def cmd_models(args) -> int:
    from ..models import families
    from ..models.registry import available_models

    print("families:")
    for name, fam in families().items():
        hooks = [h for h in ("fit", "sample", "export") if getattr(fam, h) is not None]
        print(f"  {name:26s} {fam.description}{' (' + ', '.join(hooks) + ')' if hooks else ''}")
    models = available_models()
    print("released models:" if models else "no released models in this installation")
    for m in models:
        print(f"  {m['name']:26s} {m['family']:10s} {m['description']}")
    return 0


def cmd_evaluate(args) -> int:
    from astropy.io import fits

    from ..errors import RedsiftError
    from ..evaluate.report import write_report
    from ..models import families

    try:  # the family that made the catalog: its header's MODEL = FAMILY:NAME
        header = fits.getheader(args.catalog, 1) if args.catalog.lower().endswith((".fits", ".fit", ".fits.gz")) else {}
    except (OSError, IndexError) as exc:
        raise RedsiftError(f"{args.catalog}: cannot read the catalog ({exc})") from None
    fam = families().get(str(header.get("MODEL", "")).split(":")[0])
    print(write_report(args.catalog, args.truth, args.output, family=fam, overrides=parse_options(args.set),
                       label=args.label), end="")
    return 0


def cmd_plot(args) -> int:
    from ..errors import RedsiftError
    from ..evaluate.plots import new_axes
    from ..io.registry import read_file
    from ..models import get_family
    from ..predict import predict_spectra

    spectra = read_file(args.file)
    if not 0 <= args.index < spectra.nspec:
        raise RedsiftError(f"{args.file}: --index {args.index} out of range (the file has {spectra.nspec} spectra)")
    one = spectra[args.index]
    model = _load(args.model, "cpu")
    row = predict_spectra(model, one)[0]
    fig, ax = new_axes()
    get_family(model).plot(model, one, 0, row, ax=ax)
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

