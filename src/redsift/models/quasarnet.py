"""QuasarNET: a 1-D CNN that finds emission lines and derives class and redshift from them.

Busca & Balland (2018), arXiv:1808.09955. Input: a spectrum on a 443-pixel
log-wavelength grid (3600-10000 A, 1e-3 in log10), renormalised by its
ivar-weighted mean and rms (:func:`redsift.preprocess.normalize_mean_rms`).
Body: ``nconv`` 1-D convolutions (``filters`` filters of size ``kernel``,
stride 2), each followed by batch normalisation, ReLU and dropout; a dense
layer of ``fc`` units (linear, batch norm, ReLU — as the stored models have
it; the paper's text says sigmoid). Heads: one *line finder* per line, each
``nboxes`` sigmoid units for the confidence that the line centre lies in each
of ``nboxes`` equal intervals of the spectrum and ``nboxes`` sigmoid units for
the line's offset within its interval (optionally rescaled to
``-0.1 + 1.2 * sigmoid`` so that offsets can reach the box edges, as in later
QuasarNET releases).

Loss (paper eq. 1), per finder: the binary cross-entropy of the box
confidences with full and empty boxes normalised separately (each by its own
count in the batch, so both weigh equally), plus the squared offset error in
the full box. The BAL finder gives weight zero to spectra whose BAL label is
unknown or inconsistent (flagged BAL with BI_CIV = 0, or not flagged with
BI_CIV > 0).

Decision: a spectrum is a quasar when at least ``n_lines`` lines have
confidence above ``c_th``; its redshift comes from the most confident line
(``z_method="best"``, the paper and QuasarNP); it is a BAL quasar when the BAL
finder's confidence exceeds ``c_bal``.

``z_method="weighted"`` (a redsift option, not in the paper) takes instead the
confidence-weighted mean of the redshifts of all lines above ``c_th`` that
agree with the most confident line within ``z_agree`` km/s: the finders'
offsets are measured independently, so averaging the lines that agree reduces
the scatter, while a misidentified line (which disagrees by far more than
``z_agree``) is left out. The per-line redshifts are reported either way.

Redshift error (a redsift addition; QuasarNET has none): ``zerr_table``, when
present, holds the velocity scatter measured on a validation set in cells of
S/N (:func:`redsift.preprocess.snr_median` on the model grid) and of the number of
agreeing lines above ``c_th``; :func:`redshift_error` looks it up, so that
``ZERR = sigma_v (1 + z) / c``. Without a table ``ZERR`` is NaN (never a
constant). See :func:`calibrate_zerr`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..constants import C_KMS, QSO_LINES_QUASARNET, QSO_LINES_VACUUM
from ..errors import RedsiftError
from ..grid import LogGrid
from .family import Family, Prepared, nodata_rows
from .registry import register_family

__all__ = ["QuasarNetConfig", "QuasarNet", "QuasarNetFamily", "make_targets", "quasarnet_loss", "decode",
           "calibrate_zerr", "redshift_error", "LINES_VACUUM", "LINES_QUASARNET"]

#: The default line list: vacuum wavelengths of the Vanden Berk et al. (2001) composite, table 2.
LINES_VACUUM = QSO_LINES_VACUUM
#: QuasarNET's own list (desihub/QuasarNP; H-alpha 6562.8 is an air value): used by imported models.
LINES_QUASARNET = QSO_LINES_QUASARNET


@dataclass(frozen=True)
class QuasarNetConfig:
    """Architecture, grid, line list and decision thresholds of a QuasarNET model (saved with its weights)."""

    grid: dict = field(default_factory=lambda: LogGrid.quasarnet().to_dict())
    lines: tuple = LINES_VACUUM
    bal_line: tuple = ("CIV", 1549.06)
    nboxes: int = 13
    nconv: int = 4
    filters: int = 100
    kernel: int = 10
    stride: int = 2
    padding: str = "valid"  # or "same" (Keras: the odd pixel is padded on the right)
    fc: int = 100
    dropout: float = 0.2
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01  # PyTorch convention (Keras 0.99)
    offset_rescale: bool = True  # offsets = -0.1 + 1.2 sigmoid
    c_th: float = 0.4
    n_lines: int = 1
    c_bal: float = 0.4
    z_method: str = "best"  # "best" (most confident line, as published) or "weighted" (see module docstring)
    z_agree: float = 3000.0  # km/s: lines within this of the best line are averaged by "weighted"
    zerr_table: dict | None = None  # {"snr_edges", "nlines_max", "sigma_kms"}: see calibrate_zerr

    def __post_init__(self):
        if self.z_method not in ("best", "weighted"):
            raise RedsiftError(f"QuasarNetConfig: unknown z_method {self.z_method!r} (best, weighted)")

    @property
    def logrid(self) -> LogGrid:
        return LogGrid.from_dict(self.grid)

    def decisions(self) -> dict:
        """The decision rule behind a catalog's IS_QSO, Z, ZERR and IS_BAL (for its header)."""
        return {"c_th": self.c_th, "n_lines": self.n_lines, "c_bal": self.c_bal, "z_method": self.z_method,
                "zerr": "table" if self.zerr_table else "none"}

    @property
    def nfinders(self) -> int:
        return len(self.lines) + (1 if self.bal_line else 0)


def _same_pad(length: int, kernel: int, stride: int) -> tuple[int, int]:
    out = math.ceil(length / stride)
    total = max((out - 1) * stride + kernel - length, 0)
    return total // 2, total - total // 2


class QuasarNet(nn.Module):
    """QuasarNET (see the module docstring). ``forward(X)`` -> ``(B, nfinders, 2*nboxes)``."""

    family = "quasarnet"

    def __init__(self, config: QuasarNetConfig | None = None):
        super().__init__()
        self.config = c = config or QuasarNetConfig()
        if c.padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', not {c.padding!r}")
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        self._pads = []
        length, cin = c.logrid.npix, 1
        for _ in range(c.nconv):
            self.convs.append(nn.Conv1d(cin, c.filters, c.kernel, stride=c.stride))
            self.bns.append(nn.BatchNorm1d(c.filters, eps=c.bn_eps, momentum=c.bn_momentum))
            if c.padding == "same":
                pad = _same_pad(length, c.kernel, c.stride)
                self._pads.append(pad)
                length = math.ceil(length / c.stride)
            else:
                self._pads.append((0, 0))
                length = (length - c.kernel) // c.stride + 1
            if length <= 0:
                raise ValueError("too many convolutions for the grid length")
            cin = c.filters
        self.flat_length = length
        self.fc = nn.Linear(length * c.filters, c.fc)
        self.fc_bn = nn.BatchNorm1d(c.fc, eps=c.bn_eps, momentum=c.bn_momentum)
        self.box = nn.ModuleList(nn.Linear(c.fc, c.nboxes) for _ in range(c.nfinders))
        self.offset = nn.ModuleList(nn.Linear(c.fc, c.nboxes) for _ in range(c.nfinders))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)  # (B, 1, npix)
        for conv, bn, pad in zip(self.convs, self.bns, self._pads):
            if pad != (0, 0):
                x = F.pad(x, pad)
            x = self._dropout(F.relu(bn(conv(x))))
        # flatten in (length, channels) order, as Keras does, so imported weights map directly
        x = x.transpose(1, 2).flatten(1)
        return F.relu(self.fc_bn(self.fc(x)))

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        """Element-wise dropout (as Keras' Dropout); a uniform-threshold mask is ~3x faster on CPUs
        than ``nn.Dropout``'s Bernoulli sampling, with the same distribution."""
        p = self.config.dropout
        if not self.training or p <= 0:
            return x
        return x * torch.rand_like(x).ge_(p) * (1.0 / (1.0 - p))

    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        """Box confidences and offsets, ``(B, nfinders, 2 * nboxes)``.

        With ``logits=True`` the box part holds pre-sigmoid logits (for the loss).
        """
        h = self.features(x)
        boxes = torch.stack([b(h) for b in self.box], dim=1)
        offs = torch.sigmoid(torch.stack([o(h) for o in self.offset], dim=1))
        if self.config.offset_rescale:
            offs = -0.1 + 1.2 * offs
        return torch.cat([boxes if logits else torch.sigmoid(boxes), offs], dim=2)


class QuasarNetInference(nn.Module):
    """The same function as an eval-mode :class:`QuasarNet`, in the form that exports best to ONNX.

    Batch normalisation is folded into the convolutions, the 1-D convolutions are written as
    ``1 x kernel`` 2-D convolutions (ONNX Runtime's blocked-layout convolution kernels apply to 2-D
    convolutions only) and the 2 x nfinders heads are one matrix product. Built from a model's
    current weights; outputs equal the model's to float32 round-off (tested).
    """

    def __init__(self, model: QuasarNet):
        super().__init__()
        c = model.config
        self.config, self._pads = c, list(model._pads)
        self.convs = nn.ModuleList()
        with torch.no_grad():
            for conv, bn in zip(model.convs, model.bns):
                g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                c2 = nn.Conv2d(conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]),
                               stride=(1, conv.stride[0]))
                c2.weight.copy_((conv.weight * g[:, None, None]).unsqueeze(2))
                c2.bias.copy_((conv.bias - bn.running_mean) * g + bn.bias)
                self.convs.append(c2)
            self.fc = nn.Linear(model.fc.in_features, model.fc.out_features)
            g = model.fc_bn.weight / torch.sqrt(model.fc_bn.running_var + model.fc_bn.eps)
            self.fc.weight.copy_(model.fc.weight * g[:, None])
            self.fc.bias.copy_((model.fc.bias - model.fc_bn.running_mean) * g + model.fc_bn.bias)
            heads = list(model.box) + list(model.offset)
            self.head = nn.Linear(c.fc, c.nboxes * len(heads))
            self.head.weight.copy_(torch.cat([h.weight for h in heads]))
            self.head.bias.copy_(torch.cat([h.bias for h in heads]))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        x = x[:, None, None, :]  # (B, 1, 1, npix)
        for conv, pad in zip(self.convs, self._pads):
            if pad != (0, 0):
                x = F.pad(x, (pad[0], pad[1], 0, 0))
            x = F.relu(conv(x))
        x = x[:, :, 0, :].transpose(1, 2).flatten(1)
        h = F.relu(self.fc(x))
        y = torch.sigmoid(self.head(h)).view(-1, 2, c.nfinders, c.nboxes)
        offs = -0.1 + 1.2 * y[:, 1] if c.offset_rescale else y[:, 1]
        return torch.cat([y[:, 0], offs], dim=2)


def _zerr_cells(snr, n_agree, table):
    snr = np.nan_to_num(np.asarray(snr, float), nan=0.0)  # no data: the lowest S/N cell
    i = np.clip(np.searchsorted(np.asarray(table["snr_edges"], float), snr, side="right") - 1, 0,
                len(table["snr_edges"]) - 2)
    j = np.clip(np.asarray(n_agree, int), 1, int(table["nlines_max"])) - 1
    return i, j


def calibrate_zerr(dv, snr, n_agree, snr_edges=(-np.inf, 2.0, 4.0, 8.0, 16.0, np.inf), nlines_max: int = 4,
                   dv_max: float = 6000.0, min_count: int = 30) -> dict:
    """The ``zerr_table`` of :class:`QuasarNetConfig` from a validation set of true quasars found as such.

    ``sigma_kms[i][j]`` is the standard deviation of ``dv`` (|dv| < dv_max) of the quasars in S/N cell
    ``i`` with ``j + 1`` agreeing lines (``nlines_max`` or more in the last column); a cell with fewer than
    ``min_count`` quasars takes the value of its whole S/N row.
    """
    dv, snr, n_agree = (np.asarray(a, float) for a in (dv, snr, n_agree))
    ok = np.isfinite(dv) & (np.abs(dv) < dv_max)
    table = {"snr_edges": [float(e) for e in snr_edges], "nlines_max": int(nlines_max), "dv_max": float(dv_max)}
    i, j = _zerr_cells(snr, n_agree, table)
    allrow = float(np.std(dv[ok])) if ok.any() else float("nan")
    sig = []
    for a in range(len(snr_edges) - 1):
        row_sel = ok & (i == a)
        row = float(np.std(dv[row_sel])) if row_sel.sum() >= min_count else allrow
        cells = []
        for b in range(nlines_max):
            sel = row_sel & (j == b)
            cells.append(float(np.std(dv[sel])) if sel.sum() >= min_count else row)
        sig.append(cells)
    table["sigma_kms"] = sig
    return table


def redshift_error(z, snr, n_agree, config: QuasarNetConfig) -> np.ndarray:
    """``ZERR`` from the config's ``zerr_table`` (NaN without one)."""
    z = np.asarray(z, float)
    if not config.zerr_table:
        return np.full(z.shape, np.nan)
    i, j = _zerr_cells(snr, n_agree, config.zerr_table)
    sig = np.asarray(config.zerr_table["sigma_kms"], float)[i, j]
    return sig * (1 + z) / C_KMS


def _positions(wave_obs: np.ndarray, grid_wave: np.ndarray, nboxes: int):
    """Box index and offset of observed wavelengths (inverse of :func:`decode`'s mapping)."""
    npix = grid_wave.size
    pix = np.interp(wave_obs, grid_wave, np.arange(npix), left=-1.0, right=np.inf)
    u = pix * nboxes / npix
    inside = (pix >= 0) & (pix <= npix - 1)
    j = np.clip(np.floor(np.where(np.isfinite(u), u, -1.0)).astype(np.int64), 0, nboxes - 1)
    return j, u - j, inside


def make_targets(z, is_qso, bal_flag, bi_civ, config: QuasarNetConfig):
    """Training targets for a batch.

    Returns ``box`` (B, F, nboxes) one-hot targets, ``offset`` (B, F) target
    offsets, ``full`` (B, F) whether a line is present, and ``weight`` (B, F):
    1, except 0 for the BAL finder where the BAL label is unknown
    (``bal_flag < 0``) or inconsistent with ``bi_civ``.
    """
    z = np.asarray(z, float)
    is_qso = np.asarray(is_qso, bool)
    B, nb = z.size, config.nboxes
    wave = config.logrid.wave
    nf = config.nfinders
    box = np.zeros((B, nf, nb), np.float32)
    offset = np.zeros((B, nf), np.float32)
    full = np.zeros((B, nf), bool)
    weight = np.ones((B, nf), np.float32)
    rests = [w for _, w in config.lines] + ([config.bal_line[1]] if config.bal_line else [])
    for f, rest in enumerate(rests):
        j, o, inside = _positions(rest * (1 + z), wave, nb)
        present = is_qso & inside
        if config.bal_line and f == nf - 1:
            bal = np.asarray(bal_flag)
            bi = np.asarray(bi_civ, float)
            present &= bal == 1
            bad = (bal < 0) | ((bal == 1) & ~(bi > 0)) | ((bal == 0) & (bi > 0))
            weight[bad & is_qso, f] = 0.0
        full[:, f] = present
        rows = np.flatnonzero(present)
        box[rows, f, j[rows]] = 1.0
        offset[rows, f] = o[rows]
    return box, offset, full, weight


def quasarnet_loss(out_logits, box, offset, full, weight):
    """Paper eq. 1 summed over finders; tensors from :meth:`QuasarNet.forward` (``logits=True``)
    and :func:`make_targets`. Returns ``(total, per_finder)``."""
    nb = box.shape[-1]
    logits, offs = out_logits[..., :nb], out_logits[..., nb:]
    bce = F.binary_cross_entropy_with_logits(logits, box, reduction="none")  # (B, F, nb)
    w = weight[..., None]
    is_full = box * w
    is_empty = (1 - box) * w
    n_full = is_full.sum(dim=(0, 2)).clamp(min=1)
    n_empty = is_empty.sum(dim=(0, 2)).clamp(min=1)
    l_box = (bce * is_full).sum(dim=(0, 2)) / n_full + (bce * is_empty).sum(dim=(0, 2)) / n_empty
    sel = (offs * box).sum(dim=2)  # the predicted offset in the true box
    fw = full.float() * weight
    l_off = ((sel - offset) ** 2 * fw).sum(dim=0) / fw.sum(dim=0).clamp(min=1)
    per = l_box + l_off
    return per.sum(), per


def decode(raw: np.ndarray, config: QuasarNetConfig) -> dict:
    """Per-line confidences and redshifts, best redshift, class and BAL decision from ``(B, F, 2*nb)``.

    Wavelength of box ``j`` with offset ``o``: ``interp((j + o) * npix / nboxes, arange(npix), wave)``
    (QuasarNP's convention).
    """
    raw = np.asarray(raw, np.float64)
    nb = config.nboxes
    wave = config.logrid.wave
    npix = wave.size
    conf, offs = raw[..., :nb], raw[..., nb:]
    j = conf.argmax(axis=2)
    c = np.take_along_axis(conf, j[..., None], 2)[..., 0]
    o = np.take_along_axis(offs, j[..., None], 2)[..., 0]
    lam = np.interp((j + o) * npix / nb, np.arange(npix), wave)
    rests = np.array([w for _, w in config.lines] + ([config.bal_line[1]] if config.bal_line else []))
    z = lam / rests[None, :] - 1
    nl = len(config.lines)
    c_line, z_line = c[:, :nl], z[:, :nl]
    best = c_line.argmax(axis=1)
    zbest = z_line[np.arange(len(best)), best]
    dv = C_KMS * (z_line - zbest[:, None]) / (1 + zbest[:, None])
    agree = (c_line > config.c_th) & (np.abs(dv) <= config.z_agree)
    if config.z_method == "weighted":
        w = np.where(agree, c_line, 0.0)
        w[np.arange(len(best)), best] = np.maximum(c_line[np.arange(len(best)), best], 1e-12)
        zbest = (w * z_line).sum(axis=1) / w.sum(axis=1)
    is_qso = (c_line > config.c_th).sum(axis=1) >= config.n_lines
    out = {"c_line": c_line, "z_line": z_line, "zbest": zbest, "best_line": best, "is_qso": is_qso,
           "n_agree": agree.sum(axis=1)}
    if config.bal_line:
        out["c_bal"], out["z_bal"] = c[:, nl], z[:, nl]
        out["is_bal"] = is_qso & (c[:, nl] > config.c_bal)
    return out


# --- the family adapter: how the generic predict/train/release/evaluate machinery drives QuasarNET ---------
def _labels(meta) -> dict:
    n = len(meta)
    bal = np.asarray(meta["BAL_FLAG"], np.int64) if "BAL_FLAG" in meta.colnames else np.full(n, -1)
    bi = np.asarray(meta["BI_CIV"], float) if "BI_CIV" in meta.colnames else np.full(n, np.nan)
    return {"CLASS": np.asarray(meta["CLASS"]).astype(str), "Z": np.asarray(meta["Z"], float), "BAL_FLAG": bal,
            "BI_CIV": np.nan_to_num(bi, nan=0.0), "HAS_BI": np.full(n, "BI_CIV" in meta.colnames)}


@register_family
class QuasarNetFamily(Family):
    """QuasarNET line finder (Busca & Balland 2018)."""

    name = "quasarnet"
    config_cls = QuasarNetConfig
    description = "QuasarNET line finder (Busca & Balland 2018)"

    def build(self, config):
        return QuasarNet(config)

    # --- predict ---------------------------------------------------------------------------
    def prepare_gridded(self, model, flux, ivar, zwarn, full: bool = False, meta=None) -> Prepared:
        from ..preprocess import snr_median

        p = super().prepare_gridded(model, flux, ivar, zwarn)
        # S/N on the model grid: needed only by models with a redshift-error table (and by the release)
        p["snr"] = snr_median(flux, ivar) if model.config.zerr_table or full else np.full(len(flux), np.nan)
        return p

    def export(self, model):
        """The module to export to ONNX: :class:`QuasarNetInference` (BN folded, 2-D convolutions)."""
        return QuasarNetInference(model)

    def schema(self, model) -> list[tuple[str, str]]:
        cfg = model.config
        names = [n for n, _ in cfg.lines]
        cols = [("IS_QSO", "bool"), ("IS_BAL", "bool")] + [(f"C_{n}", "float32") for n in names]
        cols += [("C_BAL", "float32")] if cfg.bal_line else []
        cols += [(f"Z_{n}", "float64") for n in names]
        cols += [("Z_BAL", "float64")] if cfg.bal_line else []
        return cols

    def columns(self, model, raw, prepared: Prepared) -> tuple[dict, np.ndarray]:
        """``Z``/``ZERR`` for quasars (NaN and ``NO_REDSHIFT`` otherwise: QuasarNET measures no redshift of
        stars and galaxies), ``SPECTYPE`` QSO/NONQSO, ``SUBTYPE`` BAL, ``LOW_CONFIDENCE`` when the best
        line's confidence lies within a factor e in odds of ``c_th`` (|logit(c) - logit(c_th)| < 1)."""
        from scipy.special import logit

        from ..zwarning import ZWarningMask

        cfg = model.config
        zwarn = np.asarray(prepared["zwarn"], np.int64)
        d = decode(raw, cfg)
        n = len(zwarn)
        nodata = nodata_rows(zwarn)
        is_qso = d["is_qso"] & ~nodata
        is_bal = d.get("is_bal", np.zeros(n, bool)) & ~nodata
        best_c = d["c_line"].max(axis=1) if n else np.zeros(0)
        low = (np.abs(logit(np.clip(best_c, 1e-7, 1 - 1e-7)) - logit(cfg.c_th)) < 1.0) & ~nodata
        zwarn = zwarn | np.where(low, int(ZWarningMask.LOW_CONFIDENCE), 0)
        zwarn = zwarn | np.where(~is_qso & ~nodata, int(ZWarningMask.NO_REDSHIFT), 0)
        cols = {"Z": np.where(is_qso, d["zbest"], np.nan),
                "ZERR": np.where(is_qso, redshift_error(d["zbest"], prepared["snr"], d["n_agree"], cfg), np.nan),
                "SPECTYPE": np.where(is_qso, "QSO", "NONQSO"), "SUBTYPE": np.where(is_bal, "BAL", ""),
                "IS_QSO": is_qso, "IS_BAL": is_bal}
        names = [name for name, _ in cfg.lines]
        for k, name in enumerate(names):
            cols[f"C_{name}"] = np.where(nodata, np.nan, d["c_line"][:, k]).astype(np.float32)
        if cfg.bal_line:
            cols["C_BAL"] = np.where(nodata, np.nan, d["c_bal"]).astype(np.float32)
        for k, name in enumerate(names):
            cols[f"Z_{name}"] = np.where(nodata, np.nan, d["z_line"][:, k])
        if cfg.bal_line:
            cols["Z_BAL"] = np.where(nodata, np.nan, d["z_bal"])
        return cols, zwarn

    def plot(self, model, spectra, i, row, ax=None):
        """Spectrum ``i`` with the per-line detections of its catalog row (paper fig. 2)."""
        from ..evaluate.plots import plot_prediction

        return plot_prediction(spectra, i, row, ax=ax, lines=model.config.lines, c_th=model.config.c_th)

    # --- train -----------------------------------------------------------------------------
    def labels(self, meta, model=None) -> dict:
        return _labels(meta)

    def batch(self, model, flux, ivar, labels):
        from ..preprocess import normalize_mean_rms

        X = torch.from_numpy(normalize_mean_rms(flux, ivar))
        targets = make_targets(labels["Z"], labels["CLASS"] == "QSO", labels["BAL_FLAG"], labels["BI_CIV"],
                               model.config)
        return X, [torch.from_numpy(np.asarray(t, np.float32)) for t in targets]

    def configure_optimizers(self, model, cfg) -> list:
        """Adam with AMSGrad (Busca & Balland 2018), as the base class."""
        return super().configure_optimizers(model, cfg)

    def loss(self, model, X, targets):
        return quasarnet_loss(model(X, logits=True), *targets)[0]

    def eval_step(self, model, X, targets):
        out = model(X, logits=True)
        nb = model.config.nboxes
        raw = torch.cat([torch.sigmoid(out[..., :nb]), out[..., nb:]], 2)
        return float(quasarnet_loss(out, *targets)[0]), raw.cpu().numpy()

    def metrics(self, model, raw, labels) -> dict:
        from ..metrics import bal_metrics, bal_threshold, qso_metrics

        d = decode(raw, model.config)
        cls, z, bal = labels["CLASS"], labels["Z"], labels["BAL_FLAG"]
        bi = labels["BI_CIV"] if labels["HAS_BI"].all() and len(cls) else None
        m = qso_metrics(d["is_qso"], d["zbest"], cls, z)
        m.update(bal_metrics(d["is_bal"], bal, cls == "QSO", z, bi_civ=bi))
        # at c_bal (0.4 untrained) eq. 1's balanced weights make the BAL figures meaningless: also report the
        # paper's operating point (98% / 97%) on this set, as the release will choose it
        th, op = bal_threshold(d["c_bal"], d["is_qso"], bal, cls == "QSO", z, bi_civ=bi, targets=BAL_TARGETS)
        m.update({"bal_threshold_op": th, "bal_completeness_op": op["bal_completeness"],
                  "nonbal_rejection_op": op["nonbal_rejection"]})
        return m

    def summary_line(self, m: dict) -> str:
        return (f"val loss {m['loss']:.4f}  purity {m['purity']:.4f}  completeness {m['completeness']:.4f}  "
                f"dv std {m['dv_std']:.0f} km/s  BAL {m['bal_completeness_op']:.3f}/{m['nonbal_rejection_op']:.3f} "
                f"at {m['bal_threshold_op']}")

    def init_compatible(self, src, model) -> list[str]:
        import dataclasses

        a, b = dataclasses.asdict(src.config), dataclasses.asdict(model.config)
        arch = ("grid", "lines", "bal_line", "nboxes", "nconv", "filters", "kernel", "stride", "padding", "fc",
                "offset_rescale")
        return [k for k in arch if a.get(k) != b.get(k)]

    # --- release ---------------------------------------------------------------------------
    def release(self, model, raw, prepared, meta, keep_c_th: bool = False) -> tuple[dict, dict]:
        """The release decisions, chosen on the VALIDATION set (never on the held-out set):

        * ``z_method``: "weighted" when it gives a smaller std(dv) than "best" (the published rule);
        * ``c_th``: the lowest threshold >= 0.4 at which the validation purity reaches 99.5% (where
          min(purity, completeness) is largest if none does; kept with ``keep_c_th``), one line. The
          lowest such threshold, not the simulated optimum: real spectra give lower confidences;
        * ``c_bal``: the paper's BAL operating point (completeness 98.0%, non-BAL rejection 97.0%): the
          threshold with the largest margin over both, counted on quasars whose BAL flag and BI_CIV agree
          (eq. 1's balanced weights inflate the BAL confidences, so 0.4 is not the operating point);
        * ``zerr_table``: the velocity scatter per cell of S/N x number of agreeing lines
          (:func:`calibrate_zerr`), which makes ``ZERR``.
        """
        import dataclasses

        from ..metrics import bal_threshold, qso_metrics, velocity_difference

        lab = _labels(meta)
        cls, z = lab["CLASS"], lab["Z"]
        bi = meta["BI_CIV"] if "BI_CIV" in meta.colnames else None
        bal = meta["BAL_FLAG"] if "BAL_FLAG" in meta.colnames else np.full(len(meta), -1)
        cfg = model.config
        chosen = {}
        for method in ("best", "weighted"):
            d = decode(raw, dataclasses.replace(cfg, z_method=method))
            chosen[method] = qso_metrics(d["is_qso"], d["zbest"], cls, z)
        z_method = "weighted" if chosen["weighted"]["dv_std"] < chosen["best"]["dv_std"] else "best"
        sweep = {}
        for th in np.round(np.arange(0.3, 0.96, 0.05), 2):
            d = decode(raw, dataclasses.replace(cfg, c_th=float(th), z_method=z_method))
            sweep[float(th)] = qso_metrics(d["is_qso"], d["zbest"], cls, z)
        c_th = cfg.c_th
        if not keep_c_th:
            ok = [th for th in sorted(sweep) if th >= 0.4 - 1e-9 and sweep[th]["purity"] >= 0.995]
            c_th = ok[0] if ok else max(sweep, key=lambda th: min(sweep[th]["purity"], sweep[th]["completeness"]))
        d = decode(raw, dataclasses.replace(cfg, c_th=c_th, z_method=z_method))
        th, met = bal_threshold(d["c_bal"], d["is_qso"], bal, cls == "QSO", z, bi_civ=bi, targets=BAL_TARGETS)
        th_sym, met_sym = bal_threshold(d["c_bal"], d["is_qso"], bal, cls == "QSO", z, bi_civ=bi)
        found = d["is_qso"] & (cls == "QSO")
        snr = np.asarray(prepared["snr"], float)
        zerr_table = calibrate_zerr(velocity_difference(d["zbest"][found], z[found]), snr[found], d["n_agree"][found])

        def num(m):
            return {k: (float(v) if isinstance(v, (float, np.floating)) else int(v)) for k, v in m.items()}

        updates = {"c_bal": th, "c_th": c_th, "z_method": z_method, "zerr_table": zerr_table}
        record = {"c_th": c_th,
                  "c_th_rule": "lowest c_th >= 0.4 with validation purity >= 0.995 (else max min(purity, "
                               "completeness)), 1 line" + (" (kept: --keep-c-th)" if keep_c_th else ""),
                  "c_th_validation": {str(k): {"purity": float(v["purity"]), "completeness": float(v["completeness"])}
                                      for k, v in sweep.items()},
                  "c_bal": th, "c_bal_rule": "max min(BAL completeness - 0.98, non-BAL rejection - 0.97) "
                                             "(the paper's operating point), on flag/BI-consistent quasars",
                  "bal_validation": num(met), "bal_validation_max_min": {"c_bal": th_sym, **num(met_sym)},
                  "z_method": z_method, "z_method_validation": {k: num(v) for k, v in chosen.items()},
                  "zerr": "zerr_table: std of dv of the validation quasars per cell (S/N on the model grid x "
                          "number of agreeing lines)"}
        return updates, record

    # --- evaluate --------------------------------------------------------------------------
    def report(self, t, out, header, overrides, truth_path="") -> list[str]:
        from ..evaluate.quasarnet import quasarnet_report

        return quasarnet_report(t, out, header, overrides, truth_path)


#: The paper's BAL completeness and non-BAL rejection (Busca & Balland 2018, sect. 4.3).
BAL_TARGETS = (0.98, 0.97)

