"""The family adapter: what a model family tells the generic predict/train/evaluate/release machinery.

A model family is one module under ``redsift/models/`` holding its config dataclass, its module (or
fitted object) and a subclass of :class:`Family` registered with
:func:`redsift.models.registry.register_family`. The generic code never knows more about a family
than these methods; a family overrides what differs from the defaults. The shape follows timm's
registry/factory (``timm/models/_registry.py``, ``_builder.py``) and nanoGPT's
``configure_optimizers``; see ``docs/architecture.md`` for the pipeline and a worked example.

Stages and the methods that serve them:

=================  ==========================================================================
predict            :meth:`prepare` (spectra -> model inputs, per file), :meth:`infer` (inputs ->
                   raw outputs), :meth:`columns` (raw outputs -> catalog columns and ZWARN
                   bits), :meth:`schema` (the family's columns, fixed per model),
                   :meth:`decisions` (the decision rule written into catalog headers)
train              :meth:`labels`, :meth:`batch`, :meth:`configure_optimizers` (a list: a
                   generator/discriminator pair fits), :meth:`training_step`,
                   :meth:`eval_step`, :meth:`metrics`; or the optional hook ``fit`` for
                   models solved rather than trained by gradient descent
release            :meth:`release`: choose and calibrate the decisions on a validation set
evaluate           :meth:`report`: the family's section of ``redsift evaluate``
optional hooks     ``fit(model, data, cfg)``, ``sample(model, n, **conditions)``,
                   ``export(model, path)`` (e.g. ONNX), ``augment(model, flux, ivar, labels,
                   rng)`` (training batches only, ``rng`` seeded by seed/epoch/step; returns
                   ``(flux, ivar)``, or ``(flux, ivar, labels)`` to draw labels per batch, e.g.
                   zrefine's priors) — ``None`` when the family has none
=================  ==========================================================================
"""

from __future__ import annotations

import numpy as np

from ..errors import RedsiftError
from ..zwarning import ZWarningMask

__all__ = ["Family", "Prepared", "SURVEY_ALIASES", "SURVEYS", "survey_names", "cell_values", "adamw", "flux_ivar_rows"]

#: Survey names of the readers -> the surveys models know (inputs, calibration cells).
SURVEY_ALIASES = {"boss": "boss", "sdss": "boss", "eboss": "boss", "desi": "desi", "lamost": "lamost"}
SURVEYS = ("boss", "desi", "lamost")


def survey_names(meta, surveys: tuple = SURVEYS, n: int = 0) -> np.ndarray:
    """Each row's survey among ``surveys`` (``meta["SURVEY"]``, aliases resolved); '' when unknown."""
    cols = () if meta is None else (meta.keys() if isinstance(meta, dict) else meta.colnames)
    if not surveys or "SURVEY" not in cols:
        return np.full(n, "", "U8")
    names = np.array([SURVEY_ALIASES.get(str(v).strip().lower(), "") for v in np.asarray(meta["SURVEY"])], "U8")
    return np.where(np.isin(names, surveys), names, "")


def cell_values(table: dict | None, spectype, surveys, default: float, classes=None) -> np.ndarray:
    """Per row, a release table's value: the most specific cell the table has among the row's class /
    survey (``"WD/boss"``, with ``classes``), class (``"WD"``), spectral type / survey (``"STAR/boss"``)
    and spectral type (``"STAR"``), else ``default``: the lookup of every per-cell decision."""
    spectype = np.asarray(spectype)
    if not table:
        return np.full(len(spectype), default, float)
    n = len(spectype)
    surveys = np.full(n, "") if surveys is None else np.asarray(surveys)
    classes = np.full(n, "") if classes is None else np.asarray(classes)

    def one(c, t, v):
        for key in (f"{c}/{v}", c, f"{t}/{v}", t) if c else (f"{t}/{v}", t):
            if key in table:
                return table[key]
        return default

    # one lookup per distinct (class, type, survey), not per row: a catalog has a few dozen of them
    keys = np.stack([classes.astype(str), spectype.astype(str), surveys.astype(str)], 1).reshape(n, 3)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    return np.array([one(*u) for u in uniq], float).reshape(-1)[inverse.reshape(-1)] if n else np.zeros(0)


class Prepared(dict):
    """Model inputs for a batch of spectra: row-aligned arrays by name, plus ``zwarn`` (int64).

    ``X`` is what :meth:`Family.infer` takes; any other key (e.g. ``snr``) is passed on to
    :meth:`Family.columns`. Prepared batches of one model concatenate row-wise.
    """

    @property
    def nrows(self) -> int:
        return len(self["zwarn"])

    @classmethod
    def concatenate(cls, parts: list["Prepared"]) -> "Prepared":
        out = cls()
        for key in parts[0]:
            out[key] = np.concatenate([p[key] for p in parts])
        return out

    def take(self, rows) -> "Prepared":
        return Prepared({k: v[rows] for k, v in self.items()})


class Family:
    """Base class of a family adapter (see the module docstring).

    Class attributes
    ----------------
    name : str
        The family's registry name (``redsift train NAME``, ``config.json``'s ``"model"``).
    config_cls : type
        Its config dataclass (saved with every artefact).
    description : str
        One line for ``redsift models`` and ``--help``.
    """

    name: str = ""
    config_cls: type = None
    description: str = ""
    #: optional hooks: replaced by callables in families that have them
    fit = None
    sample = None
    export = None
    augment = None  # augment(model, flux, ivar, labels, rng) -> (flux, ivar[, labels]): training batches only

    # --- building ---------------------------------------------------------------------------
    def build(self, config):
        """A new, untrained model of this family from its config."""
        raise NotImplementedError

    # --- predict ----------------------------------------------------------------------------
    def grid(self, model):
        """The model's input grid (a :class:`~redsift.grid.LogGrid`)."""
        return model.config.logrid

    def binning(self, model) -> str:
        """How spectra go onto :meth:`grid` (see :func:`redsift.preprocess.to_grid`)."""
        return getattr(model.config, "binning", "quasarnet")

    def prepare(self, model, spectra) -> Prepared:
        """Model inputs of a batch of spectra (one file's, in predict): grid, then :meth:`prepare_gridded`."""
        from ..preprocess import to_grid

        b = to_grid(spectra, self.grid(model), self.binning(model))
        return self.prepare_gridded(model, b.flux, b.ivar, np.asarray(spectra.column("ZWARN"), np.int64),
                                    meta=spectra.columns)

    def prepare_gridded(self, model, flux, ivar, zwarn, full: bool = False, meta=None) -> Prepared:
        """Model inputs of spectra already on the model grid (datasets; the default normalises as
        QuasarNET, :func:`redsift.preprocess.normalize_mean_rms`, and adds the coverage bits).
        ``full``: also every auxiliary quantity that prediction may skip (the release asks for them).
        ``meta``: the rows' metadata (e.g. ``SURVEY`` for survey-aware models), when known."""
        from ..preprocess import coverage_zwarn, normalize_mean_rms

        return Prepared(X=normalize_mean_rms(flux, ivar), zwarn=np.asarray(zwarn, np.int64) | coverage_zwarn(ivar))

    def infer(self, model, X, batch_size: int = 1024, backend: str = "auto"):
        """Raw outputs for inputs ``X`` (row-aligned; the default runs the torch module in eval mode)."""
        import torch

        model.eval()
        device = next(model.parameters()).device
        out = []
        with torch.inference_mode():
            for s in range(0, len(X), batch_size):
                out.append(model(torch.from_numpy(np.ascontiguousarray(X[s:s + batch_size])).to(device)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0,), np.float32)

    def columns(self, model, raw, prepared: Prepared) -> tuple[dict, np.ndarray]:
        """Catalog columns and ZWARN of a batch: ``({"Z":..., "ZERR":..., "SPECTYPE":..., "SUBTYPE":...,
        <schema columns>}, zwarn)``. Rows without data (``NODATA`` in ``prepared["zwarn"]``) must get
        non-measured values; the generic code adds ``NO_REDSHIFT`` wherever ``Z`` is not finite and
        ZWARN would be 0."""
        raise NotImplementedError

    def schema(self, model) -> list[tuple[str, str]]:
        """``(name, numpy dtype string)`` of the family's own catalog columns, in order (fixed per model)."""
        return []

    def decisions(self, model) -> dict:
        """The decision rule behind the catalog's class and redshift (written into its header)."""
        fn = getattr(model.config, "decisions", None)
        return fn() if callable(fn) else {}

    def plot(self, model, spectra, i: int, row, ax=None):
        """Spectrum ``i`` with what the model found (catalog ``row``); the default marks the quasar lines at Z."""
        from ..evaluate.plots import plot_spectrum

        z = float(row["Z"]) if "Z" in row.colnames else None
        title = f"{row['SPECTYPE']}  z = {z:.4f}  ZWARN = {row['ZWARN']}" if "SPECTYPE" in row.colnames else None
        return plot_spectrum(spectra, i, ax=ax, z=z, title=title)

    # --- train ------------------------------------------------------------------------------
    def labels(self, meta, model=None) -> dict:
        """Training labels of a dataset's metadata: row-aligned arrays by name (``model``: the model being
        trained, whose config may decide them, e.g. a taxonomy). Labels that do not fit the model raise
        before training starts."""
        raise RedsiftError(f"model family {self.name!r} cannot be trained")

    def batch(self, model, flux, ivar, labels: dict):
        """``(X, targets)`` tensors for one training or validation batch on the model grid."""
        raise RedsiftError(f"model family {self.name!r} cannot be trained")

    def configure_optimizers(self, model, cfg) -> list:
        """The optimizers (a list) for train config ``cfg``; the default is one Adam over every parameter
        with ``cfg.lr`` and ``cfg.amsgrad``."""
        import torch

        return [torch.optim.Adam(model.parameters(), lr=cfg.lr, amsgrad=cfg.amsgrad)]

    def loss(self, model, X, targets):
        """The training loss of a batch (a scalar tensor)."""
        raise NotImplementedError

    def training_step(self, model, X, targets, optimizers) -> float:
        """One optimisation step; returns the batch loss. The default: one optimizer, :meth:`loss`, and the
        gradient norm clipped at the config's ``grad_clip`` when it has one (the classifier: an
        overconfident sigma on one spectrum must not throw the class head away)."""
        import torch

        loss = self.loss(model, X, targets)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        clip = getattr(getattr(model, "config", None), "grad_clip", None)
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for opt in optimizers:
            opt.step()
        return float(loss.detach())

    def eval_step(self, model, X, targets):
        """``(loss, raw)`` of a validation batch in eval mode; raw as :meth:`infer` returns it."""
        raise NotImplementedError

    def metrics(self, model, raw, labels: dict) -> dict:
        """Validation metrics of raw outputs against labels (``loss`` is added by the loop)."""
        return {}

    def summary_line(self, metrics: dict) -> str:
        """One line for the end of an epoch."""
        return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))

    def init_compatible(self, src, model) -> list[str]:
        """Config fields in which ``src`` differs from ``model`` so that its weights cannot initialise it."""
        return []

    # --- release ----------------------------------------------------------------------------
    def release(self, model, raw, prepared: Prepared, meta) -> tuple[dict, dict]:
        """Decisions chosen on a validation set: ``(config updates, record)``. The default changes nothing."""
        return {}, {}

    # --- evaluate ---------------------------------------------------------------------------
    def report(self, t, out: str, header: dict, overrides: dict, truth_path: str = "") -> list[str]:
        """The family's section of ``redsift evaluate`` (Markdown lines; may write figures into ``out``).

        ``t`` is the catalog joined to the truth (``TRUE_*`` columns), ``header`` the catalog's header
        (its decision rule), ``overrides`` the user's ``--set KEY=VALUE`` values, ``truth_path`` the truth
        (a dataset's spectra can be drawn)."""
        return []


def flux_ivar_rows(flux, ivar) -> np.ndarray:
    """``(n, 2 npix)`` float32: each spectrum's flux then its ivar on one grid, pixels without a finite flux, a
    finite ivar or a non-negative ivar zeroed in both (the native rows the eigen scan and the refinement net read)."""
    flux = np.asarray(flux, np.float32)
    ivar = np.asarray(ivar, np.float32)
    bad = ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar < 0)
    return np.concatenate([np.where(bad, 0, flux), np.where(bad, 0, ivar)], 1).astype(np.float32)


def adamw(model, cfg, weight_decay: float = 1e-4) -> list:
    """``[AdamW]`` with weight decay on the weights of rank >= 2 only (nanoGPT's ``configure_optimizers``): a
    family's :meth:`Family.configure_optimizers` in one line."""
    import torch

    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return [torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                              lr=cfg.lr, amsgrad=cfg.amsgrad)]


def nodata_rows(zwarn) -> np.ndarray:
    """Rows flagged NODATA (no model output is meaningful there)."""
    return (np.asarray(zwarn, np.int64) & int(ZWarningMask.NODATA)) > 0
