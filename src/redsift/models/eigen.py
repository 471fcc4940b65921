"""Learned eigenspectra and a chi-square redshift scan (GaSNet-III; Zhong et al. 2024, arXiv 2412.21130).

The ``eigen`` family learns ``ncomp`` rest-frame eigenspectra per class of a taxonomy (the classifier's
files, default ``boss14``) from labelled spectra with known redshifts, then, for every input spectrum,
scans every class over its redshift range and turns flux and noise into a chi-square curve; class and
redshift are the global minimum, as in Redrock (``redrock.zfind``) and GaSNet-III.

Grids. Inputs are on the BOSS/eBOSS native grid (``LogGrid.boss()``: 1e-4 in log10, the SDSS coadd
lattice, so BOSS spectra keep their own pixels; DESI and LAMOST spectra are rebinned onto it, flux
conserving). The templates live on a rest-frame grid with the same step that starts
``log10(1 + z_max)`` below the observed one, so a trial redshift is an integer pixel shift ``s``:
``log10(1 + z) = s * 1e-4`` (69 km/s per step), and observed pixel ``i`` meets rest pixel
``i + s_max - s``.

Learning (:func:`empca`). Each training spectrum is moved to the rest frame (linear interpolation, its
variance propagated), scaled to unit weighted mean flux and given its inverse variance as weight; the
eigenspectra are a weighted low-rank fit ``F ~ C P`` by alternating weighted least squares, the
EM-PCA of Bailey (2012, PASP 124, 1015, section 3: the coefficient step, eq. 6, and the per-pixel
eigenvector step, eq. 8, with the data weights kept), then rotated so components are ordered by the
variance they carry. A rest pixel is usable (``valid``) where at least ``min_rows`` spectra cover it.

Scanning (:func:`scan`). At a trial shift the model is ``sum_k a_k T_k``; the amplitudes minimise
``chi2 = sum_i w_i (f_i - sum_k a_k T_k,i)^2`` (weighted linear least squares), which gives
``chi2(s) = F(s) - b(s)^T M(s)^-1 b(s)`` with ``b_k = sum w f T_k`` and ``M_kl = sum w T_k T_l``
(GaSNet-III eq. 2-4; Redrock ``zscan``). Two stages:

1. **coarse**: flux and weights summed in blocks of ``coarse`` pixels; the template is taken constant
   over a block, for which ``F``, ``b`` and ``M`` are exact block sums, so ``chi2`` is the exact
   chi-square of that piecewise-constant model against the native pixels. All block shifts of a class
   come from ``K + K(K+1)/2 + 2`` cross-correlations done by FFT, batched over spectra; the ``K x K``
   systems are solved by a Cholesky factorisation vectorised over spectra and shifts.
2. **native**: the best ``refine`` minima at distinct redshifts (``dv_exclude`` apart) are rescanned
   pixel by pixel at native resolution, ``fine_halfwidth`` pixels either side of the parabola through
   the coarse minimum; the redshift is the vertex of the parabola through the three lowest native
   points and ``ZERR`` follows from its curvature (``Delta chi2 = 1``), scaled at release so that the
   pulls on a validation set have unit spread.

Partial overlap is handled explicitly: only pixels where the template is ``valid`` enter ``chi2``; a
trial covering fewer than ``min_overlap`` of the spectrum's good pixels is not allowed, and trials are
compared on ``chi2 + (n_good - n_overlap)`` (each pixel left unmodelled counts its expected chi-square,
1), with ``LITTLE_COVERAGE`` set when the best trial leaves pixels out.

Columns follow Redrock: ``Z``, ``ZERR``, ``SPECTYPE``, ``SUBTYPE``, ``CHI2``, ``DELTACHI2`` (to the
best fit at a redshift more than ``dv_exclude`` away, any class: ``redrock.zfind.calc_deltachi2``),
``NPIXELS``, ``COEFF``, ``RCHI2``, plus ``ANOMALY`` (:func:`anomaly_score`). ZWARN: ``SMALL_DELTA_CHI2``
(``DELTACHI2 < dchi2_min``), ``Z_FITLIMIT`` (minimum at the edge of the class's range), ``BAD_MINFIT``,
``LITTLE_COVERAGE``, ``NODATA``, and ``OUT_OF_DISTRIBUTION`` above the anomaly threshold chosen at
release.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import RedsiftError
from ..grid import LogGrid
from ..taxonomy import SPECTYPES, Taxonomy, load_taxonomy
from ..zwarning import ZWarningMask
from .family import SURVEYS, Family, Prepared, cell_values, flux_ivar_rows, nodata_rows, survey_names
from .registry import register_family

__all__ = ["EigenConfig", "EigenModel", "EigenFamily", "empca", "scan", "scan_window", "anomaly_score",
           "anomaly_features", "fit_logistic", "learned_anomaly", "RAW_FIELDS"]

log = logging.getLogger(__name__)

C_KMS = 299792.458
D = 1e-4  # log10 step of the native grid and of the templates
#: the raw output of :func:`scan`, one float row per spectrum, then ``COEFF`` (ncomp values)
RAW_FIELDS = ("cls", "s", "sigma_s", "chi2", "dchi2", "npix", "zwarn", "rchi2", "anomaly", "s_int", "cls2", "s2_int",
              "anom_local", "anom_blend", "snr", "res_lag1", "res_out", "res_peak", "res_trough", "res_tilt")
#: the residual-shape statistics of :func:`residual_shape`, in the order of ``RAW_FIELDS``
RESIDUAL_FIELDS = ("res_lag1", "res_out", "res_peak", "res_trough", "res_tilt")


def _boss14() -> dict:
    return load_taxonomy("boss14").to_dict()


@dataclass(frozen=True)
class EigenConfig:
    """The eigen family's configuration (saved in ``config.json`` with the templates).

    Attributes
    ----------
    taxonomy : dict
        Classes (a taxonomy file's content, or its name with ``--set taxonomy=NAME``).
    ncomp : int
        Eigenspectra per class (GaSNet-III: 10; the K study in ``docs/eigen.md``).
    z_max, z_min : float
        The rest grid reaches every shift between them (classes scan within their own ``zranges``).
    zranges : dict
        Class -> ``[zmin, zmax]`` scanned; set by the fit from the training redshifts (stars: +-``star_dv``).
    coarse, coarse_qso, coarse_ncomp : int
        Pixels per block of the coarse stage (``coarse_qso`` for classes of spectral type QSO, whose lines
        are broad: 16 pixels are 1,100 km/s) and the leading components it fits (0: all).
    refine, fine_halfwidth : int
        Minima refined at native resolution and the native pixels scanned either side.
    min_overlap : float
        Least fraction of a spectrum's good pixels a trial must model.
    f64_snr2 : float
        Spectra with a mean (S/N)^2 per pixel above this take the float64 native stage (float32 below).
    dchi2_min, dv_exclude : float
        ``SMALL_DELTA_CHI2`` below this ``DELTACHI2`` (Redrock: 9); minima closer than ``dv_exclude`` km/s
        are one solution.
    star_dv : float
        Stellar radial velocities scanned, +-km/s.
    em_iter, max_per_class, min_rows, ridge : training (EM-PCA iterations, spectra per class, least
        spectra covering a usable rest pixel, Tikhonov term relative to the mean diagonal).
    learn : str
        How the eigenspectra are learnt: ``"empca"`` (:func:`empca`, every release) or ``"decoder"`` (a linear
        decoder trained by gradient descent, :func:`decoder_fit`; ``dec_epochs``, ``dec_lr``, ``dec_batch``);
        measured against each other in ``docs/eigen.md``.
    zerr_scale, zerr_floor : dict or None
        The calibrated error (:func:`calibrated_zerr`): factor ``k`` on the curvature error and floor ``f``
        (in dz/(1+z), added in quadrature), per spectral type and survey (``"GALAXY/lamost"``), else per
        spectral type (``"GALAXY"``); chosen at release so that 68.3% and 95.4% of each cell's validation
        pulls fall within 1 and 2 (:func:`fit_zerr_cell`).
    zerr_rchi2 : bool
        The curvature error inflated by ``sqrt(max(RCHI2, 1))`` before ``k`` and ``f`` (the fit's own
        evidence of model mismatch; releases since 2026-11-29).
    zerr_by_class : bool
        The release also fits cells per class and class / survey (``"WD/boss"``; looked up first), where
        the validation set has enough rows (:func:`fit_zerr_cells`). Releases made before it have no such
        cells and are unchanged.
    anomaly_threshold : float or None
        ``OUT_OF_DISTRIBUTION`` above this :func:`anomaly_score` (release: ``anomaly_quantile`` of validation).
    anomaly_survey : dict or None
        Per survey (``"lamost"``), the threshold of that survey's validation spectra (each survey's fits
        differ: LAMOST's median score is ~8 where BOSS's is ~5, simulated); other rows take
        ``anomaly_threshold``.
    anomaly_model : dict or None
        The learned anomaly score (:func:`anomaly_features`, :func:`fit_logistic`): a logistic regression
        (standardisation, coefficients, intercept) fitted at release on a validation set with injected
        anomalies (its ``ANOMALY`` column names the kind, "" for normal spectra); ``ANOMALY`` is then its
        log-odds. None: the hand-made :func:`anomaly_score`.
    exclude : tuple
        Classes left without templates (``--set exclude=CV``: the anomaly test's absent class).
    """

    taxonomy: dict = field(default_factory=_boss14)
    ncomp: int = 5
    z_max: float = 6.0
    z_min: float = -0.005
    zranges: dict = field(default_factory=dict)
    coarse: int = 8
    coarse_qso: int = 16
    coarse_ncomp: int = 0
    refine: int = 2
    fine_halfwidth: int = 3
    min_overlap: float = 0.7
    f64_snr2: float = 25.0
    dchi2_min: float = 9.0
    dv_exclude: float = 1000.0
    star_dv: float = 1000.0
    em_iter: int = 25
    max_per_class: int = 3000
    min_rows: int = 10
    ridge: float = 1e-6
    learn: str = "empca"
    dec_epochs: int = 60
    dec_lr: float = 0.02
    dec_batch: int = 256
    zerr_scale: dict | None = None
    zerr_floor: dict | None = None
    zerr_rchi2: bool = False
    zerr_by_class: bool = True
    anomaly_threshold: float | None = None
    anomaly_survey: dict | None = None
    anomaly_quantile: float = 0.99
    anomaly_model: dict | None = None
    exclude: tuple = ()

    def __post_init__(self):
        if isinstance(self.exclude, str):
            object.__setattr__(self, "exclude", tuple(x for x in self.exclude.split(",") if x))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if isinstance(self.taxonomy, (str, Taxonomy)):
            object.__setattr__(self, "taxonomy", load_taxonomy(self.taxonomy).to_dict())
        Taxonomy.from_dict(self.taxonomy)
        if not 1 <= self.ncomp <= 20:
            raise RedsiftError(f"EigenConfig: ncomp must be in 1..20, got {self.ncomp}")
        if self.coarse < 1 or self.refine < 1 or self.fine_halfwidth < 1:
            raise RedsiftError("EigenConfig: coarse, refine and fine_halfwidth must be >= 1")
        if self.learn not in ("empca", "decoder"):
            raise RedsiftError(f"EigenConfig: learn must be 'empca' or 'decoder', got {self.learn!r}")
        if not self.z_min < 0 < self.z_max:
            raise RedsiftError(f"EigenConfig: needs z_min < 0 < z_max, got {self.z_min}, {self.z_max}")

    @property
    def tax(self) -> Taxonomy:
        return Taxonomy.from_dict(self.taxonomy)

    @property
    def logrid(self) -> LogGrid:
        return LogGrid.boss()

    @property
    def s_max(self) -> int:
        return int(math.ceil(math.log10(1 + self.z_max) / D))

    @property
    def s_min(self) -> int:
        return int(math.floor(math.log10(1 + self.z_min) / D))

    @property
    def rest_npix(self) -> int:
        return self.logrid.npix + self.s_max - self.s_min

    @property
    def rest_grid(self) -> LogGrid:
        g = self.logrid
        return LogGrid(g.loglam0 - self.s_max * D, D, self.rest_npix, "center", "eigen-rest")

    def decisions(self) -> dict:
        return {"ncomp": self.ncomp, "taxonomy": self.tax.name, "coarse": self.coarse, "refine": self.refine,
                "dchi2_min": self.dchi2_min, "dv_excl": self.dv_exclude,
                "zerr": ("calibrated per spectype/survey, floor" + (", sqrt(rchi2)" if self.zerr_rchi2 else "")
                         if self.zerr_floor else "calibrated per spectype" if self.zerr_scale else "curvature"),
                "anom_thr": self.anomaly_threshold if self.anomaly_threshold is not None else "none",
                "anomaly": "learned (logistic)" if self.anomaly_model else "hand-made"}


class EigenModel(nn.Module):
    """The eigenspectra (buffers ``templates`` (C, K, R) and ``valid`` (C, R)); no trainable parameters."""

    def __init__(self, config: EigenConfig | None = None):
        super().__init__()
        self.config = config = config or EigenConfig()
        self.family = "eigen"
        c = len(config.tax)
        self.register_buffer("templates", torch.zeros(c, config.ncomp, config.rest_npix))
        self.register_buffer("valid", torch.zeros(c, config.rest_npix))
        self._cache = {}

    def _apply(self, fn, *args, **kwargs):  # moving devices invalidates the cached FFTs
        self._cache = {}
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        self._cache = {}
        return super().load_state_dict(*args, **kwargs)

    # ------------------------------------------------------------------
    def spectype_shifts(self) -> dict:
        """Spectral type -> ``(s_lo, s_hi)``: the union of its classes' :meth:`class_shifts` (the redshifts
        its templates were learnt on)."""
        types = self.config.tax.spectypes
        span = {}
        for k, lo, hi in self.class_shifts():
            a, b = span.get(types[k], (lo, hi))
            span[types[k]] = (min(a, lo), max(b, hi))
        return span

    def class_shifts(self) -> list[tuple[int, int, int]]:
        """``(class index, s_lo, s_hi)`` of every class with templates and a redshift range."""
        cfg = self.config
        out = []
        for k, name in enumerate(cfg.tax.classes):
            zr = cfg.zranges.get(name)
            if zr is None or not bool(self.valid[k].any()):
                continue
            lo = max(cfg.s_min, int(math.floor(math.log10(1 + zr[0]) / D)))
            hi = min(cfg.s_max, int(math.ceil(math.log10(1 + zr[1]) / D)))
            if hi >= lo:
                out.append((k, lo, hi))
        return out


# ----------------------------------------------------------------------------------------------
# learning
# ----------------------------------------------------------------------------------------------
def to_rest(flux, ivar, z, s_max: int, rest_npix: int):
    """Spectra on the native grid moved to the rest grid (linear interpolation; variance propagated).

    Returns ``(F, W)`` of shape ``(n, rest_npix)``, zero weight where the spectrum does not reach."""
    flux = np.asarray(flux, np.float64)
    ivar = np.asarray(ivar, np.float64)
    n, npix = flux.shape
    F = np.zeros((n, rest_npix), np.float32)
    W = np.zeros((n, rest_npix), np.float32)
    j = np.arange(rest_npix)
    for r in range(n):
        x = j - s_max + math.log10(1 + float(z[r])) / D
        i0 = np.floor(x).astype(np.int64)
        ok = (i0 >= 0) & (i0 + 1 < npix)
        i0c = np.clip(i0, 0, npix - 2)
        a = x - i0c
        w0, w1 = ivar[r, i0c], ivar[r, i0c + 1]
        good = ok & (w0 > 0) & (w1 > 0)
        var = np.where(good, (1 - a) ** 2 / np.where(w0 > 0, w0, 1) + a ** 2 / np.where(w1 > 0, w1, 1), 1.0)
        F[r] = np.where(good, (1 - a) * flux[r, i0c] + a * flux[r, i0c + 1], 0)
        W[r] = np.where(good, 1 / var, 0)
    return F, W


def _ridge_solve(M, b, ridge: float):
    """``(M + lam I)^-1 b`` for batched ``M`` (..., K, K) and ``b`` (..., K) in float64, ``lam`` being ``ridge``
    times the mean of each system's diagonal (a Tikhonov term that keeps uncovered pixels finite)."""
    M, b = M.double(), b.double()
    lam = ridge * M.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)[..., None, None]
    eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)
    return torch.linalg.solve(M + lam * eye, b.unsqueeze(-1))[..., 0]


def _codes(P, W, WF, ridge: float):
    """Each spectrum's weighted least-squares coefficients on the rows of ``P`` (k, R): ``(P W_i P^T) c_i = P W_i
    f_i`` (Bailey 2012 eq. 6 with weights), ``W`` the weights (n, R) and ``WF`` their product with the data;
    float64 (n, k)."""
    return _ridge_solve(torch.einsum("kr,nr,lr->nkl", P, W, P), WF @ P.T, ridge)


def empca(F, W, ncomp: int, iters: int = 25, ridge: float = 1e-6, seed: int = 0):
    """Weighted low-rank approximation ``F ~ C P`` (Bailey 2012, PASP 124, 1015: EM-PCA with weights).

    Parameters
    ----------
    F, W : (n, R) arrays
        Data and weights (inverse variances; 0 = missing).
    ncomp : int
        Number of eigenvectors.

    Returns
    -------
    P : (ncomp, R) float32
        Orthonormal eigenvectors ordered by the variance of their coefficients (Bailey eq. 6 and 8
        alternated; the final rotation is the SVD of ``C``).
    C : (n, ncomp) float32
        Coefficients.
    """
    Ft = torch.as_tensor(F, dtype=torch.float32)
    Wt = torch.as_tensor(W, dtype=torch.float32)
    n, R = Ft.shape
    k = min(ncomp, n)
    wsum = Wt.sum(0)
    mean = (Wt * Ft).sum(0) / wsum.clamp_min(1e-30)
    filled = torch.where(Wt > 0, Ft, mean)
    g = torch.Generator().manual_seed(seed)
    # start: the weighted mean and the leading directions of the mean-filled data (svd_lowrank draws from
    # torch's global generator: seeded here inside a fork of it, so the fit is reproducible and the caller's
    # random state is left as it was)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, V = torch.svd_lowrank(filled, q=min(k + 4, n, R), niter=3, M=None)
    P = V[:, :k].T.contiguous()
    P = P + 1e-3 * torch.randn(P.shape, generator=g)
    P = torch.linalg.qr(P.T.double())[0].T.float()
    WF = Wt * Ft

    for _ in range(iters):
        C = _codes(P, Wt, WF, ridge).float()
        # eigenvectors, pixel by pixel: (sum_i w_ir c_i c_i^T) p_r = sum_i w_ir f_ir c_i   (eq. 8); one ridge
        # for every pixel (the mean diagonal over all of them)
        CC = (C[:, :, None] * C[:, None, :]).reshape(n, k * k)
        G = (CC.T @ Wt).T.reshape(R, k, k).double()
        lam = ridge * G.diagonal(dim1=1, dim2=2).mean().clamp_min(1e-30)
        P = _ridge_solve(G + lam * torch.eye(k, dtype=G.dtype), (C.T @ WF).T, 0.0).T
        P = torch.linalg.qr(P.T)[0].T.float()
    return _ordered(P, _codes(P, Wt, WF, ridge), ncomp)


def _ordered(P, C, ncomp: int):
    """Eigenvectors ``P`` (k, R) and coefficients ``C`` (n, k) rotated so the components are ordered by the
    variance their coefficients carry (the SVD of ``C``), padded with zero components to ``ncomp``."""
    n, k = C.shape
    _, _, Vh = torch.linalg.svd(C.double(), full_matrices=False)
    P = (Vh @ P.double()).float()
    C = (C.double() @ Vh.T).float()
    if k < ncomp:
        P = torch.cat([P, torch.zeros(ncomp - k, P.shape[1])])
        C = torch.cat([C, torch.zeros(n, ncomp - k)], 1)
    return P.numpy(), C.numpy()


def decoder_fit(F, W, ncomp: int, epochs: int = 60, lr: float = 0.02, batch: int = 256, ridge: float = 1e-6,
                seed: int = 0, history: list | None = None):
    """Eigenspectra as the weights of a linear decoder trained by gradient descent (GaSNet-III's
    autoencoder-like network, Zhong et al. 2024, arXiv 2412.21130, sect. 3: a linear decoder whose weights are
    the templates), the alternative to :func:`empca` the issue asks to measure.

    The decoder ``P`` (k, R) starts from random orthonormal rows (seeded). Each spectrum's code is the weighted
    least-squares solution given ``P``, ``c_i = (P W_i P^T)^-1 P W_i f_i`` -- the exact encoder, and the fit
    the scan itself makes at every trial redshift -- so the loss is the chi-square the scan sees,
    ``sum_i sum_r w_ir (f_ir - c_i P_r)^2 / sum w`` (the objective of :func:`empca`, reached by another road).
    Adam on minibatches of ``batch`` spectra, the rate ``lr / sqrt(R)`` (the rows' entries are ~1/sqrt(R))
    with a cosine decay over ``epochs``. Returns ``(P, C)`` as :func:`empca` does (orthonormal, ordered by
    variance); ``history`` (a list) receives each epoch's mean training loss."""
    Ft = torch.as_tensor(F, dtype=torch.float32)
    Wt = torch.as_tensor(W, dtype=torch.float32)
    n, R = Ft.shape
    k = min(ncomp, n)
    g = torch.Generator().manual_seed(seed)
    P = nn.Parameter(torch.linalg.qr(torch.randn(R, k, generator=g, dtype=torch.float64))[0].T.float())
    steps_per = max(1, math.ceil(n / batch))
    opt = torch.optim.Adam([P], lr=lr / math.sqrt(R))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per)

    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        tot, wtot = 0.0, 0.0
        for j in range(steps_per):
            b = order[j * batch:(j + 1) * batch]
            f, w = Ft[b], Wt[b]
            c = _codes(P, w, w * f, ridge).float()
            r = f - c @ P
            num = (w * r * r).sum()
            den = w.sum().clamp_min(1e-30)
            loss = num / den
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(num.detach())
            wtot += float(den.detach())
        if history is not None:
            history.append(tot / max(wtot, 1e-30))
    with torch.no_grad():
        Q = torch.linalg.qr(P.detach().T.double())[0].T.float()
    return _ordered(Q, _codes(Q, Wt, Wt * Ft, ridge), ncomp)


# ----------------------------------------------------------------------------------------------
# scanning
# ----------------------------------------------------------------------------------------------
def _nz(mask):
    return torch.nonzero(mask).flatten()


def _pairs(k: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(k) for b in range(a, k)]


def _chol_quad(Mp, b, k: int, ridge: float):
    """``b^T M^-1 b`` for packed symmetric ``M`` (..., k(k+1)/2) and ``b`` (..., k): a Cholesky factorisation
    vectorised over the leading axes (k is small: loops over k, tensors over spectra x shifts)."""
    idx = {p: n for n, p in enumerate(_pairs(k))}
    diag = [Mp[..., idx[(j, j)]] for j in range(k)]
    lam = ridge * sum(diag) / k + 1e-30
    L = {}
    y = []
    quad = torch.zeros_like(b[..., 0])
    for j in range(k):
        s = diag[j] + lam
        for p in range(j):
            s = s - L[(j, p)] ** 2
        dj = torch.sqrt(s.clamp_min(1e-30))
        L[(j, j)] = dj
        for i in range(j + 1, k):
            t = Mp[..., idx[(j, i)]]
            for p in range(j):
                t = t - L[(i, p)] * L[(j, p)]
            L[(i, j)] = t / dj
        yj = b[..., j]
        for p in range(j):
            yj = yj - L[(j, p)] * y[p]
        yj = yj / dj
        y.append(yj)
        quad = quad + yj * yj
    return quad


def _q(cfg, k: int) -> int:
    """Coarse block size of class ``k``."""
    return cfg.coarse_qso if cfg.tax.spectypes[k] == "QSO" else cfg.coarse


def _blocks(D4, q: int):
    """Sums of the data vectors over blocks of ``q`` pixels."""
    B, _, npix = D4.shape
    nb = -(-npix // q)
    if nb * q != npix:  # (BOSS's 4,608 pixels are whole blocks: no padded copy)
        D4 = torch.nn.functional.pad(D4, (0, nb * q - npix))
    return D4.reshape(B, 4, nb, q).sum(3)


def _class_pack(model, k: int):
    """Per-class tensors of the scan (cached on the model): the template products on the native rest grid
    (the native stage) and on blocks of ``coarse`` pixels, first ``coarse_ncomp`` components, with their
    FFTs (the coarse stage)."""
    key = ("pack", k)
    if key in model._cache:
        return model._cache[key]
    cfg = model.config
    q = _q(cfg, k)
    T = model.templates[k].float()
    V = (model.valid[k] > 0).float()
    K = T.shape[0]
    T = T * V
    R = T.shape[1]
    P = torch.cat([T, torch.stack([T[a] * T[b] for a, b in _pairs(K)]), V[None]])
    kc = min(cfg.coarse_ncomp or K, K)
    nb = -(-cfg.logrid.npix // q)
    rb = -(-R // q)
    Vb = torch.nn.functional.pad(V, (0, rb * q - R)).reshape(rb, q).amin(1)
    # the template constant over a block (its block mean); block products are products of the means
    Tb = torch.nn.functional.pad(T[:kc], (0, rb * q - R)).reshape(kc, rb, q).mean(2) * Vb
    Pb = torch.cat([Tb, torch.stack([Tb[a] * Tb[b] for a, b in _pairs(kc)]), Vb[None]])
    pack = {"P": P.contiguous(), "P64": P.double().contiguous(), "Pb": Pb.contiguous(), "K": K, "kc": kc, "nb": nb}
    model._cache[key] = pack
    return pack


def _coarse_fft(model, k: int, u_lo: int, u_hi: int):
    """FFT length and the block templates' FFTs (the correlation products in :func:`_tidx` order) for the
    coarse shifts ``u_lo .. u_hi`` of class ``k``: only the segment those shifts reach,
    ``Pb[:, u_lo : u_hi + nb]``, so the transforms are ``U + nb - 1`` long rather than the whole rest grid's
    (quasars: 800 points rather than 1,120; BALs, whose range is shorter, 560). Cached per range."""
    key = ("fft", k, u_lo, u_hi)
    if key not in model._cache:
        from scipy.fft import next_fast_len

        pk = _class_pack(model, k)
        seg = _segment(pk, u_lo, u_hi)
        L = next_fast_len(seg.shape[1], real=True)
        model._cache[key] = (L, torch.fft.rfft(seg[_tidx(pk["kc"])], n=L))
    return model._cache[key]


def _segment(pk, u_lo: int, u_hi: int):
    """The block templates that the coarse shifts ``u_lo .. u_hi`` meet: ``(nP, U + nb - 1)``."""
    Pb, nb = pk["Pb"], pk["nb"]
    return torch.nn.functional.pad(Pb, (0, max(0, u_hi + nb - Pb.shape[1])))[:, u_lo:u_hi + nb]


#: which data vector each template product meets: b_k <- w f, M_kl <- w, F <- w f^2, n <- [w > 0]
def _kinds(K: int) -> list[int]:
    return [0] * K + [1] * (K * (K + 1) // 2) + [2, 3]


def _tidx(K: int) -> list[int]:
    """The template product of each correlation (the last two both use the validity V)."""
    n = K + K * (K + 1) // 2 + 1
    return list(range(n)) + [n - 1]


def _solve_curve(c, K: int, ntot, cfg):
    """Comparison chi2, chi2 and modelled pixels from the correlations ``c`` (B, nP + 1, S)."""
    npair = K * (K + 1) // 2
    b, Mp, F, n = c[:, :K], c[:, K:K + npair], c[:, -2], c[:, -1]
    chi2 = F - _chol_quad(Mp.movedim(1, -1), b.movedim(1, -1), K, cfg.ridge)
    n = n.round()
    t = ntot[:, None]
    ok = (n >= cfg.min_overlap * t) & (t > 0)
    return torch.where(ok, chi2 + (t - n), torch.full_like(chi2, float("inf"))), chi2, n


def _coarse(model, k: int, lo: int, hi: int, D4, ntot):
    """Coarse-stage comparison chi2 ``(B, U)`` of class ``k`` at shifts ``s_max - coarse * u``.

    ``D4``: the block sums of w f, w, w f^2 and [w > 0], ``(B, 4, nb)`` (:func:`_correlations`)."""
    cfg = model.config
    q = _q(cfg, k)
    u_lo = max(0, -(-(cfg.s_max - hi) // q))
    u_hi = (cfg.s_max - lo) // q
    cmp, _, _ = _solve_curve(_correlations(model, k, u_lo, u_hi, D4), _class_pack(model, k)["kc"], ntot, cfg)
    s = cfg.s_max - q * torch.arange(u_lo, u_hi + 1, device=D4.device)
    return cmp, s


def _correlations(model, k: int, u_lo: int, u_hi: int, D4):
    """``c[b, p, u] = sum_n D4[b, kind(p), n] Pb[p, u_lo + u + n]`` for the coarse shifts ``u_lo .. u_hi`` of
    class ``k`` ``(B, nP + 1, U)``: each template product against the data vector it meets (:func:`_kinds`).
    Short ranges (stars) as one matrix product against the windows of the block templates, long ones by FFT."""
    pk = _class_pack(model, k)
    K, nb = pk["kc"], pk["nb"]
    U = u_hi - u_lo + 1
    if U <= 64:
        kinds = torch.tensor(_kinds(K), device=D4.device)
        H = _segment(pk, u_lo, u_hi).unfold(1, nb, 1)  # (nP, U, nb): window u -> block templates u .. u + nb - 1
        c = torch.einsum("pun,bpn->bpu", H[_tidx(K)], D4[:, kinds])
    else:  # c[u] = sum_n D[n] P[u + n] = irfft(conj(D^) P^)[u], u < U: no wrap-around at L >= U + nb - 1
        L, Phat = _coarse_fft(model, k, u_lo, u_hi)
        Dhat = torch.fft.rfft(D4, n=L).conj()
        prod = torch.empty((D4.shape[0],) + Phat.shape, dtype=Phat.dtype, device=D4.device)
        a = 0
        for kind, n in enumerate((K, K * (K + 1) // 2, 1, 1)):  # each data vector times its products, no gather
            torch.mul(Dhat[:, kind:kind + 1], Phat[None, a:a + n], out=prod[:, a:a + n])
            a += n
        c = torch.fft.irfft(prod, n=L)[:, :, :U]
    return c


def _hankel(D, half: int, dtype=torch.float64):
    """Rows ``H[t, m] = d[m - t]`` of the data vectors ``D`` (B, 4, npix) for ``2 half + 1`` lags: built once
    per batch, shared by every candidate window. Its dtype sets the native stage's precision."""
    S = 2 * half + 1
    L = D.shape[2] + S - 1
    return torch.nn.functional.pad(D.to(dtype), (S - 1, S - 1)).unfold(2, L, 1).flip(2).contiguous()  # (B, 4, S, L)


def _kernel_ok(D) -> bool:
    """Whether the native stage's sums run in the compiled CPU kernel (:mod:`.eigen_kernels`)."""
    from . import eigen_kernels

    return eigen_kernels.AVAILABLE and D.device.type == "cpu"


def _kernel_templates(model):
    """Every class's eigenspectra times their validity ``(nclass, K, R)`` and the validity ``(nclass, R)``,
    float32 numpy (cached on the model), for :func:`redsift.models.eigen_kernels.window_sums`."""
    if "kern" not in model._cache:
        V = (model.valid > 0).float()
        model._cache["kern"] = ((model.templates.float() * V[:, None]).contiguous().cpu().numpy(),
                                V.contiguous().cpu().numpy())
    return model._cache["kern"]


def _native(model, k, s0, half: int, D, ntot, lo, hi, H=None):
    """Native chi2 at shifts ``s0 - half .. s0 + half`` (per spectrum), pixel by pixel.

    ``k``, ``lo``, ``hi``: the class and its shift range, one value or one per row (tensors).
    ``D``: w f, w, w f^2 and [w > 0] on the native grid ``(B, 4, npix)`` (``H``: their :func:`_hankel`).
    Returns ``(cmp, chi2, n, s)`` ``(B, S)``; ``cmp`` is ``inf`` outside the class's range. Each spectrum's
    window of its class's template products is cut once; ``b``, ``M``, ``F`` and ``n`` at every lag are
    three batched matrix products with the data's Hankel rows."""
    cfg = model.config
    B, _, npix = D.shape
    ks = k.tolist() if torch.is_tensor(k) else [int(k)] * B
    packs = {kk: _class_pack(model, kk) for kk in set(ks)}
    K = next(iter(packs.values()))["K"]
    npair = K * (K + 1) // 2
    S = 2 * half + 1
    L = npix + S - 1
    top = (s0 + half).clamp(cfg.s_min + 2 * half, cfg.s_max)  # the window's largest shift
    if H is None and _kernel_ok(D):
        # one spectrum at a time in the core's cache, float64 sums (:mod:`.eigen_kernels`)
        from .eigen_kernels import window_sums

        T, V = _kernel_templates(model)
        c = torch.from_numpy(window_sums(D.contiguous().numpy(), T, V, np.asarray(ks, np.int64),
                                         (cfg.s_max - top).numpy(), S))
    else:
        if H is None:
            H = _hankel(D, half)
        o_lo = (cfg.s_max - top).tolist()
        # precision: chi2 = F - b^T M^-1 b cancels ~(S/N)^2 per pixel (float64 for bright spectra, see scan)
        key = "P64" if H.dtype == torch.float64 else "P"
        seg = torch.stack([packs[kk][key][:, o:o + L] for kk, o in zip(ks, o_lo)]).transpose(1, 2)  # (B, L, nP)
        b = torch.bmm(H[:, 0], seg[:, :, :K])
        M = torch.bmm(H[:, 1], seg[:, :, K:K + npair])
        Fn = torch.bmm(H[:, 2:4].reshape(B, 2 * S, L), seg[:, :, -1:]).reshape(B, 2, S)
        c = torch.cat([b.transpose(1, 2), M.transpose(1, 2), Fn], 1).flip(-1)  # (B, nP + 1, S), increasing shift
    s = (top - 2 * half)[:, None] + torch.arange(S, device=D.device)[None]
    cmp, chi2, n = _solve_curve(c, K, ntot.to(c.dtype), cfg)
    lo = lo[:, None] if torch.is_tensor(lo) else lo
    hi = hi[:, None] if torch.is_tensor(hi) else hi
    inside = (s >= lo) & (s <= hi)
    return torch.where(inside, cmp, torch.full_like(cmp, float("inf"))), chi2, n, s


def _windows(model, ks, s_int, npix: int):
    """Each row's template window ``(B, K, npix)`` (class ``ks[i]`` at integer shift ``s_int[i]``) and the
    templates' coverage ``(B, npix)``, cut from the class packs (slices, not a gather: faster on the CPU)."""
    o = _offsets(model, s_int).tolist()
    k = ks.clamp_min(0).tolist()
    K = model.config.ncomp
    if not o:
        return torch.zeros((0, K, npix), device=s_int.device), torch.zeros((0, npix), dtype=torch.bool,
                                                                          device=s_int.device)
    P = [_class_pack(model, a)["P"] for a in k]  # rows: T_k V, ..., V last
    return (torch.stack([p[:K, b:b + npix] for p, b in zip(P, o)]),
            torch.stack([p[-1, b:b + npix] > 0 for p, b in zip(P, o)]))


def _lstsq(Tw, w, f, ridge: float):
    """Weighted least-squares amplitudes ``(B, K)``, the model ``(B, npix)`` and its chi2 (float32 sums, a
    float64 solve: the exact chi2 of the answer comes from the native stage)."""
    Y = Tw * w[:, None]
    a = _ridge_solve(torch.bmm(Y, Tw.transpose(1, 2)), torch.bmm(Y, f[:, :, None])[..., 0], ridge)
    model = torch.bmm(a.float()[:, None], Tw)[:, 0]
    return a, model, ((f - model) ** 2 * w).sum(1).double()


def anomaly_score(flux, ivar, model_flux, window: int = 64, step: int = 16):
    """How badly the best fit misses somewhere: the largest excess chi-square over windows of ``window``
    pixels, ``(sum r^2 - n) / sqrt(2 n)`` with ``r = (f - m) sqrt(ivar)``, divided by the spectrum's
    reduced chi-square (so that a fit uniformly imperfect at high S/N is not an anomaly, and a local
    misfit — a second object's line, an artefact, a feature no template has — is)."""
    r2 = (flux - model_flux) ** 2 * ivar
    good = (ivar > 0).to(r2.dtype)
    c2 = torch.nn.functional.pad(torch.cumsum(r2, 1), (1, 0))
    cn = torch.nn.functional.pad(torch.cumsum(good, 1), (1, 0))
    starts = torch.arange(0, r2.shape[1] - window + 1, step, device=r2.device)
    s2 = c2[:, starts + window] - c2[:, starts]
    sn = cn[:, starts + window] - cn[:, starts]
    ntot = good.sum(1).clamp_min(1)
    rchi2 = (r2.sum(1) / ntot).clamp_min(1.0)
    ex = torch.where(sn >= window / 2, (s2 / rchi2[:, None] - sn) / torch.sqrt(2 * sn.clamp_min(1)),
                     torch.full_like(s2, -float("inf")))
    return ex.amax(1).clamp_min(0)


def _data(X, npix: int):
    """flux, ivar, the data vectors of the scan ``(B, 4, npix)`` (w f, w, w f^2, [w > 0]) and the good
    pixels' count (on the CPU with the compiled kernels: :func:`.eigen_kernels.scan_data`, the same values)."""
    if _kernel_ok(X) and X.dtype in (torch.float32, torch.float64) and X.shape[1] >= 2 * npix:
        from .eigen_kernels import scan_data

        return tuple(torch.from_numpy(a) for a in scan_data(X.numpy(), npix))
    flux = X[:, :npix].float()
    ivar = X[:, npix:2 * npix].float().clamp_min(0)
    bad = ~torch.isfinite(flux) | ~torch.isfinite(ivar)
    ivar = torch.where(bad, torch.zeros_like(ivar), ivar)
    flux = torch.where(bad, torch.zeros_like(flux), flux)
    D4 = torch.stack([ivar * flux, ivar, ivar * flux * flux, (ivar > 0).float()], 1)
    ntot = (ivar > 0).sum(1).float()
    return flux, ivar, D4, ntot


def _parabola(cmp, s):
    """Vertex and curvature of the parabola through the lowest point of each curve and its neighbours.

    Returns ``(j, y0, s_vertex, sigma_s, ok)``: ``sigma_s`` is where chi2 rises by 1."""
    j = cmp.argmin(1)
    y0 = cmp.gather(1, j[:, None])[:, 0]
    jm, jp = (j - 1).clamp_min(0), (j + 1).clamp_max(cmp.shape[1] - 1)
    ym, yp = cmp.gather(1, jm[:, None])[:, 0], cmp.gather(1, jp[:, None])[:, 0]
    den = ym - 2 * y0 + yp
    ok = torch.isfinite(den) & (den > 0) & (jm != j) & (jp != j) & torch.isfinite(y0)
    frac = torch.where(ok, 0.5 * (ym - yp) / den, torch.zeros_like(den)).clamp(-1, 1)
    step = (s[:, 1] - s[:, 0]).to(cmp.dtype) if s.dim() == 2 else (s[1] - s[0]).to(cmp.dtype)
    sj = s.gather(1, j[:, None])[:, 0] if s.dim() == 2 else s[j]
    sig = torch.where(ok, torch.sqrt(2 / den.clamp_min(1e-30)) * step.abs(), torch.full_like(den, float("nan")))
    return j, y0, sj.to(cmp.dtype) + frac * step, sig, ok


def _refine(model, k, s0, D, ntot, lo, hi, half, H=None, passes: int = 3):
    """Native scan around ``s0`` (arguments as :func:`_native`), re-centred (up to ``passes`` times) while
    the minimum sits on the window's edge inside the class's range."""
    cmp, chi2, n, s = _native(model, k, s0, half, D, ntot, lo, hi, H)
    for _ in range(passes - 1):
        j = cmp.argmin(1)
        edge = ((j == 0) | (j == cmp.shape[1] - 1)) & torch.isfinite(cmp.gather(1, j[:, None])[:, 0])
        sj = s.gather(1, j[:, None])[:, 0]
        edge &= (sj > lo) & (sj < hi)
        rows = _nz(edge)
        if not len(rows):
            break
        sub = (lambda x: x[rows]) if len(rows) < len(s0) else (lambda x: x)
        c2, x2, n2, s2 = _native(model, sub(k) if torch.is_tensor(k) else k, sj[rows], half, sub(D), sub(ntot),
                                 sub(lo) if torch.is_tensor(lo) else lo, sub(hi) if torch.is_tensor(hi) else hi,
                                 None if H is None else sub(H))
        cmp[rows], chi2[rows], n[rows], s[rows] = c2, x2, n2, s2
    return cmp, chi2, n, s


def _final(model, k_best, s_int, flux, ivar, k2=None, s2=None, snr: bool = True):
    """COEFF and ``(B, 9)``: the anomaly score, its two parts (local misfit, joint-fit gain, each as
    ``log(1 + x)``), the median S/N per fitted pixel and the residuals' shape (:func:`residual_shape`;
    these six NaN without ``snr``: only the learned score of a full scan reads them), at each spectrum's
    answer (``k_best < 0``: none; NaN there).

    The score (:func:`anomaly_score`) adds to the largest local misfit the chi-square gained by fitting
    the best and the second-best solution (another redshift or class, ``k2``/``s2``) together:
    ``log(1 + max(0, chi2_best - chi2_joint) / max(1, rchi2))`` — two objects in one fibre.

    On the CPU with the compiled kernels (:mod:`.eigen_kernels`) the amplitudes come from float64 sums and
    every statistic from one pass per spectrum (:func:`.eigen_kernels.residual_stats`); otherwise from the
    stacked template windows and batched torch products (float32 sums, a float64 solve)."""
    B, npix = flux.shape
    coeff = torch.full((B, model.config.ncomp), float("nan"), device=flux.device)
    anom = torch.full((B, 4 + len(RESIDUAL_FIELDS)), float("nan"), device=flux.device, dtype=torch.float64)
    rows = _nz(k_best >= 0)
    if not len(rows):
        return coeff, anom
    ridge = model.config.ridge
    w = None
    if _kernel_ok(flux) and npix >= 64:  # (the anomaly score's window: any survey grid has far more pixels)
        from .eigen_kernels import joint_sums, residual_stats

        T, V = _kernel_templates(model)
        K = T.shape[1]
        f, iv, k1, o1 = flux[rows].numpy(), ivar[rows].numpy(), k_best[rows].numpy(), _offsets(model, s_int[rows])
        fit = torch.from_numpy(joint_sums(f, iv, T, V, k1, o1))  # b, packed M, F of the answer alone
        a = _ridge_solve(_unpack(fit[:, K:-1], K), fit[:, :K], ridge)
        st = torch.from_numpy(residual_stats(f, iv, T, V, k1, o1, a.numpy(), full=snr))
        local, sn, shape, nfit = st[:, 0], st[:, 1], st[:, 2:7], st[:, 7]
    else:
        Tw, cov = _windows(model, k_best[rows], s_int[rows], npix)
        w = ivar[rows] * cov
        a, mflux, c1 = _lstsq(Tw, w, flux[rows], ridge)
        local = anomaly_score(flux[rows], w, mflux.float())
        nfit = w.gt(0).sum(1)
    coeff[rows] = a.float()
    blend = torch.zeros_like(local, dtype=torch.float64)
    if k2 is not None:
        has = (k2[rows] >= 0)
        if bool(has.any()):
            r2 = rows[has]
            n = nfit[has].clamp_min(1)
            if w is None:
                c1j, cj = _joint_chi2(model, k_best[r2], s_int[r2], k2[r2], s2[r2], flux[r2], ivar[r2])
                blend[has] = (c1j - cj).clamp_min(0) / (c1j / n).clamp_min(1)
            else:
                T2, _ = _windows(model, k2[r2], s2[r2], npix)
                _, _, cj = _lstsq(torch.cat([Tw[has], T2], 1), w[has], flux[r2], ridge)
                blend[has] = (c1[has] - cj).clamp_min(0) / (c1[has] / n).clamp_min(1)
    loc, bl = torch.log1p(local.double()), torch.log1p(blend.double())
    anom[rows, :3] = torch.stack([loc + bl, loc, bl], 1)
    if snr:
        # the median S/N per pixel over the pixels fitted (the learned score's brightness: a misfit means
        # less in a faint spectrum than in a bright one)
        if w is not None:
            sn = torch.where(w > 0, flux[rows].abs() * w.sqrt(), torch.full_like(w, float("nan"))).nanmedian(1).values
            shape = residual_shape(flux[rows], w, mflux.float())
        anom[rows, 3] = sn.double()
        anom[rows, 4:] = shape
    return coeff, anom


def _offsets(model, s):
    """Rest-grid offsets ``s_max - s`` of integer shifts ``s`` (clamped to the scanned range), numpy int64."""
    cfg = model.config
    return (cfg.s_max - s.clamp(cfg.s_min, cfg.s_max)).cpu().numpy()


def _unpack(packed, J: int):
    """Symmetric ``(B, J, J)`` from the packed upper triangles ``(B, J(J+1)/2)`` (pairs ``a <= c`` in row order)."""
    M = torch.zeros((len(packed), J, J), dtype=packed.dtype)
    for i, (a, c) in enumerate(_pairs(J)):
        M[:, a, c] = M[:, c, a] = packed[:, i]
    return M


def _joint_chi2(model, k1, s1, k2, s2, flux, ivar):
    """The chi-square of the first solution alone and of both solutions' templates together (two objects in one
    fibre), on the first solution's coverage, from the compiled kernel's sums (:func:`.eigen_kernels.joint_sums`:
    one pass per group of sums instead of two stacked template windows and batched products; float64):
    ``chi2 = F - b^T (M + lam I)^-1 b``, the ridge of :func:`_ridge_solve`."""
    from .eigen_kernels import joint_sums

    T, V = _kernel_templates(model)
    K = T.shape[1]
    J = 2 * K
    out = torch.from_numpy(joint_sums(flux.cpu().numpy(), ivar.cpu().numpy(), T, V, k1.clamp_min(0).cpu().numpy(),
                                      _offsets(model, s1), k2.cpu().numpy(), _offsets(model, s2)))
    b, F = out[:, :J], out[:, -1]
    M = _unpack(out[:, J:-1], J)
    aj = _ridge_solve(M, b, model.config.ridge)
    a1 = _ridge_solve(M[:, :K, :K], b[:, :K], model.config.ridge)
    return F - (b[:, :K] * a1).sum(1), F - (b * aj).sum(1)


def residual_shape(flux, ivar, model_flux, smooth: int = 5) -> torch.Tensor:
    """The shape of a best fit's residuals ``r = (f - m) sqrt(ivar)`` over the fitted pixels (``ivar > 0``;
    ``flux`` finite), ``(B, 5)`` float64, for the learned anomaly score (issue 19: what the windowed misfit
    of :func:`anomaly_score` does not see):

    ``res_lag1``
        the residuals' correlation between neighbouring pixels, ``sum r_i r_(i+1) / sum r_i^2`` (noise:
        ~0; a continuum the templates cannot follow, a second object's continuum, a scattered-light bump:
        towards 1);
    ``res_out``
        ``log10(1e-4 + fraction of fitted pixels with |r| > 5)`` (cosmic-ray spikes, sky residuals);
    ``res_peak``, ``res_trough``
        the largest and the most negative sum of ``r`` over ``smooth`` adjacent pixels, over
        ``sqrt(smooth)`` (a second object's emission line; an absorption feature the fit lacks), each
        divided by ``sqrt(max(1, RCHI2))``;
    ``res_tilt``
        ``log`` of the reduced chi-square of the bluest third of the pixels over the reddest third's (a
        star's continuum under a galaxy's, a flux step between the cameras).

    Six passes over the pixels (~0.1 ms per BOSS spectrum on one core).
    """
    r = (flux - model_flux) * ivar.clamp_min(0).sqrt()
    r2 = r * r
    good = ivar > 0
    n = good.sum(1).clamp_min(1).to(r.dtype)
    s2 = r2.sum(1).clamp_min(1e-30)
    lag1 = (r[:, 1:] * r[:, :-1]).sum(1) / s2
    out = torch.log10(1e-4 + (r2 > 25).sum(1) / n)
    rchi = (s2 / n).clamp_min(1.0).sqrt()
    c = torch.cumsum(r, 1)
    box = (c[:, smooth:] - c[:, :-smooth]) / math.sqrt(smooth)
    peak, trough = box.amax(1) / rchi, -box.amin(1) / rchi
    third = r.shape[1] // 3
    cb = r2[:, :third].sum(1) / good[:, :third].sum(1).clamp_min(1)
    cr = r2[:, -third:].sum(1) / good[:, -third:].sum(1).clamp_min(1)
    tilt = torch.log(cb.clamp_min(1e-6) / cr.clamp_min(1e-6))
    return torch.stack([lag1, out, peak, trough, tilt], 1).double()


def _setup(model, X):
    """The config, device, inputs as a tensor on it, npix, batch size, ncomp and an empty (NaN) raw array."""
    cfg = model.config
    dev = model.templates.device
    X = torch.as_tensor(np.asarray(X), device=dev)
    return cfg, dev, X, cfg.logrid.npix, X.shape[0], cfg.ncomp, np.full((X.shape[0], len(RAW_FIELDS) + cfg.ncomp), np.nan)


def scan(model, X, classes=None, return_curves: bool = False, final: bool = True):
    """The chi-square scan of a batch (``X``: flux then ivar on the native grid, ``(B, 2 npix)``).

    ``classes``: class indices to scan (default: every class with templates); ``final=False`` leaves out the
    answer's coefficients, anomaly score and residual statistics (NaN: ~40% of the cost; the default's
    chi-square arbitration needs only the chi-square and the redshift). Returns the raw array
    (``RAW_FIELDS`` then ``COEFF``) and, with ``return_curves``, the coarse curves
    ``{class name: (z (U,), chi2 (B, U))}``. The coarse stage sums in float32; the native stage in float32
    for spectra fainter than ``f64_snr2`` and float64 above (``CHI2`` is the native stage's)."""
    cfg, dev, X, npix, B, K, raw = _setup(model, X)
    shifts = [c for c in model.class_shifts() if classes is None or c[0] in classes]
    if not shifts or B == 0:
        return (raw, {}) if return_curves else raw
    flux, ivar, D4, ntot = _data(X, npix)
    blocks = {}
    vals, cs, ks = [], [], []  # coarse minima: value, native shift estimate, class
    curves = {}
    for k, lo, hi in shifts:
        q = _q(cfg, k)
        if q not in blocks:
            blocks[q] = _blocks(D4, q)
        excl = max(1, int(round(math.log10(1 + cfg.dv_exclude / C_KMS) / D / q)))
        cmp, s = _coarse(model, k, lo, hi, blocks[q], ntot)
        if return_curves:
            curves[cfg.tax.classes[k]] = (10 ** (s.cpu().numpy() * D) - 1, cmp.cpu().numpy())
        c = cmp.clone()
        ar = torch.arange(c.shape[1], device=dev)[None]
        for _ in range(min(cfg.refine, c.shape[1])):  # the class's best minima, one per dv_exclude
            j, v, sv, _, _ = _parabola(c, s)
            vals.append(v)
            cs.append(sv.round().long())
            ks.append(k)
            c = torch.where((ar - j[:, None]).abs() <= excl, torch.full_like(c, float("inf")), c)
    V = torch.stack(vals, 1)
    Sc = torch.stack(cs, 1)
    order = V.argsort(1)
    # refine the best coarse minimum and the next ones at distinct redshifts, `refine` in all
    dv_s = math.log10(1 + cfg.dv_exclude / C_KMS) / D
    chosen = torch.full((B, cfg.refine), -1, dtype=torch.long, device=dev)
    nch = torch.zeros(B, dtype=torch.long, device=dev)
    rowsB = torch.arange(B, device=dev)
    for r in range(V.shape[1]):
        idx = order[:, r]
        vr, sr = V[rowsB, idx], Sc[rowsB, idx]
        distinct = torch.ones(B, dtype=torch.bool, device=dev)
        for m in range(cfg.refine):
            cm = chosen[:, m]
            distinct &= (cm < 0) | ((sr - Sc[rowsB, cm.clamp_min(0)]).abs() > dv_s)
        take = distinct & (nch < cfg.refine) & torch.isfinite(vr)
        rows = _nz(take)
        chosen[rows, nch[rows]] = idx[rows]
        nch += take.long()
        if bool((nch >= cfg.refine).all()):
            break
    ranges = {k: (lo, hi) for k, lo, hi in shifts}
    best = torch.full((B, cfg.refine), float("inf"), dtype=torch.float64, device=dev)
    fields = {n: torch.full((B, cfg.refine), float("nan"), dtype=torch.float64, device=dev)
              for n in ("s", "sig", "n", "k", "si", "lim", "bad", "chi")}
    kk = torch.tensor(ks, device=dev)
    klo = torch.tensor([ranges[k][0] for k in ks], device=dev)
    khi = torch.tensor([ranges[k][1] for k in ks], device=dev)
    # precision by brightness: float32 sums lose ~4e-6 sqrt(npix) npix <(S/N)^2> of chi2 (about 0.5 at
    # S/N 5 per pixel); brighter spectra take the float64 path
    bright = D4[:, 2].sum(1) / ntot.clamp_min(1) > cfg.f64_snr2
    groups = ((_nz(~bright), torch.float32), (_nz(bright), torch.float64))
    if _kernel_ok(D4):  # the compiled kernel sums in float64 for every spectrum (its float32 data widened as read)
        groups = ((torch.arange(B, device=dev), torch.float64),)
    for grp, dt in groups:
        if not len(grp):
            continue
        whole = len(grp) == B
        Hg = None if len(groups) == 1 else _hankel(D4 if whole else D4[grp], cfg.fine_halfwidth, dt)
        for m in range(cfg.refine):
            cm = chosen[grp, m]
            has = cm >= 0
            if not bool(has.any()):
                continue
            allrows = bool(has.all())
            pos = torch.arange(len(grp), device=dev) if allrows else _nz(has)
            rows = grp[pos]
            sub = (lambda x: x) if allrows and whole else (lambda x: x[rows])
            ci = cm[pos]
            k, lo, hi = kk[ci], klo[ci], khi[ci]
            cmp, chi2, n, s = _refine(model, k, Sc[rows, ci], sub(D4), sub(ntot), lo, hi, cfg.fine_halfwidth,
                                      Hg if allrows or Hg is None else Hg[pos],
                                      passes=3 if m == 0 else 1)  # alternatives: chi2 only
            j, y0, sv, sig, ok = _parabola(cmp, s)
            sj = s.gather(1, j[:, None])[:, 0]
            best[rows, m] = y0.double()
            fields["s"][rows, m] = sv.double()
            fields["sig"][rows, m] = sig.double()
            fields["n"][rows, m] = n.gather(1, j[:, None])[:, 0].double()
            fields["chi"][rows, m] = chi2.gather(1, j[:, None])[:, 0].double()
            fields["k"][rows, m] = k.double()
            fields["si"][rows, m] = sj.double()
            fields["lim"][rows, m] = ((sj <= lo) | (sj >= hi)).double()
            fields["bad"][rows, m] = (~ok).double()
    srt = best.argsort(1)
    b0 = srt[:, 0]
    v0 = best[rowsB, b0]
    found = torch.isfinite(v0)
    if cfg.refine > 1:  # DELTACHI2: to the best refined minimum at a distinct redshift (any class)
        dchi2 = best[rowsB, srt[:, 1]] - v0
        dchi2 = torch.where(torch.isfinite(dchi2), dchi2, torch.full_like(dchi2, float("inf")))
    else:
        dchi2 = torch.full_like(v0, float("inf"))
    f = {n: t[rowsB, b0] for n, t in fields.items()}
    second = {n: fields[n][rowsB, srt[:, 1]] if cfg.refine > 1 else torch.full_like(f[n], float("nan")) for n in ("k", "si")}
    k_best = torch.where(found, f["k"], torch.full_like(f["k"], -1)).nan_to_num(-1).long()
    s_int = f["si"].nan_to_num(0).long()
    nmod = f["n"]
    zw = torch.zeros(B, dtype=torch.long, device=dev)
    zw |= torch.where(f["lim"] > 0, int(ZWarningMask.Z_FITLIMIT), 0)
    zw |= torch.where(f["bad"] > 0, int(ZWarningMask.BAD_MINFIT), 0)
    zw |= torch.where(dchi2 < cfg.dchi2_min, int(ZWarningMask.SMALL_DELTA_CHI2), 0)
    zw |= torch.where(nmod < ntot.double(), int(ZWarningMask.LITTLE_COVERAGE), 0)
    k2 = torch.where(torch.isfinite(second["k"]), second["k"], torch.full_like(second["k"], -1)).long()
    if final:
        coeff, anom = _final(model, k_best, s_int, flux, ivar, k2, second["si"].nan_to_num(0).long())
    else:  # the answer's chi-square and redshift only (no coefficients, anomaly score or residual statistics)
        coeff = torch.full((B, K), float("nan"), device=dev)
        anom = torch.full((B, 4 + len(RESIDUAL_FIELDS)), float("nan"), device=dev, dtype=torch.float64)
    chi2v = f["chi"]  # the native stage's (float64) at the answer
    out = torch.stack([k_best.double(), f["s"], f["sig"], chi2v, dchi2.double(), nmod, zw.double(),
                       chi2v / (nmod - K).clamp_min(1), anom[:, 0], s_int.double(), second["k"], second["si"]], 1)
    raw = torch.cat([out, anom[:, 1:], coeff.double()], 1).cpu().numpy()
    raw[~found.cpu().numpy(), :] = np.nan
    return (raw, curves) if return_curves else raw


#: Most bytes of Hankel rows one group of refinement windows may hold (:func:`scan_window`): 64 MB (was 256: the
#: default's peak 38-50 MB lower, as fast, the same catalog; docs/benchmarks.md "Memory and time, 1k to 100k").
WINDOW_BYTES = 64 * 2**20


def scan_window(model, X, cls, z0, half_px):
    """Refinement: the native chi-square of class ``cls[i]`` in ``+-half_px[i]`` pixels around ``z0[i]``
    (a network's answer used as a prior, as DESI runs Redrock with QuasarNET's). Returns the raw array of
    :func:`scan` (``dchi2`` is NaN: a window has no competing solution; ``Z_FITLIMIT`` when the minimum
    sits on the window's edge, or when the prior lies outside the class's redshift range: the window is
    then moved to the range's end, and its minimum is no refinement of the prior — a quasar at z 1.15
    typed BAL, whose templates start at z 1.51, was put at 1.515)."""
    cfg, dev, X, npix, B, K, raw = _setup(model, X)
    if B == 0:
        return raw
    flux, ivar, D4, ntot = _data(X, npix)
    ranges = {k: (lo, hi) for k, lo, hi in model.class_shifts()}
    cls = np.asarray(cls, np.int64)
    z0 = np.asarray(z0, float)
    half_px = np.asarray(half_px, np.int64)
    for k in np.unique(cls):
        if int(k) not in ranges:
            continue
        lo, hi = ranges[int(k)]
        for h in np.unique(half_px[cls == k]):
            rows = np.flatnonzero((cls == k) & (half_px == h) & np.isfinite(z0) & (z0 > -1))
            # the native stage's Hankel rows take 4 (2h + 1) (npix + 2h) float64 per spectrum (47 MB at h =
            # 150): spectra in groups that keep them under WINDOW_BYTES (a batch of wide windows needed
            # 14 GB at once)
            step = max(1, WINDOW_BYTES // (4 * (2 * int(h) + 1) * (npix + 2 * int(h)) * 8))
            for g in range(0, len(rows), step):
                sel = rows[g:g + step]
                r = torch.as_tensor(sel, device=dev)
                raw[sel] = _window_rows(model, int(k), lo, hi, max(int(h), 1), z0[sel], flux[r], ivar[r], D4[r],
                                        ntot[r], K, dev)
    return raw


def _window_rows(model, k, lo, hi, h, z0, flux, ivar, D4, ntot, K, dev) -> np.ndarray:
    """Raw rows of :func:`scan_window` for spectra of class ``k`` with half-width ``h`` (their priors
    ``z0`` and data)."""
    s_prior = np.round(np.log10(1 + z0) / D).astype(np.int64)
    outside = torch.as_tensor((s_prior < lo) | (s_prior > hi), device=dev)  # a prior the class cannot reach
    cmp, chi2, n, s = _native(model, k, torch.as_tensor(s_prior.clip(lo, hi), device=dev), h, D4, ntot, lo, hi)
    j, y0, sv, sig, ok = _parabola(cmp, s)
    sj = s.gather(1, j[:, None])[:, 0]
    nm = n.gather(1, j[:, None])[:, 0]
    kk = torch.full_like(sj, k)
    zw = torch.where(~ok, int(ZWarningMask.BAD_MINFIT), 0)
    zw |= torch.where((j == 0) | (j == cmp.shape[1] - 1) | (sj <= lo) | (sj >= hi) | outside,
                      int(ZWarningMask.Z_FITLIMIT), 0)
    zw |= torch.where(nm < ntot, int(ZWarningMask.LITTLE_COVERAGE), 0)
    coeff, an = _final(model, kk, sj, flux, ivar, snr=False)  # a window's rows keep the hand-made score
    chi = chi2.gather(1, j[:, None])[:, 0].double()
    nan = torch.full_like(chi, float("nan"))
    vals = torch.stack([kk.double(), sv.double(), sig.double(), chi, nan, nm.double(), zw.double(),
                        chi / (nm.double() - K).clamp_min(1), an[:, 0], sj.double(), nan, nan], 1)
    vals = torch.cat([vals, an[:, 1:], coeff.double()], 1).cpu().numpy()
    vals[~np.isfinite(y0.cpu().numpy())] = np.nan
    return vals


def calibrated_zerr(sigma, rchi2, spectype, surveys, cfg: EigenConfig, classes=None) -> np.ndarray:
    """``ZERR / (1 + z) = sqrt((k e)^2 + f^2)`` with ``e`` the curvature error in dz/(1+z) (``Delta chi2 =
    1``), times ``sqrt(max(RCHI2, 1))`` when ``zerr_rchi2``, and ``k``, ``f`` of the row's cell (``k = 1``,
    ``f = 0`` before release). The floor carries what the curvature cannot see (template mismatch: the
    pulls of bright stars are not Gaussian without it); the inflation carries a survey's poorer fits
    (LAMOST's uncorrected telluric bands: median RCHI2 2.0 against 1.1 on BOSS, simulated). ``classes``:
    each row's class, for cells per class (:func:`redsift.models.family.cell_values`)."""
    e = np.asarray(sigma, float)
    if cfg.zerr_rchi2:
        e = e * np.sqrt(np.maximum(np.nan_to_num(np.asarray(rchi2, float), nan=1.0), 1.0))
    k = cell_values(cfg.zerr_scale, spectype, surveys, 1.0, classes)
    f = cell_values(cfg.zerr_floor, spectype, surveys, 0.0, classes)
    return np.hypot(k * e, f)


def fit_zerr_cell(dz, e, q1: float = 0.683, q2: float = 0.95, lim2: float = 1.96, bands=None) -> tuple[float, float]:
    """``(k, f)`` such that ``|dz| / sqrt((k e)^2 + f^2)`` has ``q1`` of its values below 1 (exactly, by
    bisection in ``k``) and ``q2`` below ``lim2`` (as near as the floors tried allow: 0 and 80 values from
    1e-7 to 3e-3 in dz/(1+z)): the 68% and 95% intervals ``redsift evaluate`` checks. With Gaussian errors
    the best floor is 0 and ``k`` the pulls' spread.

    ``bands`` ``((lo1, hi1), (lo2, hi2))``: instead, the ``(k, f)`` whose coverages within 1 and ``lim2`` lie
    nearest the middle of both bands, as the larger of the two distances in units of each band's half-width
    (heavy-tailed pulls cannot put exactly ``q1`` within 1 and ``q2`` within ``lim2``: the exact 68% left the
    95% coverage of the default's quasars and stars at 0.87-0.93; this trades some of the 68% point, which may
    then leave its band, for a 95% one nearer its own). Gaussian pulls give the same answer both ways."""
    dz, e = np.abs(np.asarray(dz, float)), np.asarray(e, float)

    def cover(k, f, lim):
        return np.mean(dz < lim * np.sqrt((k * e) ** 2 + f**2))

    best = (np.inf, float(np.quantile(dz / e, q1)), 0.0)
    for f in np.concatenate([[0.0], np.geomspace(1e-7, 3e-3, 80)]):
        if cover(1e-4, f, 1.0) >= q1:  # the floor alone already covers q1: too large
            break
        lo, hi = 1e-4, 1e4
        for _ in range(50):
            k = math.sqrt(lo * hi)
            lo, hi = (k, hi) if cover(k, f, 1.0) < q1 else (lo, k)
        if bands is None:
            miss = abs(cover(hi, f, lim2) - q2)
            if miss < best[0]:
                best = (miss, hi, float(f))
            continue
        (a1, b1), (a2, b2) = bands
        for k in hi * np.geomspace(0.7, 2.0, 81):  # around the exact-q1 scale
            miss = max(abs(cover(k, f, 1.0) - (a1 + b1) / 2) / ((b1 - a1) / 2),
                       abs(cover(k, f, lim2) - (a2 + b2) / 2) / ((b2 - a2) / 2))
            if miss < best[0]:
                best = (miss, float(k), float(f))
    return float(best[1]), best[2]


def fit_zerr_cells(z, zerr, ztrue, spectype, surveys, min_cell: int = 50, classes=None, bands=None) -> tuple[dict, dict, dict]:
    """The ``zerr_scale`` and ``zerr_floor`` tables (and a record) from uncalibrated ``zerr`` of rows typed
    right (``spectype`` their spectral type, '' to leave a row out): :func:`fit_zerr_cell` per spectral
    type and per spectral type / survey, and with ``classes`` (each row's class as answered) per class and
    class / survey, each with at least ``min_cell`` rows. Classes need their own cells: within one type
    the curvature error is right for some (a G star's many lines) and several times too small for others
    (a white dwarf's few broad lines: 38% of BOSS held-out WDs within 1 ZERR of a per-type calibration,
    against 86% of C stars), and one factor for both makes heavy tails."""
    z, zerr, ztrue = (np.asarray(a, float) for a in (z, zerr, ztrue))
    spectype, surveys = np.asarray(spectype), np.asarray(surveys)
    classes = np.full(len(z), "") if classes is None else np.asarray(classes).astype(str)
    dz, e = (z - ztrue) / (1 + ztrue), zerr / (1 + z)
    scale, floor, record = {}, {}, {}
    cells = []
    for t in SPECTYPES:
        m = (spectype == t) & np.isfinite(dz) & np.isfinite(e) & (e > 0)
        cells += [(t, m)] + [(f"{t}/{v}", m & (surveys == v)) for v in SURVEYS]
        for c in sorted(set(classes[m]) - {"", t}):
            cells += [(c, m & (classes == c))] + [(f"{c}/{v}", m & (classes == c) & (surveys == v)) for v in SURVEYS]
    for key, cell in cells:
        if cell.sum() >= min_cell:
            scale[key], floor[key] = fit_zerr_cell(dz[cell], e[cell], bands=bands)
            record[f"zerr_{key}"] = f"k {scale[key]:.3g}, floor {floor[key] * C_KMS:.3g} km/s, n {int(cell.sum())}"
    return scale, floor, record


#: continuous inputs of the learned anomaly score, per row of :func:`scan`'s raw output
ANOMALY_INPUTS = ("anomaly", "anom_local", "anom_blend", "log_rchi2", "log_dchi2", "log_snr", "log_sigma",
                  "coeff_shape") + RESIDUAL_FIELDS


def anomaly_features(raw, nclass: int, surveys=None, inputs=ANOMALY_INPUTS) -> np.ndarray:
    """The learned anomaly score's features from raw scan rows: ``inputs`` (default :data:`ANOMALY_INPUTS`;
    a released model keeps the list it was fitted on: the hand-made score and its two parts, log RCHI2,
    log(1 + DELTACHI2), log S/N, log curvature error, how far the fit leans on its higher components,
    sum log(1 + |a_j / a_0|), and the residuals' shape, :func:`residual_shape`), their products in pairs (the worth of a
    misfit depends on the spectrum's brightness and class), the class one-hot, a ZWARN flag and the survey
    one-hot (:data:`SURVEYS`; zeros where ``surveys`` is None: the same misfit means less in LAMOST, whose
    pipeline leaves the telluric bands in)."""
    raw = np.asarray(raw, float)
    f = {name: raw[:, i] for i, name in enumerate(RAW_FIELDS)}
    coeff = raw[:, len(RAW_FIELDS):]
    a0 = np.abs(coeff[:, 0]) + 1e-30
    derived = {"log_rchi2": lambda: np.log(np.maximum(f["rchi2"], 1e-6)),
               "log_dchi2": lambda: np.log1p(np.clip(np.nan_to_num(f["dchi2"], nan=0.0), 0, 1e12)),
               "log_snr": lambda: np.log(np.maximum(f["snr"], 1e-3)),
               "log_sigma": lambda: np.log(np.maximum(f["sigma_s"], 1e-6)),
               "coeff_shape": lambda: np.log1p(np.abs(coeff[:, 1:]) / a0[:, None]).sum(1)}
    unknown = [name for name in inputs if name not in derived and name not in f]
    if unknown:
        raise ValueError(f"learned anomaly score: unknown input(s) {', '.join(unknown)}")
    cont = np.column_stack([derived[name]() if name in derived else f[name] for name in inputs])
    cont = np.nan_to_num(cont, nan=0.0, posinf=50.0, neginf=-50.0)
    i, j = np.triu_indices(cont.shape[1])
    cls = np.nan_to_num(f["cls"], nan=-1).astype(np.int64)
    onehot = (cls[:, None] == np.arange(nclass)[None, :]).astype(float)
    sv = np.full(len(raw), "") if surveys is None else np.asarray(surveys).astype(str)
    survey = (sv[:, None] == np.array(SURVEYS)[None, :]).astype(float)
    return np.hstack([cont, cont[:, i] * cont[:, j], onehot, (np.nan_to_num(f["zwarn"]) > 0)[:, None].astype(float),
                      survey])


def fit_logistic(X, y, l2: float = 1.0, iters: int = 50) -> dict:
    """L2-regularised logistic regression by Newton's method on standardised features (the intercept not
    penalised): ``{"mean", "scale", "coef", "intercept", "l2"}``; the log-odds of row ``x`` are
    ``((x - mean) / scale) @ coef + intercept``."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    mean, scale = X.mean(0), X.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    Z = np.hstack([(X - mean) / scale, np.ones((len(X), 1))])
    w = np.zeros(Z.shape[1])
    pen = np.full(Z.shape[1], l2)
    pen[-1] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(Z @ w, -50, 50)))
        g = Z.T @ (p - y) + pen * w
        H = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(pen + 1e-9)
        step = np.linalg.solve(H, g)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return {"mean": mean.tolist(), "scale": scale.tolist(), "coef": w[:-1].tolist(), "intercept": float(w[-1]),
            "l2": l2, "inputs": list(ANOMALY_INPUTS)}


def learned_anomaly(raw, nclass: int, m: dict, surveys=None) -> np.ndarray:
    """The learned anomaly score (log-odds of :func:`fit_logistic`'s model ``m``) of raw scan rows."""
    X = anomaly_features(raw, nclass, surveys, m.get("inputs", ANOMALY_INPUTS[:8]))
    return ((X - np.asarray(m["mean"])) / np.asarray(m["scale"])) @ np.asarray(m["coef"]) + m["intercept"]


def anomaly_bits(anomaly, ok, cfg: EigenConfig, surveys=None) -> np.ndarray:
    """``OUT_OF_DISTRIBUTION`` where a row's ``anomaly`` exceeds its survey's release threshold
    (``anomaly_survey``, else ``anomaly_threshold``; no bits before release), among the rows ``ok``."""
    ok = np.asarray(ok, bool)
    if cfg.anomaly_threshold is None:
        return np.zeros(len(ok), np.int64)
    surveys = np.full(len(ok), "") if surveys is None else np.asarray(surveys)
    thr = np.array([(cfg.anomaly_survey or {}).get(v, cfg.anomaly_threshold) for v in surveys], float)
    with np.errstate(invalid="ignore"):
        return np.where(ok & (np.asarray(anomaly, float) > thr), int(ZWarningMask.OUT_OF_DISTRIBUTION), 0).astype(np.int64)


def decode(raw, cfg: EigenConfig, surveys=None, cells=None) -> dict:
    """Catalog quantities from raw scan rows (NaN rows: nothing measured); ``surveys`` (row-aligned
    survey names) picks each row's ``ZERR`` calibration cell, ``cells`` (row-aligned names) the class part of
    it where given (default: the answered class; the default model's refined high-redshift quasars have cells
    of their own)."""
    raw = np.asarray(raw, float)
    f = {name: raw[:, i] for i, name in enumerate(RAW_FIELDS)}
    ok = np.isfinite(f["cls"])
    cls = np.where(ok, f["cls"], 0).astype(np.int64)
    tax = cfg.tax
    spectype = np.array(tax.spectypes)[cls]
    name = np.array(tax.classes)[cls]
    z = np.where(ok, 10 ** (f["s"] * D) - 1, np.nan)
    zerr = (1 + z) * calibrated_zerr(math.log(10) * D * f["sigma_s"], f["rchi2"], spectype, surveys, cfg,
                                     name if cells is None else np.where(ok, cells, name))
    anomaly = f["anomaly"]
    full = ok & ~np.isnan(f["dchi2"]) & np.isfinite(f["anomaly"])  # rows scanned without the final stage: none
    if cfg.anomaly_model and full.any():
        # the learned score where its features exist (a full scan); a refinement window has no DELTACHI2
        # and keeps the hand-made score (the default's rows: no features computed for them)
        anomaly = anomaly.copy()
        anomaly[full] = learned_anomaly(raw[full], len(tax.classes), cfg.anomaly_model,
                                        None if surveys is None else np.asarray(surveys)[full])
    return {"ok": ok, "cls": cls, "spectype": np.where(ok, spectype, ""),
            "subtype": np.where(ok & (name != spectype), name, ""), "z": z, "zerr": zerr,
            "chi2": f["chi2"], "dchi2": f["dchi2"], "npix": np.where(ok, f["npix"], 0).astype(np.int64),
            "zwarn": np.where(ok, f["zwarn"], 0).astype(np.int64), "rchi2": f["rchi2"], "anomaly": anomaly,
            "coeff": raw[:, len(RAW_FIELDS):]}


@register_family
class EigenFamily(Family):
    """GaSNet-III-style eigenspectra and a chi-square scan (see the module docstring)."""

    name = "eigen"
    config_cls = EigenConfig
    description = "learned eigenspectra + chi-square redshift scan (GaSNet-III); Redrock-style columns"

    def build(self, config):
        return EigenModel(config)

    def binning(self, model) -> str:
        return "flux_conserving"

    def prepare_gridded(self, model, flux, ivar, zwarn, full: bool = False, meta=None) -> Prepared:
        from ..preprocess import coverage_zwarn

        X = flux_ivar_rows(flux, ivar)
        return Prepared(X=X, zwarn=np.asarray(zwarn, np.int64) | coverage_zwarn(X[:, X.shape[1] // 2:]),
                        survey=survey_names(meta, SURVEYS, len(X)))

    def infer(self, model, X, batch_size: int = 256, backend: str = "auto"):
        X = np.asarray(X)
        if not len(X):
            return np.zeros((0, len(RAW_FIELDS) + model.config.ncomp))
        with torch.inference_mode():
            return np.concatenate([scan(model, X[s:s + batch_size]) for s in range(0, len(X), batch_size)])

    def schema(self, model):
        return [("CHI2", "float64"), ("DELTACHI2", "float64"), ("NPIXELS", "int64"),
                ("COEFF", f"({model.config.ncomp},)float64"), ("RCHI2", "float64"), ("ANOMALY", "float32")]

    def columns(self, model, raw, prepared: Prepared):
        cfg = model.config
        zwarn = np.asarray(prepared["zwarn"], np.int64).copy()
        nodata = nodata_rows(zwarn)
        d = decode(raw, cfg, prepared.get("survey"))
        ok = d["ok"] & ~nodata
        zwarn |= np.where(ok, d["zwarn"], 0)
        zwarn |= anomaly_bits(d["anomaly"], ok, cfg, prepared.get("survey"))
        cols = {"Z": np.where(ok, d["z"], np.nan), "ZERR": np.where(ok, d["zerr"], np.nan),
                "SPECTYPE": np.where(ok, d["spectype"], ""), "SUBTYPE": np.where(ok, d["subtype"], ""),
                "CHI2": np.where(ok, d["chi2"], np.nan), "DELTACHI2": np.where(ok, d["dchi2"], np.nan),
                "NPIXELS": np.where(ok, d["npix"], 0), "COEFF": np.where(ok[:, None], d["coeff"], np.nan),
                "RCHI2": np.where(ok, d["rchi2"], np.nan), "ANOMALY": np.where(ok, d["anomaly"], np.nan).astype(np.float32)}
        return cols, zwarn

    # --- train (solved, not trained: the fit hook) -------------------------------------------
    def labels(self, meta, model=None) -> dict:
        cfg = model.config if model is not None else EigenConfig()
        y = cfg.tax.labels(meta, source="training labels")
        return {"Y": y.astype(np.int64), "Z": np.asarray(meta["Z"], float)}

    def batch(self, model, flux, ivar, labels):
        X = torch.from_numpy(np.concatenate([np.asarray(flux, np.float32), np.asarray(ivar, np.float32)], 1))
        return X, [torch.as_tensor(labels["Y"]), torch.as_tensor(labels["Z"])]

    def eval_step(self, model, X, targets):
        raw = scan(model, X.cpu().numpy())
        return float(np.nanmedian(raw[:, RAW_FIELDS.index("rchi2")])) if len(raw) else 0.0, raw

    def metrics(self, model, raw, labels) -> dict:
        d = decode(raw, model.config)
        y, z = labels["Y"], labels["Z"]
        ok = y >= 0
        idx = model.config.tax.spectype_index()
        dz = np.abs(d["z"] - z) / (1 + z)
        tz = np.array(model.config.tax.spectypes)[np.clip(y, 0, None)]
        out = {"class_acc": float(np.mean(d["cls"][ok] == y[ok])) if ok.any() else float("nan"),
               "spectype_acc": float(np.mean(idx[d["cls"][ok]] == idx[y[ok]])) if ok.any() else float("nan")}
        for t in SPECTYPES:
            m = ok & (tz == t)
            if m.any():
                out[f"mad_{t.lower()}"] = float(np.nanmedian(dz[m]))
        return out

    def fit(self, model, ds, idx, labels, cfg) -> dict:
        return fit_eigen(model, ds, idx, labels, seed=cfg.seed)

    def release(self, model, raw, prepared, meta, min_cell: int = 50):
        """``ZERR`` calibrated per spectral type and per spectral type / survey (cells of at least
        ``min_cell`` spectra typed right; :func:`fit_zerr_cell` on the pulls, curvature errors inflated by
        ``sqrt(RCHI2)``), and the anomaly threshold at ``anomaly_quantile`` of the validation scores, of
        all and of each survey's.

        A validation set with injected anomalies (an ``ANOMALY`` column: the kind, "" for normal spectra;
        ``scripts/eigen_anomalies.py``) also fits the learned anomaly score (:func:`fit_logistic` on
        :func:`anomaly_features`, normal against injected); the errors and thresholds then come from its
        normal spectra only."""
        from ..evaluate.eigen import roc_auc

        cfg = dataclasses.replace(model.config, zerr_scale=None, zerr_floor=None, zerr_rchi2=True)
        surveys = survey_names(meta, SURVEYS, len(meta))
        normal = np.ones(len(meta), bool)
        record = {}
        if "ANOMALY" in meta.colnames:
            kind = np.char.strip(np.asarray(meta["ANOMALY"]).astype(str))
            normal = kind == ""
            full = np.isfinite(np.asarray(raw, float)[:, 0])
            if normal.all() or not normal.any():
                raise RedsiftError("validation ANOMALY column: need both normal ('') and injected rows to fit "
                                   f"the anomaly score ({int(normal.sum())} normal of {len(normal)})")
            X = anomaly_features(raw, len(cfg.tax.classes), surveys)
            cfg = dataclasses.replace(cfg, anomaly_model=fit_logistic(X[full], ~normal[full]))
        d = decode(raw, cfg, surveys)  # with the learned score, when fitted
        if cfg.anomaly_model:
            hand = np.asarray(raw, float)[full, RAW_FIELDS.index("anomaly")]
            record["anomaly_model"] = (f"logistic on {X.shape[1]} features, {int((full & ~normal).sum())} injected "
                                       f"and {int((full & normal).sum())} normal validation spectra; in-sample AUC "
                                       f"{roc_auc(d['anomaly'][full], ~normal[full]):.3f} (hand-made score "
                                       f"{roc_auc(hand, ~normal[full]):.3f})")
        y = cfg.tax.labels(meta, source="validation labels", strict=False)
        z = np.asarray(meta["Z"], float)
        tz = np.array(cfg.tax.spectypes)[np.clip(y, 0, None)]
        right = d["ok"] & (y >= 0) & (d["spectype"] == tz) & normal
        scale, floor, rec = fit_zerr_cells(d["z"], d["zerr"], z, np.where(right, tz, ""), surveys, min_cell,
                                           d["subtype"] if cfg.zerr_by_class else None)
        record.update(rec)
        scored = d["ok"] & np.isfinite(d["anomaly"]) & normal
        thr = float(np.quantile(d["anomaly"][scored], cfg.anomaly_quantile)) if scored.any() else None
        per = {v: float(np.quantile(d["anomaly"][scored & (surveys == v)], cfg.anomaly_quantile))
               for v in SURVEYS if (scored & (surveys == v)).sum() >= min_cell}
        record["anomaly_threshold"] = thr
        record.update({f"anomaly_threshold_{v}": t for v, t in per.items()})
        return {"zerr_scale": scale or None, "zerr_floor": floor or None, "zerr_rchi2": True,
                "anomaly_threshold": thr, "anomaly_survey": per or None, "anomaly_model": cfg.anomaly_model}, record

    def report(self, t, out, header, overrides, truth_path=""):
        from ..evaluate.eigen import eigen_report

        return eigen_report(t, out, header, overrides, truth_path)


def fit_eigen(model, ds, idx, labels, seed: int = 0) -> dict:
    """Learn every class's eigenspectra (:func:`empca`, or :func:`decoder_fit` with ``learn="decoder"``) from
    dataset rows ``idx``; sets ``zranges``."""
    from tqdm import tqdm

    cfg = model.config
    tax = cfg.tax
    y, z = labels["Y"], labels["Z"]
    rng = np.random.default_rng(seed)
    zranges, counts, losses = {}, {}, {}
    for k in tqdm(range(len(tax)), desc="eigenspectra", unit="class"):
        name = tax.classes[k]
        rows = np.asarray(idx)[y[idx] == k]
        rows = rows[np.isfinite(z[rows])]
        counts[name] = int(len(rows))
        if name in cfg.exclude:
            log.info("class %s excluded: no templates", name)
            continue
        if len(rows) < cfg.min_rows:
            log.warning("class %s: %d training spectra, no templates", name, len(rows))
            continue
        if len(rows) > cfg.max_per_class:
            rows = rng.choice(rows, cfg.max_per_class, replace=False)
        rows = np.sort(rows)
        flux, ivar, _ = ds.read(rows)
        F, W = to_rest(flux, ivar, z[rows], cfg.s_max, cfg.rest_npix)
        wsum = W.sum(1)
        norm = np.where(wsum > 0, (W * F).sum(1) / np.where(wsum > 0, wsum, 1), 0)
        keep = norm > 0
        F, W = F[keep] / norm[keep, None], W[keep] * norm[keep, None] ** 2
        cover = (W > 0).sum(0)
        valid = cover >= cfg.min_rows
        cols = np.flatnonzero(valid)
        P = np.zeros((cfg.ncomp, cfg.rest_npix), np.float32)
        if len(cols):
            lo, hi = cols[0], cols[-1] + 1
            Fc, Wc = F[:, lo:hi], W[:, lo:hi] * valid[lo:hi]
            if cfg.learn == "decoder":
                hist = []
                Pc, _ = decoder_fit(Fc, Wc, cfg.ncomp, cfg.dec_epochs, cfg.dec_lr, cfg.dec_batch, cfg.ridge, seed,
                                    history=hist)
                losses[name] = [round(v, 6) for v in hist]
            else:
                Pc, _ = empca(Fc, Wc, cfg.ncomp, cfg.em_iter, cfg.ridge, seed)
            P[:, lo:hi] = Pc * valid[lo:hi]
        with torch.no_grad():
            model.templates[k] = torch.from_numpy(P)
            model.valid[k] = torch.from_numpy(valid.astype(np.float32))
        zk = z[rows]
        if tax.spectypes[k] == "STAR":
            dz = cfg.star_dv / C_KMS
            zranges[name] = [max(cfg.z_min, float(zk.min()) - dz), min(cfg.z_max, float(zk.max()) + dz)]
        else:
            zranges[name] = [max(cfg.z_min, float(zk.min()) - 0.01 * (1 + float(zk.min()))),
                             min(cfg.z_max, float(zk.max()) + 0.01 * (1 + float(zk.max())))]
    model.config = dataclasses.replace(cfg, zranges=zranges)
    model._cache = {}
    return {"train_rows": counts, **({"decoder_loss": losses} if losses else {})}
