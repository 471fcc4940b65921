"""A quasar redshift refinement net: a prior redshift in, a finer redshift and its error out (the ``zrefine`` family).

Why: above z 1.5 the default's quasar redshifts are the classifier's, whose redshift head resolves about one
pixel of its coarse input grid (5.8e-4 in ln(1 + z), docs/eigen.md "Left open"), and the eigen scan cannot
follow the C IV line that moves against the others (its MAD there is worse). DESI refines QuasarNET's answer
with Redrock in a window around it; this net does the same job as a regression at the instrument's native
resolution.

How: the spectrum on the native BOSS grid (log10 step 1e-4, 69 km/s) is shifted by the whole number of pixels
``k = round(ln(1 + z_prior) / D)`` (``D`` the grid's step in ln wavelength) onto a rest-frame grid of ``nrest``
pixels from ``rest_lo`` A: no interpolation, the input keeps its pixels. A 1-D CNN reads three channels (the
flux over its median |flux|, the noise weight ``sqrt(ivar)`` on the same scale, the mask) and predicts the
remaining offset ``delta`` in pixels and a scale ``b``: ``ln(1 + z) = (k + delta) D``. Loss: the negative log
likelihood of a Laplace distribution, ``|delta_true - delta| / b + ln b`` (its location is the median: the
metric of the issue is a median, and the pulls of quasar redshifts are heavy-tailed). Training priors are the
true redshift moved by a draw from the errors a prior has: ``N(0, prior_sigma_px)`` pixels, or uniform within
``prior_wide_px`` for a fraction ``prior_wide_frac``.

Predict: alone, the prior is the input's ``prior_column`` metadata column (e.g. a Redrock or pipeline catalog
joined to the spectra); in the default (``redsift combine --zrefine``) it is the classifier's answer for quasars
(:mod:`redsift.models.combined`). ``ZERR = zerr_scale * b * D * (1 + z)`` (``b`` the Laplace scale: 68.3% of a
Laplace lies within 1.15 b), the factor per survey chosen at release so that 68.3% of the validation pulls lie
within 1. An answer whose offset lies beyond ``window_px`` from the prior is not a refinement (``Z_FITLIMIT``).
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import RedsiftError
from ..grid import LogGrid
from .family import SURVEYS, Family, Prepared, adamw, nodata_rows, survey_names
from .registry import register_family

__all__ = ["ZRefineConfig", "ZRefineNet", "ZRefineFamily", "refine", "rest_inputs"]


@dataclass(frozen=True)
class ZRefineConfig:
    """Architecture, the prior's training distribution and the decisions of a refinement net."""

    grid: str = "boss"  # a named native grid (LogGrid.named)
    rest_lo: float = 1000.0  # the rest-frame grid starts here (A) ...
    nrest: int = 4800  # ... and has this many pixels of the native step (1000-3020 A on BOSS's)
    channels: tuple = (16, 32, 32, 64, 64, 128, 128)
    kernel: int = 5
    stem_stride: int = 2
    fc: int = 256
    classes: tuple = ("QSO", "BAL")  # the truth classes trained on (CLASS); other rows weigh 0
    zmin: float = 1.0  # ... at or above this redshift
    prior_sigma_px: float = 3.0  # training priors: N(0, sigma) pixels from the truth ...
    prior_wide_px: float = 12.0  # ... or uniform within +-this ...
    prior_wide_frac: float = 0.3  # ... for this fraction
    window_px: float = 16.0  # an offset beyond: not adopted (Z_FITLIMIT)
    grad_clip: float = 2.0
    zerr_scale: dict | None = None  # survey (or "all") -> factor on b D (1 + z), chosen at release

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.nrest < 256 or self.rest_lo <= 0:
            raise RedsiftError(f"ZRefineConfig: nrest {self.nrest} (>= 256) / rest_lo {self.rest_lo} (> 0)")

    @property
    def logrid(self) -> LogGrid:
        return LogGrid.named(self.grid)[0]

    @property
    def step(self) -> float:
        """The grid's step in ln wavelength."""
        return self.logrid.dloglam * math.log(10)

    @property
    def rest_offset(self) -> int:
        """``M0``: rest pixel ``r`` holds observed pixel ``r - M0 + k`` (``k`` the prior's whole shift)."""
        g = self.logrid
        return int(round((g.loglam0 * math.log(10) - math.log(self.rest_lo)) / self.step))

    def decisions(self) -> dict:
        return {"zrefine": f"rest {self.rest_lo:g} A + {self.nrest} px, window {self.window_px:g} px",
                "zerr_zr": "calibrated per survey" if self.zerr_scale else "uncalibrated"}


class ZRefineNet(nn.Module):
    """1-D CNN on the rest-framed spectrum -> (offset in pixels, ln b)."""

    def __init__(self, config: ZRefineConfig | None = None):
        super().__init__()
        self.config = config = config or ZRefineConfig()
        self.family = "zrefine"
        layers, c_in, k = [], 3, config.kernel
        for i, c in enumerate(config.channels):
            if i == 0:
                layers += [nn.Conv1d(c_in, c, 7, stride=config.stem_stride, padding=3)]
            else:
                layers += [nn.Conv1d(c_in, c, k, stride=2, padding=k // 2)]
            layers += [nn.BatchNorm1d(c), nn.ReLU()]
            c_in = c
        layers.append(nn.Flatten())
        self.encoder = nn.Sequential(*layers)
        with torch.no_grad():
            nflat = self.encoder(torch.zeros(1, 3, config.nrest)).shape[1]
        self.head = nn.Sequential(nn.Linear(nflat, config.fc), nn.ReLU(), nn.Linear(config.fc, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x.reshape(len(x), 3, self.config.nrest)))


def rest_inputs(cfg: ZRefineConfig, flux, ivar, t_prior) -> tuple[np.ndarray, np.ndarray]:
    """``(X, k)``: the rest-framed inputs ``(n, 3 * nrest)`` float32 of spectra on the native grid for priors
    ``t_prior = ln(1 + z)``, and the whole shifts ``k`` (pixels)."""
    flux = np.asarray(flux, np.float32)
    ivar = np.asarray(ivar, np.float32)
    n, npix = flux.shape
    k = np.round(np.asarray(t_prior, float) / cfg.step).astype(np.int64)
    i = np.arange(cfg.nrest)[None, :] - cfg.rest_offset + k[:, None]
    inside = (i >= 0) & (i < npix)
    i = np.clip(i, 0, npix - 1)
    f = np.take_along_axis(flux, i, 1)
    iv = np.take_along_axis(ivar, i, 1)
    good = inside & np.isfinite(f) & np.isfinite(iv) & (iv > 0)
    f = np.where(good, f, np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-masked row: its norm is 1
            norm = np.nanmedian(np.abs(f), axis=1)
    norm = np.where(np.isfinite(norm) & (norm > 0), norm, 1.0).astype(np.float32)
    X = np.empty((n, 3, cfg.nrest), np.float32)
    X[:, 0] = np.where(good, f, 0) / norm[:, None]
    X[:, 1] = np.where(good, np.sqrt(np.where(good, iv, 0)), 0) * norm[:, None] / 10
    X[:, 2] = good
    return X.reshape(n, -1), k


def usable_prior(z) -> np.ndarray:
    """Priors the net can start from: finite redshifts above -1 (a sentinel such as -999 is none)."""
    z = np.asarray(z, float)
    return np.isfinite(z) & (z > -1)


def draw_prior_px(cfg: ZRefineConfig, n: int, rng) -> np.ndarray:
    """Training (and validation) prior offsets from the truth, in pixels (see the module docstring)."""
    wide = rng.uniform(size=n) < cfg.prior_wide_frac
    return np.where(wide, rng.uniform(-cfg.prior_wide_px, cfg.prior_wide_px, n), rng.normal(0, cfg.prior_sigma_px, n))


@torch.inference_mode()
def refine(model: ZRefineNet, flux_ivar, z_prior, surveys=None, batch_size: int = 64, calibrated: bool = True) -> dict:
    """The net's answers for spectra ``flux_ivar`` (``(n, 2 npix)``: flux then ivar on the native grid) with
    prior redshifts ``z_prior``: ``z``, ``zerr`` (calibrated with the release's ``zerr_scale``; the net's own
    ``b`` scale with ``calibrated=False``), ``offset`` (pixels from the prior) and ``ok`` (offset within
    ``window_px`` and a usable prior).

    The net always sees ``batch_size`` rows (the last batch padded with zeros, its padding dropped): on the CPU,
    oneDNN builds and caches its convolution primitives per input shape, and the quasars of each prediction
    batch (a different count every time) made a new shape per call: the default's resident memory grew by
    ~20 MB a batch (10,000 spectra: 1.0 -> 1.45 GB, still growing; ``docs/benchmarks.md``). 64 rows a call is
    also ~2.5x faster a row than 512 here (the layers' activations stay in cache)."""
    cfg = model.config
    model.eval()
    fi = np.asarray(flux_ivar, np.float32)
    npix = fi.shape[1] // 2
    z_prior = np.asarray(z_prior, float)
    n = len(z_prior)
    t0 = np.log1p(np.where(usable_prior(z_prior), z_prior, 0.0))
    raw, ks = np.zeros((n, 2)), np.zeros(n, np.int64)
    dev = next(model.parameters()).device
    for s in range(0, n, batch_size):
        X, ks[s:s + batch_size] = rest_inputs(cfg, fi[s:s + batch_size, :npix], fi[s:s + batch_size, npix:],
                                              t0[s:s + batch_size])
        m = len(X)
        if m < batch_size:
            X = np.concatenate([X, np.zeros((batch_size - m,) + X.shape[1:], X.dtype)])
        raw[s:s + m] = model(torch.from_numpy(X).to(dev)).float().cpu().numpy()[:m]
    return decode(cfg, raw, ks, z_prior, surveys, calibrated)


def decode(cfg: ZRefineConfig, raw, k, z_prior, surveys=None, calibrated: bool = True) -> dict:
    """The net's raw rows (offset in pixels, raw ln b) at whole shifts ``k`` for priors ``z_prior``: ``z``,
    ``zerr`` (NaN without a usable prior), ``offset`` (pixels from the prior) and ``ok`` (a usable prior and the
    offset within ``window_px``); the one decoding of :func:`refine` and :meth:`ZRefineFamily.columns`."""
    raw = np.asarray(raw, float).reshape(-1, 2)
    z_prior = np.asarray(z_prior, float)
    usable = usable_prior(z_prior)
    t = (np.asarray(k) + raw[:, 0]) * cfg.step
    z = np.expm1(t)
    scale = zerr_factor(cfg, surveys, len(z)) if calibrated else np.ones(len(z))
    zerr = scale * np.exp(log_b(raw[:, 1])) * cfg.step * (1 + z)
    offset = (t - np.log1p(np.where(usable, z_prior, 0.0))) / cfg.step
    ok = usable & (np.abs(offset) <= cfg.window_px)
    return {"z": np.where(usable, z, np.nan), "zerr": np.where(usable, zerr, np.nan), "offset": offset, "ok": ok}


def log_b(raw_lb):
    """The Laplace scale's log from the head's raw output, softly bounded to (-6, 6): a hard clamp has no gradient
    beyond its bounds (a run whose scale ran away there never came back)."""
    if isinstance(raw_lb, torch.Tensor):
        return 6.0 * torch.tanh(raw_lb / 6.0)
    return 6.0 * np.tanh(np.asarray(raw_lb, float) / 6.0)


def zerr_factor(cfg: ZRefineConfig, surveys, n: int) -> np.ndarray:
    """The release's ``ZERR`` factor of each row (its survey's cell, else ``"all"``, else 1)."""
    table = cfg.zerr_scale or {}
    if surveys is None:
        return np.full(n, float(table.get("all", 1.0)))
    return np.array([float(table.get(str(s), table.get("all", 1.0))) for s in np.asarray(surveys)], float)


@register_family
class ZRefineFamily(Family):
    """Quasar redshift refinement from a prior (see the module docstring)."""

    name = "zrefine"
    config_cls = ZRefineConfig
    description = "quasar redshift refinement net: a prior redshift in, a native-resolution redshift and error out"
    #: the metadata column that holds the prior when the family predicts alone
    prior_column = "Z_PRIOR"

    def build(self, config):
        return ZRefineNet(config)

    def binning(self, model) -> str:
        return "flux_conserving"

    # --- predict ---------------------------------------------------------------------------
    def prepare_gridded(self, model, flux, ivar, zwarn, full: bool = False, meta=None) -> Prepared:
        """The rest-framed inputs at the metadata's ``Z_PRIOR`` (NaN where there is none: ``NO_REDSHIFT``)."""
        from ..preprocess import coverage_zwarn

        n = len(flux)
        cols = () if meta is None else (meta.keys() if isinstance(meta, dict) else meta.colnames)
        # a masked prior (a join without a match) is no prior, whatever value the mask hides
        prior = (np.ma.filled(np.ma.asarray(meta[self.prior_column], float), np.nan) if self.prior_column in cols
                 else np.full(n, np.nan))
        prior = np.where(usable_prior(prior), prior, np.nan)
        X, k = rest_inputs(model.config, flux, ivar, np.log1p(np.where(np.isfinite(prior), prior, 0.0)))
        out = Prepared(X=X, zwarn=np.asarray(zwarn, np.int64) | coverage_zwarn(ivar), k=k, prior=prior,
                       survey=survey_names(meta, SURVEYS, n))
        if full:  # the release refines again at other priors: it needs the native rows
            out["native"] = np.concatenate([np.asarray(flux, np.float32), np.asarray(ivar, np.float32)], 1)
        return out

    def schema(self, model) -> list[tuple[str, str]]:
        return [("Z_PRIOR", "float64"), ("ZR_OFFSET", "float32")]

    def columns(self, model, raw, prepared: Prepared) -> tuple[dict, np.ndarray]:
        from ..zwarning import ZWarningMask

        zwarn = np.asarray(prepared["zwarn"], np.int64)
        prior = np.asarray(prepared["prior"], float)
        d = decode(model.config, raw, prepared["k"], prior, prepared["survey"])
        bad = nodata_rows(zwarn) | ~usable_prior(prior)
        zwarn = zwarn | np.where(~bad & ~d["ok"], int(ZWarningMask.Z_FITLIMIT), 0)  # beyond the window
        n = len(prior)
        return {"Z": np.where(bad, np.nan, d["z"]), "ZERR": np.where(bad, np.nan, d["zerr"]),
                "SPECTYPE": np.where(bad, "", "QSO"), "SUBTYPE": np.full(n, ""), "Z_PRIOR": prior,
                "ZR_OFFSET": np.where(bad, np.nan, d["offset"]).astype(np.float32)}, zwarn

    # --- train -----------------------------------------------------------------------------
    def labels(self, meta, model=None) -> dict:
        """ln(1 + z), the survey and a weight: 1 for rows of ``classes`` at or above ``zmin``, else 0."""
        cfg = model.config if model is not None else ZRefineConfig()
        if "Z" not in meta.colnames or "CLASS" not in meta.colnames:
            raise RedsiftError("zrefine: training needs the truth columns Z and CLASS")
        z = np.asarray(meta["Z"], float)
        cls = np.char.strip(np.asarray(meta["CLASS"]).astype(str))
        w = (np.isin(cls, cfg.classes) & np.isfinite(z) & (z >= cfg.zmin)).astype(np.float32)
        if not w.any():
            raise RedsiftError(f"zrefine: no training rows of {', '.join(cfg.classes)} at z >= {cfg.zmin:g}")
        return {"T": np.log1p(np.where(np.isfinite(z), z, 0.0)), "W": w, "Z": z,
                "SURVEY": survey_names(meta, SURVEYS, len(z))}

    def augment(self, model, flux, ivar, labels, rng):
        """The priors of a training batch, drawn from ``rng`` (labels gain ``PRIOR_PX``)."""
        return flux, ivar, {**labels, "PRIOR_PX": draw_prior_px(model.config, len(flux), rng)}

    def batch(self, model, flux, ivar, labels):
        """Inputs at the batch's priors: the drawn ones (training), else a draw seeded by the batch's redshifts
        (validation: the same priors every epoch)."""
        cfg = model.config
        t = np.asarray(labels["T"], float)
        off = labels.get("PRIOR_PX")
        if off is None:
            off = draw_prior_px(cfg, len(t), np.random.default_rng(zlib.crc32(t.tobytes())))
        X, k = rest_inputs(cfg, flux, ivar, t + off * cfg.step)
        y = (t / cfg.step - k).astype(np.float32)
        return torch.from_numpy(X), [torch.from_numpy(y), torch.from_numpy(np.asarray(labels["W"], np.float32)),
                                     torch.from_numpy(k.astype(np.float32))]

    def configure_optimizers(self, model, cfg) -> list:
        """AdamW, weight decay on weights of rank >= 2 only (nanoGPT's ``configure_optimizers``)."""
        return adamw(model, cfg)

    @staticmethod
    def _loss(out, targets):
        """Laplace negative log likelihood in pixels, weighted (module docstring)."""
        y, w, _ = targets
        lb = log_b(out[:, 1])
        nll = (y - out[:, 0]).abs() * torch.exp(-lb) + lb
        return (nll * w).sum() / w.sum().clamp_min(1.0)

    def loss(self, model, X, targets):
        return self._loss(model(X), targets)

    def eval_step(self, model, X, targets):
        out = model(X)
        raw = torch.cat([out, targets[2][:, None]], 1)  # the shift k rides along for metrics()
        return float(self._loss(out, targets)), raw.detach().cpu().numpy()

    def metrics(self, model, raw, labels) -> dict:
        cfg = model.config
        w = np.asarray(labels["W"]) > 0
        t = (raw[:, 2] + raw[:, 0]) * cfg.step
        z = np.asarray(labels["Z"], float)
        d = np.abs(np.expm1(t) - z) / (1 + z)
        pull = np.abs(t - np.asarray(labels["T"], float)) / (np.exp(log_b(raw[:, 1])) * cfg.step)
        if not w.any():
            return {}
        # within_b: the share within one Laplace scale b (63.2% when b is right; 68.3% lies within 1.15 b)
        return {"mad": float(np.median(d[w])), "gf_1e-3": float(np.mean(d[w] < 1e-3)),
                "cat_0.01": float(np.mean(d[w] > 0.01)), "within_b": float(np.mean(pull[w] < 1.0))}

    def summary_line(self, m: dict) -> str:
        return (f"val loss {m['loss']:.4f}  MAD {m.get('mad', np.nan):.2e}  GF(1e-3) {m.get('gf_1e-3', np.nan):.4f}  "
                f">0.01 {m.get('cat_0.01', np.nan):.4f}  within b {m.get('within_b', np.nan):.3f} (0.632 expected)")

    def init_compatible(self, src, model) -> list[str]:
        a, b = dataclasses.asdict(src.config), dataclasses.asdict(model.config)
        return [k for k in ("grid", "rest_lo", "nrest", "channels", "kernel", "stem_stride", "fc") if a.get(k) != b.get(k)]

    # --- release ---------------------------------------------------------------------------
    def release(self, model, raw, prepared, meta) -> tuple[dict, dict]:
        """``zerr_scale``: per survey (and ``"all"``), the factor that puts 68.3% of the validation pulls
        within 1, on the training rows' classes at the validation set's own ``Z_PRIOR`` when it has one, else
        at priors drawn as in training (seeded: a simulated set; the default's release fits cells of its own at
        the classifier's answers, :meth:`redsift.models.combined.CombinedFamily._fit_classifier_zerr`)."""
        cfg = model.config
        labels = self.labels(meta, model)
        w = labels["W"] > 0
        prior = np.asarray(prepared["prior"], float)
        drawn = ~np.isfinite(prior)
        if drawn.any():  # a simulated validation set: priors drawn as in training
            off = draw_prior_px(cfg, len(prior), np.random.default_rng(12345))
            prior = np.where(drawn, np.expm1(labels["T"] + off * cfg.step), prior)
        n = int(w.sum())
        if n < 50:
            raise RedsiftError(f"zrefine release: {n} validation quasars at z >= {cfg.zmin:g} (50 needed)")
        if "native" not in prepared:
            raise RedsiftError("zrefine release: the prepared rows lack the native spectra")
        r = refine(model, prepared["native"][w], prior[w], labels["SURVEY"][w], calibrated=False)
        pull = np.abs(r["z"] - labels["Z"][w]) / r["zerr"]
        surv = labels["SURVEY"][w]
        table, record = {}, {}
        for key in ("all",) + SURVEYS:
            sel = r["ok"] & (np.ones(len(surv), bool) if key == "all" else surv == key)
            if sel.sum() >= 50:
                table[key] = float(np.quantile(pull[sel], 0.683))
                d = np.abs(r["z"][sel] - labels["Z"][w][sel]) / (1 + labels["Z"][w][sel])
                record[f"zerr_{key}"] = f"n {int(sel.sum())}: scale {table[key]:.3f}, MAD {np.median(d):.2e}"
        return {"zerr_scale": table}, record

