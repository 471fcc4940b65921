"""``redsift`` command line: ``redsift --help``.

Every command is a function ``cmd_NAME(args) -> int`` registered in
:func:`build_parser`. Errors that redsift raises on purpose
(:class:`redsift.errors.RedsiftError`, missing files) are printed as one line
``redsift: error: FILE: cause`` with exit status 1; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .._version import __version__
from ..errors import RedsiftError, oneline

log = logging.getLogger("redsift")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="redsift",
        description="Classify astronomical spectra and measure their redshifts with deep learning "
                    "(SDSS/BOSS/eBOSS, DESI, LAMOST and generic files).")
    p.add_argument("--version", action="version", version=f"redsift {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    from . import data as _data
    from . import demo as _demo
    from . import info as _info
    from . import model as _model

    i = sub.add_parser("info", help="describe spectrum and catalog files",
                       description="For each file: detected format, number of spectra, wavelength range, "
                                   "median S/N and any problem found. Unreadable files are reported and "
                                   "skipped; the exit status is 1 if any file could not be read.")
    i.add_argument("files", nargs="+", metavar="FILE", help="spectrum or catalog files, or directories")
    i.add_argument("--format", help="force a reader (see `redsift formats`)")
    i.add_argument("--json", action="store_true", help="one JSON object per file instead of text")
    i.set_defaults(func=_info.cmd_info)

    f = sub.add_parser("formats", help="list the spectrum formats redsift reads")
    f.set_defaults(func=_info.cmd_formats)

    sm = sub.add_parser("simulate", help="simulate labelled spectra into a dataset",
                        description="Simulate realistic labelled spectra (quasars with forest, DLAs and BALs; "
                                    "stars; galaxies) observed by a survey instrument, and write them as a "
                                    "dataset with their truth. Template mode (--templates or "
                                    "$REDSIFT_TEMPLATES) uses real template spectra; without templates a "
                                    "built-in parametric model is used.")
    sm.add_argument("-n", type=int, required=True, help="number of spectra")
    sm.add_argument("--survey", choices=("boss", "desi", "lamost"), default="boss")
    sm.add_argument("--classes", default="QSO:0.6,STAR:0.25,GALAXY:0.15",
                    help="class mix as CLASS:weight,... (default: BOSS quasar targets QSO:0.6,STAR:0.25,GALAXY:0.15)")
    sm.add_argument("--templates", help="templates directory (default: $REDSIFT_TEMPLATES; none: parametric mode)")
    sm.add_argument("--grid", choices=("quasarnet", "native", "boss", "classifier", "sdss12"), default="quasarnet",
                    help="grid of the stored spectra (default: QuasarNET's, with its binning)")
    sm.add_argument("--star-mix", choices=("boss", "uniform"), default="boss",
                    help="letter classes of the stars: BOSS quasar-target contaminants (default) or each "
                         "class equally often (classifier training)")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("-j", "--jobs", type=int, default=1, help="worker processes (output does not depend on it)")
    sm.add_argument("--workers", type=int, help="run the blocks on a local Dask cluster of N processes (redsift[dist])")
    sm.add_argument("--scheduler", metavar="ADDRESS", help="run the blocks on an existing Dask cluster")
    sm.add_argument("--block", type=int, default=1000, help="spectra per shard")
    sm.add_argument("--append", action="store_true", help="append to an existing dataset")
    sm.add_argument("-o", "--output", required=True, help="dataset directory")
    sm.set_defaults(func=_data.cmd_simulate)

    g = sub.add_parser("ingest", help="build a dataset from a labelled catalog and spectra files",
                       description="Join a catalog (DR12Q superset, DR14Q, DR16Q, spAll, DESI zcatalog/redrock "
                                   "or QSO catalog) to the spectra under a directory laid out as on the "
                                   "archives, put them on the model grid, and write a dataset. Rows without a "
                                   "spectrum, unreadable spectra and duplicates are listed in rejected.csv.")
    g.add_argument("--catalog", required=True)
    g.add_argument("--spectra", required=True, help="directory of spec/spPlate/coadd files (any depth)")
    g.add_argument("-o", "--output", required=True, help="dataset directory")
    g.add_argument("--grid", choices=("quasarnet", "boss"), default="quasarnet",
                   help="quasarnet: QuasarNET's 443-px grid and binning (default); boss: native BOSS grid, "
                        "flux-conserving rebin")
    g.add_argument("-j", "--jobs", type=int, default=1, help="worker processes")
    g.add_argument("--chunk", type=int, default=None,
                   help="catalog rows per shard (about: whole files; default 1000); one chunk is the working set; "
                        "a resumed run takes its own")
    g.add_argument("--resume", action="store_true", help="continue an interrupted ingestion")
    g.add_argument("--workers", type=int, help="read the chunks on a local Dask cluster of N processes (redsift[dist])")
    g.add_argument("--scheduler", metavar="ADDRESS", help="read the chunks on an existing Dask cluster")
    g.set_defaults(func=_data.cmd_ingest)

    ds = sub.add_parser("dataset", help="summarise a dataset")
    ds.add_argument("path")
    ds.set_defaults(func=_data.cmd_dataset)

    tr = sub.add_parser("train", help="train a model on a dataset",
                        description="Train a model family on a dataset; checkpoints every epoch (and every "
                                    "--checkpoint-every steps), resumes exactly with --resume, keeps the best "
                                    "model as RUN_DIR/best/{model.safetensors,config.json}.")
    # the choices are the registry's (checked by cmd_train; `redsift models` lists them): not imported here,
    # so that every other command starts without loading torch
    tr.add_argument("family", metavar="FAMILY", help="model family (see `redsift models`)")
    tr.add_argument("--data", help="training dataset")
    tr.add_argument("--val", help="validation dataset (default: an object-level 5%% split of --data)")
    tr.add_argument("-o", "--output", required=True, help="run directory")
    tr.add_argument("--config", help="YAML/JSON with training fields and a 'model' section of overrides")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a field of the family's model config (repeatable), e.g. --set filters=50")
    tr.add_argument("--ncomp", type=int, help="eigen: eigenspectra per class (the same as --set ncomp=K)")
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--batch-size", dest="batch_size", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--warmup-steps", dest="warmup_steps", type=int,
                    help="linear learning-rate warm-up over this many steps (default 0)")
    tr.add_argument("--lr-schedule", dest="lr_schedule", choices=("constant", "cosine"),
                    help="constant (default) or cosine annealing to lr_min over --epochs")
    tr.add_argument("--init", help="start from the weights of this model directory (fine-tuning)")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--patience", type=int)
    tr.add_argument("--max-steps", dest="max_steps", type=int, help="stop after this many steps (resumable)")
    tr.add_argument("--checkpoint-every", dest="checkpoint_every", type=int)
    tr.add_argument("--threads", type=int, help="torch CPU threads")
    tr.add_argument("--device", help="auto (CUDA when available, default), cpu, cuda, cuda:N")
    tr.add_argument("--resume", action="store_true")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=_model.cmd_train)

    pr = sub.add_parser("predict", help="classify spectra and measure redshifts",
                        description="One catalog row per input spectrum (unreadable files and empty spectra "
                                    "included, flagged in ZWARN; columns in docs/catalog.md). A directory "
                                    "contributes the files a reader recognises (others are logged). Exit "
                                    "status: 0; 3 when the catalog was written but some input could not be "
                                    "read (rows flagged BAD_INPUT); 1 when a named input does not exist, a "
                                    "glob matches nothing, or the model cannot be loaded (nothing written).")
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help="spectrum files, directories or datasets")
    pr.add_argument("--model", default=_model.DEFAULT_MODEL, help="released model name or model directory")
    pr.add_argument("-o", "--output", required=True, help="catalog (.fits, .parquet, .csv)")
    pr.add_argument("--redrock", metavar="FILE",
                    help="also write a Redrock-compatible file (REDSHIFTS with Redrock's columns + FIBERMAP)")
    pr.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    pr.add_argument("-j", "--jobs", type=int, default=1,
                    help="reader processes: files are read and gridded in N processes while this one runs the model")
    pr.add_argument("--workers", type=int, help="run on a local Dask cluster of N worker processes (redsift[dist])")
    pr.add_argument("--scheduler", metavar="ADDRESS",
                    help="run on an existing Dask cluster (tcp://HOST:8786; SLURM/PBS via dask-jobqueue)")
    pr.add_argument("--files-per-task", dest="files_per_task", type=int, default=64,
                    help="files per distributed task (each writes its own shard)")
    pr.add_argument("--rows-per-task", dest="rows_per_task", type=int, default=50_000,
                    help="dataset rows per distributed task (a dataset is cut into row ranges)")
    pr.add_argument("--resume", action="store_true", help="distributed: skip the tasks whose shard is written")
    pr.add_argument("--overwrite", action="store_true")
    pr.add_argument("--quiet", action="store_true")
    pr.set_defaults(func=_model.cmd_predict)

    ev = sub.add_parser("evaluate", help="metrics and plots of a catalog against the truth",
                        description="A generic section for any catalog, then the section of the model family "
                                    "named in the catalog header (QuasarNET: figs. 2-7 of the paper).")
    ev.add_argument("catalog")
    ev.add_argument("--truth", required=True, help="labelled dataset or catalog (joined on TARGETID)")
    ev.add_argument("-o", "--output", required=True, help="report directory")
    ev.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="a decision the family recomputes (QuasarNET: c_th=0.5 recomputes IS_QSO at that "
                         "threshold; default: the catalog's own decisions)")
    ev.add_argument("--label", default="", help="title of the report (e.g. 'simulated held-out set')")
    ev.set_defaults(func=_model.cmd_evaluate)

    rl = sub.add_parser("release", help="make a release directory: decisions chosen on a validation set",
                        description="Copy a trained model (RUN/best) to a release directory whose config holds "
                                    "the decisions its family chooses on the VALIDATION set (QuasarNET: c_th, "
                                    "c_bal, z_method, the ZERR table), with the rule and figures recorded.")
    rl.add_argument("model", help="trained model directory (e.g. runs/RUN/best)")
    rl.add_argument("--val", required=True, help="validation dataset (never the held-out test set)")
    rl.add_argument("-o", "--output", required=True, help="release directory")
    rl.add_argument("--description", help="one line for `redsift models`")
    rl.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="family option (QuasarNET: keep_c_th=true keeps the config's c_th)")
    rl.set_defaults(func=_model.cmd_release)

    cb = sub.add_parser("combine", help="join a classifier and a QuasarNET into one model (the default's form)",
                        description="Write a 'combined' model directory holding a classifier and a QuasarNET "
                                    "(each part's weights copied; one safetensors file). Its catalogs take "
                                    "SPECTYPE/SUBTYPE/Z from the classifier, QuasarNET's line columns, and "
                                    "flag disagreements LOW_CONFIDENCE (docs/classifier.md).")
    cb.add_argument("--base", help="a combined model whose parts are taken (each replaced by the part named "
                                   "below, if any); its release decisions are not: release the result again")
    cb.add_argument("--classifier", help="classifier model (released name or directory; required without --base)")
    cb.add_argument("--quasarnet", help="QuasarNET model (released name or directory; required without --base)")
    cb.add_argument("--eigen", help="eigen model (optional): its chi-square scan refines the classifier's "
                                    "redshift in a window around it (docs/eigen.md)")
    cb.add_argument("--zrefine", help="zrefine model (optional): the quasar refinement net refines the classifier's "
                                      "quasar redshifts above z 1.5 (docs/eigen.md)")
    cb.add_argument("--rule", default=None, choices=("classifier", "qn-z"),
                    help="classifier (default, or --base's): Z from the classifier (refined by --eigen when given); "
                         "qn-z: quasars take QuasarNET's line redshift")
    cb.add_argument("--description", help="one line for `redsift models`")
    cb.add_argument("-o", "--output", required=True, help="model directory")
    cb.set_defaults(func=_model.cmd_combine)

    pl = sub.add_parser("plot", help="plot one spectrum with its prediction")
    pl.add_argument("file")
    pl.add_argument("--index", type=int, default=0, help="row of the spectrum in the file")
    pl.add_argument("--model", default=_model.DEFAULT_MODEL)
    pl.add_argument("-o", "--output", required=True, help="PNG file")
    pl.set_defaults(func=_model.cmd_plot)

    cv = sub.add_parser("convert", help="import a model from another framework",
                        description="quasarnet-keras: a QuasarNET Keras HDF5 file (e.g. QuasarNP's weights) -> a "
                                    "redsift model directory (model.safetensors + config.json). The architecture "
                                    "is read from the file; line list and grid, not stored there, default to "
                                    "QuasarNET's own.")
    cv.add_argument("kind", choices=("quasarnet-keras",))
    cv.add_argument("file")
    cv.add_argument("-o", "--output", required=True, help="model directory")
    cv.add_argument("--lines", help="NAME:WAVE,... (default: QuasarNET's list, LYA 1215.67 ... HALPHA 6562.8)")
    cv.add_argument("--bal-line", dest="bal_line", default="CIV:1548.2049")
    cv.add_argument("--no-bal", dest="no_bal", action="store_true", help="the file has no BAL finder")
    cv.add_argument("--overwrite", action="store_true")
    cv.set_defaults(func=_model.cmd_convert)

    mo = sub.add_parser("models", help="list the released models")
    mo.set_defaults(func=_model.cmd_models)

    d = sub.add_parser("demo", help="run the demo on built-in example spectra",
                       description="Writes example spectra in survey formats, reads them back, and writes "
                                   "an input catalog and a plot into the output directory.")
    d.add_argument("-o", "--output", default="demo_output", help="output directory (default: demo_output)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo.cmd_demo)
    return p


def _configure_logging(verbose: int):
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("redsift: %(levelname)s: %(message)s"))
    root = logging.getLogger("redsift")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv=None) -> int:
    """Entry point of the ``redsift`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    _configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (RedsiftError, FileNotFoundError, FileExistsError, ImportError, ValueError) as exc:
        if args.debug:
            raise
        print(f"redsift: error: {oneline(exc, 1000)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("redsift: interrupted", file=sys.stderr)
        return 130



if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
