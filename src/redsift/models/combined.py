"""The default prediction: the classifier and QuasarNET run together, one catalog.

A ``combined`` model holds a classifier (:mod:`redsift.models.classifier`) and a QuasarNET
(:mod:`redsift.models.quasarnet`) in one directory (one safetensors file, tensors prefixed
``classifier.`` and ``quasarnet.``; ``redsift combine`` builds it from two model directories). Each part
sees the spectrum on its own grid. The combination rule (``rule``, written into every catalog header;
measured in ``docs/classifier.md``):

* ``SPECTYPE``, ``SUBTYPE``, ``PROB_*`` and ``PTYPE_*`` are the classifier's: it sees every class;
  QuasarNET only separates quasars from the rest.
* ``Z`` and ``ZERR``: ``rule = "classifier"`` (the default) takes the classifier's for every spectrum
  (on the simulated held-out sets its quasar redshifts are better than QuasarNET's: dv NMAD 223 against
  492 km/s on BOSS); ``rule = "qn-z"`` takes QuasarNET's line redshift for spectra typed QSO whose lines
  it finds (DESI runs Redrock with QuasarNET's answer as a prior the same way). ``Z_METHOD`` says which
  part gave ``Z``; both answers stay in the catalog (``Z_CLASSIFIER``, ``Z_QUASARNET``).
* ``LOW_CONFIDENCE`` is set where the parts disagree on quasar-or-not (classifier QSO but no line found,
  or QuasarNET's lines found in a spectrum the classifier types STAR or GALAXY), and where the classifier
  is unsure (its own rule). This is the combination's measured gain: among quasars with ``ZWARN == 0``
  the purity rises (BOSS 0.9979 -> 0.9990, DESI 0.9922 -> 0.9943, LAMOST 0.9990 -> 1.0000) for 0.1-2% of
  completeness.
* With an ``eigen`` part (``redsift combine --eigen``), the classifier's answer is a prior: the eigen
  family's chi-square is scanned at native resolution for the classifier's class in a window of
  ``refine_nsigma`` times its ``ZERR`` (at least ``refine_min_px``, at most ``refine_max_px`` pixels of
  69 km/s) around its ``Z``, as DESI runs Redrock with QuasarNET priors; the scan's redshift is adopted
  (``Z_METHOD = "EIGEN"``) unless its minimum sits on the window's edge or its parabola fails, for stars,
  galaxies and quasars below ``refine_qso_zmax`` (1.5): on the simulated validation set the scan's
  quasar redshifts are better than the classifier's below z 1.5 (MAD 7e-5 against 5.5e-4 at z < 0.8) and
  worse above, where blueshifted C IV drives the fit (docs/eigen.md).
* **Chi-square arbitration** (``arbitrate``, chosen at release): for rows whose type and survey have a cell,
  the eigen scan of the answered class over its whole range is compared with the refinement window; where
  its best fit lies beyond the catastrophic limit (``|dz|/(1+z) > 0.01``) from the answer and is better by
  more than the cell's chi-square gain, its redshift replaces the answer (``Z_METHOD = "EIGEN_SCAN"``;
  ``Z_CLASSIFIER`` keeps the classifier's). The release turns on a cell only where the replacements fix
  more validation answers than they break, by more than chance with ``sign_z`` (:func:`clears_sign_test`):
  DESI's galaxies (held-out 2.6% -> 1.4% catastrophic, simulated), not BOSS's (+2 -0 on validation), LAMOST's
  galaxies nor any quasars (docs/classifier.md).
* **The window's fallback** (``scan_fallback``, chosen at release per spectral type): rows whose refinement window
  could not refine the classifier's redshift (its best fit on the window's edge) take the answered class's scan
  over its whole range where usable (``Z_METHOD = "EIGEN_SCAN"``): galaxies in ``redsift-sim`` (+8 -0 on
  validation at 1e-3; docs/eigen.md "The window's fallback").
* **Second-peak arbitration** (``peak_arbitrate``, chosen at release): where the classifier's redshift pdf holds
  at least a cell's ``p2_min`` at a second peak, the answered class's eigen chi-square is scanned in a window
  there and replaces the answer if it fits better by more than the cell's ``gain_min`` (``Z_METHOD =
  "EIGEN_PEAK"``). Turned on where it fixes more validation answers than it breaks, beyond chance: DESI's quasars
  (held-out 7.2% -> 6.2% catastrophic, simulated; LAMOST's +3 -0 on validation broke 3 held-out answers and is
  off since the sign test; docs/classifier.md).
* **Type arbitration** (``type_arbitrate``, chosen at release): rows whose classifier's type probability is
  below the survey's ``p_max`` are scanned over every eigen class; where the scan's type differs and its
  ``DELTACHI2`` reaches the survey's ``dchi2_min``, the scan's type and redshift replace the classifier's
  (``Z_METHOD = "EIGEN_TYPE"``, ``LOW_CONFIDENCE`` set: two methods disagree). The release turns a survey on
  only where the replacements fix more validation answers than they break, beyond chance: DESI (held-out stars
  0.9933 -> 0.9954 typed STAR, simulated; docs/classifier.md).
* **The quasar refinement net** (``redsift combine --zrefine``; :mod:`redsift.models.zrefine`): quasars whose ``Z``
  is still the classifier's at or above ``zrefine_zmin`` (1.5; below it the eigen scan is better) are read again at
  native resolution, rest-framed at the classifier's answer, and the net's redshift is adopted where its offset lies
  within its window (``Z_METHOD = "ZNET"``; ``Z_ZNET`` / ``ZERR_ZNET`` wherever it ran): the classifier's redshift
  head resolves about one pixel of its coarse grid, the eigen scan cannot follow C IV (docs/eigen.md).
* **The BAL decision of both parts** (``bal_mean_threshold``, chosen at release at QuasarNET's operating point):
  a quasar is typed BAL where the mean of the classifier's BAL share and QuasarNET's ``C_BAL`` exceeds it
  (BOSS quasar targets, simulated: 98.0% / 97.0% met, 0.996 / 0.973 as QuasarNET's paper counts BALs).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from ..errors import RedsiftError
from ..grid import LogGrid
from .classifier import ClassifierConfig, ClassifierNet
from .family import Family, Prepared, nodata_rows
from .quasarnet import QuasarNet, QuasarNetConfig
from .registry import config_from_dict, get_family, register_family

__all__ = ["CombinedConfig", "CombinedModel", "CombinedFamily", "combine", "carried_settings"]


@dataclass(frozen=True)
class CombinedConfig:
    """The parts' configs (as dicts, each its family's config) and the combination rule."""

    classifier: dict = field(default_factory=lambda: dataclasses.asdict(ClassifierConfig()))
    quasarnet: dict = field(default_factory=lambda: dataclasses.asdict(QuasarNetConfig()))
    rule: str = "classifier"
    sources: dict = field(default_factory=dict)  # where the parts came from (model names, hashes)
    eigen: dict = field(default_factory=dict)  # the eigen part's config; empty: no refinement
    refine_nsigma: float = 5.0
    refine_min_px: int = 4
    refine_max_px: int = 150
    refine_qso_zmax: float = 1.5  # quasars above: the classifier's Z kept (measured, docs/eigen.md)
    # instead, where chosen at release: the [lo, hi) ranges of the classifier's Z in which quasars take the
    # refinement (the bins where it beat the classifier on validation); None: below refine_qso_zmax
    refine_qso_zbins: list | None = None
    # the consistency gate, where chosen at release: "TYPE" (STAR, GALAXY, QSO, and "QSO>1.5" for quasars
    # refined at or above refine_qso_zmax) -> least |Z_EIGEN - Z_CLASSIFIER| / ZERR_CLASSIFIER at which the
    # refinement is not adopted (the classifier's Z kept: on validation the scan's answers that far from the
    # prior were worse than the classifier's); None: every refinement in the window adopted
    refine_gate: dict | None = None
    # chi-square arbitration: "TYPE/survey" -> least chi-square gain of the answered class's whole-range scan
    # over its refinement window for the scan's redshift to replace the answer (chosen at release; None: off)
    arbitrate: dict | None = None
    # the BAL decision of both parts: a quasar is a BAL where the mean of the classifier's P(BAL) / (P(BAL) +
    # P(QSO)) and QuasarNET's C_BAL exceeds this (chosen at release at QuasarNET's operating point; None: the
    # classifier's own decision)
    bal_mean_threshold: float | None = None
    # the type arbitration: survey -> [p_max, dchi2_min]; rows whose classifier's spectral-type probability is
    # below p_max are scanned over every eigen class, and where the scan's spectral type differs and its
    # DELTACHI2 is at least dchi2_min, the scan's answer replaces the classifier's (chosen at release; None: off)
    type_arbitrate: dict | None = None
    # the second-peak arbitration: "TYPE/survey" -> [p2_min, gain_min]; where the classifier's redshift pdf holds
    # at least p2_min at a second peak, the answered class's eigen chi-square is scanned in a window there and, if
    # it beats the answer's window by more than gain_min, its redshift replaces the answer (chosen at release)
    peak_arbitrate: dict | None = None
    # every row also scanned over every eigen class (the eigen family's full scan, ~1 ms a spectrum): ANOMALY is then
    # the eigen part's learned score (else the refinement window's hand-made score); chosen at release with
    # full_scan=true. With anomaly_flag too, OUT_OF_DISTRIBUTION is set above the eigen part's thresholds (off in
    # redsift-sim: on real spectra it fires on 1-10% of library stars, docs/eigen.md)
    full_scan: bool = False
    anomaly_flag: bool = False
    # ZERR where the classifier gives Z (Z_METHOD = CLASSIFIER): ZERR / (1 + z) = sqrt((k e)^2 + f^2), e the
    # classifier's ZERR / (1 + z), k and f per "TYPE" or "TYPE/survey" (chosen at release on the rows where the
    # default uses the classifier's Z; None: the classifier's ZERR as it is)
    zerr_scale: dict | None = None
    zerr_floor: dict | None = None
    # the refinement's ZERR cells split by the classifier's S/N (SNR_MODEL) at these edges (chosen at release with
    # zerr_snr=true: within one class the curvature error over-covers faint spectra and under-covers bright ones)
    zerr_snr_edges: list | None = None
    # the quasar refinement net's config (redsift combine --zrefine; empty: none): quasars whose Z is still the
    # classifier's (Z_METHOD = CLASSIFIER) at or above zrefine_zmin take the net's answer around it (Z_METHOD =
    # "ZNET") where its offset lies within its window (docs/eigen.md "A refinement net for quasars")
    zrefine: dict = field(default_factory=dict)
    zrefine_zmin: float = 1.5
    # the window's fallback: spectral types ("GALAXY", "QSO") whose rows the refinement window could not refine (its
    # best fit on the window's edge: the answer beyond it) take the answered class's scan over its whole range where
    # that fit is usable (Z_METHOD = "EIGEN_SCAN"; quasars below refine_qso_zmax only); chosen at release with
    # scan_fallback=true where it fixes more validation answers than it breaks (None: off)
    scan_fallback: list | None = None
    # SMALL_DELTA_CHI2 in the default below this DELTACHI2 of its answer: one value for every row, or per "TYPE/survey"
    # of the answer (chosen at release with dchi2_flag=true, :func:`choose_dchi2_flag`; None: DELTACHI2 written, no
    # bit). With full_scan, every answer's DELTACHI2 is the chi-square gain of the best fit of any class more than
    # dv_exclude away over the answer's own class near its Z (:meth:`CombinedFamily._answer_fit`)
    dchi2_flag: float | dict | None = None
    # NO_SIGNAL below this chi-square gain of the answer's fit over no object at all (F - ntot - (chi2 - npix): pure
    # noise gains ~10-60, a spectrum with an object hundreds); set at release with no_signal=true (None: no bit)
    signal_min: float | None = None

    def __post_init__(self):
        if self.rule not in ("qn-z", "classifier"):
            raise RedsiftError(f"CombinedConfig: unknown rule {self.rule!r} (qn-z, classifier)")

    @property
    def logrid(self) -> LogGrid:
        return LogGrid.boss()

    def decisions(self) -> dict:
        """Flat (FITS header cards): the rule, the classifier's decisions, QuasarNET's (``zerr`` of each
        part as ``zerr_cls`` / ``zerr_qn``)."""
        c, q = CombinedModel.part_configs(self)
        out = {"rule": self.rule}
        for key, value in c.decisions().items():
            out["zerr_cls" if key == "zerr" else key] = value
        if self.zerr_scale or self.zerr_floor:
            out["zerr_cls"] = f"{out.get('zerr_cls', '')}; recalibrated where Z_METHOD=CLASSIFIER (scale, floor)"
        for key, value in q.decisions().items():
            out["zerr_qn" if key == "zerr" else key] = value
        if self.eigen:
            from .eigen import EigenConfig

            e = config_from_dict(EigenConfig, self.eigen)
            qso = f"z < {self.refine_qso_zmax}" if self.refine_qso_zbins is None else f"z in {_zbins_text(self.refine_qso_zbins)}"
            out.update({"refine": f"eigen K={e.ncomp}, +-{self.refine_nsigma} ZERR ({self.refine_min_px}-"
                                  f"{self.refine_max_px} px), QSO {qso}",
                        "zerr_eig": e.decisions()["zerr"]})
            if self.refine_gate:
                out["refine_gate"] = ", ".join(f"{k} {v:g}" for k, v in sorted(self.refine_gate.items()))
            if self.arbitrate:
                out["arbitrate"] = ", ".join(f"{k} {v:g}" for k, v in sorted(self.arbitrate.items()))
            if self.zerr_snr_edges:
                out["zerr_eig"] = f"{out['zerr_eig']}; galaxy and quasar cells by SNR_MODEL at " + \
                    ", ".join(f"{e:g}" for e in self.zerr_snr_edges)
            if self.full_scan:
                out["anomaly"] = "full eigen scan of every row: learned score" + \
                    (", OUT_OF_DISTRIBUTION above its thresholds" if self.anomaly_flag else "; no OUT_OF_DISTRIBUTION bit")
            if self.peak_arbitrate:
                out["peak_arbitrate"] = ", ".join(f"{k} P2>={p:g} gain>{g:g}"
                                                  for k, (p, g) in sorted(self.peak_arbitrate.items()))
            if self.type_arbitrate:
                out["type_arbitrate"] = ", ".join(f"{k} P<{p:g} dchi2>={d:g}"
                                                  for k, (p, d) in sorted(self.type_arbitrate.items()))
            if self.scan_fallback:
                out["scan_fallback"] = "unrefined " + ", ".join(self.scan_fallback) + ": the class's whole-range scan"
            if self.signal_min is not None:
                out["no_signal"] = f"NO_SIGNAL where the answer's chi-square gain over no object < {self.signal_min:g}"
            if self.full_scan:
                f = self.dchi2_flag
                out["dchi2"] = "answer vs the full scan's best elsewhere" + (
                    "; no bit" if f is None else f", SMALL_DELTA_CHI2 below {f:g}" if isinstance(f, numbers.Real)
                    else ", SMALL_DELTA_CHI2 " + ", ".join(f"{k} < {v:g}" for k, v in sorted(f.items())))
        if self.zrefine:
            from .zrefine import ZRefineConfig

            zr = config_from_dict(ZRefineConfig, self.zrefine)
            out["zrefine"] = f"QSO z >= {self.zrefine_zmin:g} where Z_METHOD=CLASSIFIER: {zr.decisions()['zrefine']}"
            out["zerr_zr"] = zr.decisions()["zerr_zr"]
        if self.bal_mean_threshold is not None:
            out["bal_rule"] = f"mean(P_BAL share, C_BAL) > {self.bal_mean_threshold:g}"
        return out


def _zbins_text(bins) -> str:
    """``[lo, hi), ...`` of redshift ranges (headers and release records)."""
    return ", ".join(f"[{a:g}, {b:g})" for a, b in bins)


#: Bins of the classifier's quasar redshift in which the release compares the refinement with the classifier
QSO_ZBIN_EDGES = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 7.0)

#: The S/N edges (the classifier's SNR_MODEL) at which ``zerr_snr=True`` splits the refinement's ZERR cells
ZERR_SNR_EDGES = (4.0, 8.0, 16.0, 32.0)

#: The combined config's fields a release chooses (cleared while it chooses them, always written by it)
RELEASE_DECISIONS = ("refine_qso_zbins", "refine_gate", "arbitrate", "bal_mean_threshold", "peak_arbitrate",
                     "type_arbitrate", "zerr_scale", "zerr_floor", "zerr_snr_edges", "full_scan",
                     "anomaly_flag", "scan_fallback", "dchi2_flag", "signal_min")

#: The (p2_min, gain_min) pairs the release tries for the second-peak arbitration, per type / survey
PEAK_GRID = tuple((p, g) for p in (0.001, 0.01, 0.03, 0.1) for g in (0.0, 10.0, 25.0, 50.0, 100.0))

#: The (p_max, dchi2_min) pairs the release tries for the type arbitration, per survey
TYPE_GRID = tuple((p, d) for p in (0.6, 0.7, 0.8, 0.9, 0.95, 0.99) for d in (0.0, 9.0, 25.0))

#: The disagreements |Z_EIGEN - Z_CLASSIFIER| / ZERR_CLASSIFIER at which the release tries the consistency gate
GATE_GRID = (2.0, 2.5, 3.0, 4.0)

#: The coverage bands of ``ZERR`` (within 1 and 1.96 ZERR) that ``zerr_bands=True`` aims a release's cells at
ZERR_BANDS = ((0.65, 0.71), (0.93, 0.97))


class CombinedModel(nn.Module):
    """A classifier and a QuasarNET as one module (see the module docstring)."""

    def __init__(self, config: CombinedConfig | None = None):
        super().__init__()
        self.config = config = config or CombinedConfig()
        self.family = "combined"
        cc, qc = self.part_configs(config)
        self.classifier = ClassifierNet(cc)
        self.classifier.family = "classifier"
        self.quasarnet = QuasarNet(qc)
        self.quasarnet.family = "quasarnet"
        if config.eigen:
            from .eigen import EigenConfig, EigenModel

            self.eigen = EigenModel(config_from_dict(EigenConfig, config.eigen))
        else:
            self.eigen = None
        if config.zrefine:
            from .zrefine import ZRefineConfig, ZRefineNet

            self.zrefine = ZRefineNet(config_from_dict(ZRefineConfig, config.zrefine))
        else:
            self.zrefine = None

    @staticmethod
    def part_configs(config: CombinedConfig):
        return config_from_dict(ClassifierConfig, config.classifier), config_from_dict(QuasarNetConfig, config.quasarnet)


def combine(classifier, quasarnet, rule: str = "classifier", eigen=None, zrefine=None, sources=None) -> CombinedModel:
    """A combined model from loaded models (their weights are copied); ``eigen`` optional (refinement), ``zrefine``
    optional (the quasar refinement net); ``sources``: where parts came from, when not the models' own record
    (parts taken from another combined model). The release decisions start unset (``redsift release`` chooses
    them with every part in place)."""
    if getattr(classifier, "family", "") != "classifier" or getattr(quasarnet, "family", "") != "quasarnet":
        raise RedsiftError("combine: needs a classifier model and a QuasarNET model")
    if eigen is not None and getattr(eigen, "family", "") != "eigen":
        raise RedsiftError("combine: --eigen needs an eigen model")
    if zrefine is not None and getattr(zrefine, "family", "") != "zrefine":
        raise RedsiftError("combine: --zrefine needs a zrefine model")
    if zrefine is not None and eigen is not None and zrefine.config.logrid != LogGrid.boss():
        # (both read the eigen part's native rows, on the BOSS grid)
        raise RedsiftError(f"combine: the zrefine model reads the {zrefine.config.grid!r} grid; with an eigen part it "
                           f"must read BOSS's")
    parts = ({"classifier": classifier, "quasarnet": quasarnet} | ({"eigen": eigen} if eigen is not None else {})
             | ({"zrefine": zrefine} if zrefine is not None else {}))
    found = {n: {"source": getattr(m, "source", ""), "sha256": getattr(m, "weights_sha256", "")} for n, m in parts.items()}
    sources = {n: (sources or {}).get(n) or found[n] for n in parts}
    cfg = CombinedConfig(dataclasses.asdict(classifier.config), dataclasses.asdict(quasarnet.config), rule, sources,
                         dataclasses.asdict(eigen.config) if eigen is not None else {},
                         zrefine=dataclasses.asdict(zrefine.config) if zrefine is not None else {})
    if eigen is not None:
        missing = sorted(set(classifier.config.tax.classes) - set(eigen.config.tax.classes))
        if missing:
            raise RedsiftError(f"combine: the eigen model has no templates for the classifier's classes {', '.join(missing)}")
    model = CombinedModel(cfg)
    model.classifier.load_state_dict(classifier.state_dict())
    model.quasarnet.load_state_dict(quasarnet.state_dict())
    if eigen is not None:
        model.eigen.load_state_dict(eigen.state_dict())
    if zrefine is not None:
        model.zrefine.load_state_dict(zrefine.state_dict())
    return model.eval()


def carried_settings(base: CombinedConfig, new: CombinedConfig) -> CombinedConfig:
    """``new`` with ``base``'s own settings (the refinement window, ``refine_qso_zmax``, ``zrefine_zmin``, ...): every
    field but the parts, their sources, the rule (given anew) and the release decisions (chosen again by a release
    with every part in place: :data:`RELEASE_DECISIONS`)."""
    skip = {"classifier", "quasarnet", "eigen", "zrefine", "sources", "rule", *RELEASE_DECISIONS}
    keep = {f.name: getattr(base, f.name) for f in dataclasses.fields(CombinedConfig) if f.name not in skip}
    return dataclasses.replace(new, **keep)


#: the spectral types whose redshifts the chi-square arbitration may replace (stars: +-1,000 km/s, nothing to arbitrate)
ARBITRATE_TYPES = ("GALAXY", "QSO")
#: the thresholds (chi-square gain) the release tries per cell
ARBITRATE_GRID = (0.0, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0)


def clears_sign_test(fixed: int, broken: int, sign_z: float = 0.0) -> bool:
    """Whether replacements that fix ``fixed`` answers and break ``broken`` are worth turning on: a positive net,
    and with ``sign_z > 0`` a net of at least ``sign_z`` standard deviations of the sign test (under the null
    hypothesis that a replacement is as likely to break an answer as to fix it, ``fixed - broken`` has mean 0
    and variance ``fixed + broken``; ``sign_z = 2``: one-sided p ~ 0.02 for large counts, a normal approximation
    that is lenient for the few: +4 -0 passes with an exact one-sided p of 1/16, +3 -0 does not). Used by the
    release's choosers, where a cell chosen on a handful of validation rows (+3 -0) did not carry to held-out
    spectra (docs/classifier.md, "Cells turned on by a handful of rows")."""
    net = fixed - broken
    return net > 0 and net >= sign_z * float(np.sqrt(fixed + broken))


#: Redrock's SMALL_DELTA_CHI2 limit, the one the default's flag is tried at
DCHI2_LIMIT = 9.0
#: NO_SIGNAL's limit on the answer's chi-square gain over no object: pure Gaussian noise with each survey's own
#: inverse variances gained at most 57 over 900 spectra (`scripts/noise_check.py`-style, simulated), right validation
#: answers gain 200 and more but for two of 12,000 (docs/classifier.md, "Pure noise"); fixed, not fitted
SIGNAL_MIN = 100.0
#: the most of a survey's right validation answers NO_SIGNAL may take for the release to keep it
SIGNAL_MAX_LOSS = 0.001


def choose_dchi2_flag(dchi2, zwarn, right, spectype, surveys, limit: float = DCHI2_LIMIT, ratio: float = 5.0,
                      max_loss: float = 0.02, min_wrong: int = 5) -> tuple[dict, dict]:
    """The cells (``"TYPE/survey"`` of the answer) in which the default sets ``SMALL_DELTA_CHI2`` below ``limit``,
    chosen on validation rows as the release deploys them: a cell is on where the rows the bit would newly take
    from ``ZWARN == 0`` hold wrong answers (``right`` False) at least ``ratio`` times as often as the rows left
    there, at least ``min_wrong`` of them (a cell not turned on by a handful of rows), and cost no more than
    ``max_loss`` of the cell's right answers at ``ZWARN == 0``. The rule was fixed before its first result (a bit
    on every row failed it: right quasars by the hundred, docs/classifier.md "DELTACHI2 for every answer").
    Returns ``(cells, record)``."""
    d = np.nan_to_num(np.asarray(dchi2, float), nan=np.inf)
    clean = np.asarray(zwarn) == 0
    right = np.asarray(right, bool)
    types = np.char.strip(np.asarray(spectype).astype(str))
    surveys = np.asarray(surveys).astype(str)
    cells, record = {}, {}
    for key in sorted({f"{t}/{v}" for t, v in zip(types, surveys) if t}):
        t, v = key.split("/")
        cell = clean & (types == t) & (surveys == v)
        new = cell & (d < limit)
        kept = cell & ~new
        wrong_new, wrong_kept = int((new & ~right).sum()), int((kept & ~right).sum())
        rate_new = wrong_new / max(int(new.sum()), 1)
        rate_kept = wrong_kept / max(int(kept.sum()), 1)
        loss = int((new & right).sum()) / max(int((cell & right).sum()), 1)
        on = wrong_new >= min_wrong and rate_new >= ratio * rate_kept and loss <= max_loss
        record[f"dchi2_flag_{key}"] = (f"{'on' if on else 'off'}: DELTACHI2 < {limit:g} takes ZWARN 0 from {int(new.sum())} "
                                       f"of {int(cell.sum())}, {wrong_new} wrong ({rate_new:.3f} against {rate_kept:.4f} "
                                       f"left), {loss:.3f} of the right answers")
        if on:
            cells[key] = float(limit)
    return cells, record


def choose_arbitration(wraw, fraw, z, ztrue, spectype, surveys, grid=ARBITRATE_GRID,
                       sign_z: float = 0.0) -> tuple[dict, dict]:
    """The arbitration's threshold per ``TYPE/survey`` cell (:meth:`CombinedFamily._arbitrate`), chosen on
    validation rows (``spectype``: the type of rows typed right, '' to leave a row out): the threshold whose
    replacements fix the most catastrophic answers (``|dz|/(1+z) > 0.01``) net of those they make, the largest
    such threshold on a tie; no cell where no threshold has a positive net (:func:`clears_sign_test` with
    ``sign_z``). Returns the cells and a record."""
    from .family import SURVEYS

    gain, zf, far = CombinedFamily.arbitration(wraw, fraw, np.asarray(z, float))
    z, ztrue = np.asarray(z, float), np.asarray(ztrue, float)
    with np.errstate(invalid="ignore"):
        bad0 = np.abs(z - ztrue) / (1 + ztrue) > 0.01
        bad1 = np.abs(zf - ztrue) / (1 + ztrue) > 0.01
    spectype, surveys = np.asarray(spectype).astype(str), np.asarray(surveys).astype(str)
    cells, record = {}, {}
    for t in ARBITRATE_TYPES:
        for v in SURVEYS:
            m = (spectype == t) & (surveys == v) & far
            if not (spectype[surveys == v] == t).any():
                continue
            best, tried = None, []
            for T in grid:
                rep = m & (gain > T)
                fixed, broken = int((rep & bad0 & ~bad1).sum()), int((rep & ~bad0 & bad1).sum())
                tried.append(f"{T:g}: +{fixed} -{broken}")
                if clears_sign_test(fixed, broken, sign_z) and (best is None or fixed - broken >= best[1]):
                    best = (T, fixed - broken)
            if best is not None:
                cells[f"{t}/{v}"] = float(best[0])
            n = int(((spectype == t) & (surveys == v)).sum())
            record[f"arbitrate_{t}/{v}"] = (f"{'threshold %g' % best[0] if best else 'off'} (n {n}, "
                                            f"catastrophic {int((bad0 & (spectype == t) & (surveys == v)).sum())}; "
                                            + ", ".join(tried) + ")")
    return cells, record


@register_family
class CombinedFamily(Family):
    """Classifier + QuasarNET: every class, and QuasarNET's line redshifts for quasars."""

    name = "combined"
    config_cls = CombinedConfig
    description = "classifier + QuasarNET together (the default prediction)"
    container = True  # its parts run through the backend each would use alone

    def build(self, config):
        return CombinedModel(config)

    def binning(self, model) -> str:
        return "flux_conserving"

    @staticmethod
    def _fams():
        return get_family("classifier"), get_family("quasarnet")

    def prepare(self, model, spectra) -> Prepared:
        fc, fq = self._fams()
        pc = fc.prepare(model.classifier, spectra)
        pq = fq.prepare(model.quasarnet, spectra)
        pe = None  # the native flux + ivar both refinements read (the eigen part's rows when it has one)
        if model.eigen is not None:
            pe = get_family("eigen").prepare(model.eigen, spectra)
        elif model.zrefine is not None:
            pe = self._native(model.zrefine, spectra)
        return self._merge(pc, pq, pe)

    @staticmethod
    def _native(net, spectra) -> Prepared:
        """flux + ivar on the refinement net's native grid (a combined model without an eigen part)."""
        from ..preprocess import to_grid
        from .family import flux_ivar_rows

        b = to_grid(spectra, net.config.logrid, "flux_conserving")
        X = flux_ivar_rows(b.flux, b.ivar)  # (as the eigen part's rows)
        return Prepared(X=X, zwarn=np.zeros(len(X), np.int64))

    def prepare_gridded(self, model, flux, ivar, zwarn, full: bool = False, meta=None) -> Prepared:
        from ..spectra import Spectra

        m = meta.copy() if meta is not None else None
        if m is not None:
            m["ZWARN"] = np.asarray(zwarn, np.int64)
        return self.prepare(model, Spectra(LogGrid.boss().wave, flux, ivar, None, m))

    @staticmethod
    def _merge(pc: Prepared, pq: Prepared, pe: Prepared | None = None) -> Prepared:
        n = pc.nrows
        Xq = np.asarray(pq["X"], np.float32).reshape(n, -1)
        out = Prepared(X=np.concatenate([pc["X"], Xq], 1), zwarn=pc["zwarn"], zwarn_qn=pq["zwarn"],
                       snr=pc["snr"], snr_qn=np.asarray(pq["snr"], np.float32), survey=pc["survey"])
        if pe is not None:  # the native flux + ivar, scanned (eigen) or read (zrefine) in columns() around the prior
            out["X_eig"] = np.asarray(pe["X"], np.float32)
        return out

    def infer(self, model, X, batch_size: int = 1024, backend: str = "auto"):
        from ..predict.backend import infer

        X = np.asarray(X)
        Xc, Xq = X[:, :model.classifier.n_inputs], X[:, model.classifier.n_inputs:]
        # each part through the backend it would run alone (QuasarNET: ONNX Runtime when installed)
        rc = infer(model.classifier, np.ascontiguousarray(Xc), batch_size, backend)
        rq = infer(model.quasarnet, np.ascontiguousarray(Xq), batch_size, backend)
        n = len(X)
        return np.concatenate([rc.reshape(n, -1), rq.reshape(n, -1)], 1)

    def schema(self, model) -> list[tuple[str, str]]:
        fc, fq = self._fams()
        eig = ([("Z_EIGEN", "float64"), ("ZERR_EIGEN", "float64")]
               + get_family("eigen").schema(model.eigen)) if model.eigen is not None else []
        zr = [("Z_ZNET", "float64"), ("ZERR_ZNET", "float64")] if model.zrefine is not None else []
        return (fc.schema(model.classifier) + fq.schema(model.quasarnet)
                + [("Z_CLASSIFIER", "float64"), ("ZERR_CLASSIFIER", "float64"), ("Z_QUASARNET", "float64"),
                   ("ZERR_QUASARNET", "float64"), ("Z_METHOD", "U10")] + eig + zr)

    def columns(self, model, raw, prepared: Prepared) -> tuple[dict, np.ndarray]:
        cols, zwarn, _ = self._columns(model, raw, prepared)
        return cols, zwarn

    def _columns(self, model, raw, prepared: Prepared, wraw=None) -> tuple[dict, np.ndarray, np.ndarray | None]:
        """:meth:`columns` and the refinement windows' raw eigen rows (None without an eigen part); ``wraw``:
        those rows from an earlier call with the same classifier answers (not scanned again)."""
        from ..zwarning import ZWarningMask

        fc, fq = self._fams()
        n = prepared.nrows
        k = len(model.classifier.config.tax) + model.classifier.config.n_z
        cfg_q = model.quasarnet.config
        raw = np.asarray(raw).reshape(n, -1)
        X = np.asarray(prepared["X"])
        Xc, Xq = X[:, :model.classifier.n_inputs], X[:, model.classifier.n_inputs:]
        cc, zc = fc.columns(model.classifier, raw[:, :k], Prepared(X=Xc, zwarn=prepared["zwarn"], snr=prepared["snr"],
                                                                     survey=prepared["survey"]))
        cq, _ = fq.columns(model.quasarnet, raw[:, k:].reshape(n, cfg_q.nfinders, 2 * cfg_q.nboxes),
                           Prepared(X=Xq, zwarn=prepared["zwarn_qn"], snr=prepared["snr_qn"]))
        nodata = nodata_rows(zc)
        if model.config.bal_mean_threshold is not None:
            self._bal_decision(model, raw[:, :len(model.classifier.config.tax)], cc, cq, model.config.bal_mean_threshold)
        is_q = cc["SPECTYPE"] == "QSO"
        found = np.asarray(cq["IS_QSO"], bool)
        use_qn = is_q & found & (model.config.rule == "qn-z")
        cols = dict(cc)
        for key in cq:
            if key not in ("Z", "ZERR", "SPECTYPE", "SUBTYPE"):
                cols[key] = cq[key]
        cols["Z_CLASSIFIER"], cols["ZERR_CLASSIFIER"] = cc["Z"], cc["ZERR"]
        cols["Z_QUASARNET"], cols["ZERR_QUASARNET"] = cq["Z"], cq["ZERR"]
        cols["Z"] = np.where(use_qn, cq["Z"], cc["Z"])
        cols["ZERR"] = np.where(use_qn, cq["ZERR"], cc["ZERR"])
        cols["Z_METHOD"] = np.where(nodata, "", np.where(use_qn, "QUASARNET", "CLASSIFIER"))
        disagree = ((is_q & ~found) | (~is_q & found)) & ~nodata
        zwarn = zc | np.where(disagree, int(ZWarningMask.LOW_CONFIDENCE), 0)
        if model.eigen is not None:
            outside, wraw = self._refine(model, cc, cols, prepared, nodata, wraw)
            if model.config.arbitrate:
                outside &= ~self._arbitrate(model, cc, cols, prepared, nodata, wraw, model.config.arbitrate)
            if model.config.peak_arbitrate:
                zl = raw[:, len(model.classifier.config.tax):k]
                outside &= ~self._peak_arbitrate(model, cols, prepared, nodata, wraw, zl, model.config.peak_arbitrate)
            fraw = None
            if model.config.full_scan:
                fraw = self._type_scan(model, prepared, ~nodata)
                ood = self._anomaly(model, cols, prepared, nodata, fraw)
                if model.config.anomaly_flag:
                    zwarn = zwarn | ood
            if model.config.type_arbitrate:
                typed = self._type_arbitrate(model, cols, prepared, nodata, model.config.type_arbitrate, fraw)
                outside &= ~typed
                # two methods disagree on the type: the answer goes to visual inspection
                zwarn = zwarn | np.where(typed, int(ZWarningMask.LOW_CONFIDENCE), 0)
            if model.config.scan_fallback:
                self._scan_fallback(model, cc, cols, prepared,
                                    self._fallback_rows(model, cols, nodata | outside, model.config.scan_fallback))
            # the type's redshift lies outside what its templates were learnt on (a GALAXY at z 3): the
            # answer is beyond the models' range, whatever the classifier's confidence
            zwarn = zwarn | np.where(outside, int(ZWarningMask.Z_FITLIMIT), 0)
        if model.zrefine is not None:
            self._znet(model, cols, prepared, nodata)
        if model.eigen is not None and fraw is not None:
            dchi2, ans = self._answer_fit(model, cols, prepared, nodata, wraw, fraw)
            cols["DELTACHI2"] = dchi2
            if model.config.signal_min is not None:
                with np.errstate(invalid="ignore"):
                    quiet = self.signal_gain(prepared["X_eig"], ans) < model.config.signal_min
                zwarn = zwarn | np.where(quiet & ~nodata, int(ZWarningMask.NO_SIGNAL), 0)
            limit = self._dchi2_limits(model.config.dchi2_flag, cols["SPECTYPE"], prepared["survey"])
            if limit is not None:
                with np.errstate(invalid="ignore"):
                    small = dchi2 < limit
                zwarn = zwarn | np.where(small, int(ZWarningMask.SMALL_DELTA_CHI2), 0)
        if model.config.zerr_scale or model.config.zerr_floor:
            cols["ZERR"] = self._classifier_zerr(model.config, cols, prepared["survey"])
        return cols, zwarn, wraw

    @staticmethod
    def _dchi2_limits(flag, spectype, surveys) -> np.ndarray | None:
        """Each row's ``SMALL_DELTA_CHI2`` limit (``dchi2_flag``: one value, or per ``"TYPE/survey"``; NaN where no
        cell: no bit), None without a flag."""
        if flag is None:
            return None
        n = len(spectype)
        if isinstance(flag, numbers.Real):
            return np.full(n, float(flag))
        types = np.char.strip(np.asarray(spectype).astype(str))
        return np.array([flag.get(f"{t}/{v}", np.nan) for t, v in zip(types, np.asarray(surveys).astype(str))], float)

    @staticmethod
    def signal_gain(X, ans) -> np.ndarray:
        """The answer's chi-square gain over no object at all: ``F - ntot - ans``, ``F`` the chi-square of a zero
        spectrum over the ``ntot`` good pixels of each row of ``X`` (flux then ivar, :func:`flux_ivar_rows`) and ``ans``
        the answer's comparison value (:meth:`_answer_fit`: ``chi2 - npix``, so pixels the fit leaves out count one
        each). Pure noise gains what fitting K templates at the best of many redshifts buys (~10-60, simulated);
        a spectrum with an object hundreds and more (docs/classifier.md, "Pure noise")."""
        X = np.asarray(X)
        npix = X.shape[1] // 2
        f, iv = X[:, :npix].astype(np.float64), X[:, npix:].astype(np.float64)
        good = iv > 0
        F = np.where(good, iv * f * f, 0.0).sum(1)
        return F - good.sum(1) - np.asarray(ans, float)

    @staticmethod
    def _answer_fit(model, cols, prepared, nodata, wraw, fraw) -> tuple[np.ndarray, np.ndarray]:
        """``DELTACHI2`` of the default's answer, as Redrock defines it for its own (``redrock.zfind``): the chi-square
        of the best fit at a redshift more than the eigen part's ``dv_exclude`` (1,000 km/s) away, any class, minus
        the chi-square of the answer's class at its ``Z``; trials compared as the scan compares them (``chi2`` plus
        the pixels a trial leaves unmodelled).

        The answer's chi-square: its refinement window's where ``Z`` is the window's (``Z_METHOD = EIGEN``) or where
        that window, of the answer's class, found a minimum (not on its edge) within ``dv_exclude`` of ``Z`` (the net's
        answers near the classifier's), else the best native fit of the answer's class within ``dv_exclude`` of ``Z`` (a window
        of that half-width: the classifier's, QuasarNET's or the net's redshift is not an eigen minimum, and the fit
        nearest it is that solution's chi-square). The alternative: of the full scan's two refined minima (``fraw``:
        every class over its whole range; the second lies ``dv_exclude`` from the first), the best one more than
        ``dv_exclude`` from ``Z``. NaN where either is not measured (no data, a class without templates, both minima near ``Z``).
        Negative where another redshift fits better than the answer: the networks chose against the chi-square
        (the real one-line DESI spectrum in docs/classifier_real.md). Returns it and the answer's comparison value
        (``chi2 - npix``; NaN where not measured)."""
        import torch

        from ..constants import C_KMS
        from ..zwarning import ZWarningMask
        from .eigen import RAW_FIELDS, D, scan_window

        ecfg = model.eigen.config
        i = {n: RAW_FIELDS.index(n) for n in ("cls", "s", "dchi2", "s2_int", "zwarn")}
        n = len(nodata)
        z = np.asarray(cols["Z"], float)
        s = np.log10(1 + np.where(np.isfinite(z) & (z > -1), z, 0.0)) / D
        names = list(ecfg.tax.classes)
        cls = np.array([names.index(b) if b in names else -1 for b in np.asarray(cols["CLASS_BEST"]).astype(str)])
        method = np.asarray(cols["Z_METHOD"]).astype(str)
        near = int(math.ceil(math.log10(1 + ecfg.dv_exclude / C_KMS) / D))
        ans = np.full(n, np.nan)
        # Z is the window's vertex, or the window (the answer's class) found its best fit within dv_exclude of Z: its
        # chi-square (the window around the classifier's redshift holds the net's answer near it: no second scan)
        edge = int(ZWarningMask.Z_FITLIMIT | ZWarningMask.BAD_MINFIT)  # a window's edge is no minimum
        with np.errstate(invalid="ignore"):
            inner = (np.nan_to_num(wraw[:, i["zwarn"]], nan=edge).astype(np.int64) & edge) == 0
            own = (method == "EIGEN") | ((wraw[:, i["cls"]] == cls) & (np.abs(wraw[:, i["s"]] - s) <= near) & inner)
        ans[own] = CombinedFamily.fit_value(wraw[own])
        run = ~own & ~nodata & (cls >= 0) & np.isfinite(z) & (z > -1)
        if run.any():
            with torch.inference_mode():
                ans[run] = CombinedFamily.fit_value(scan_window(model.eigen, prepared["X_eig"][run], cls[run], z[run],
                                                                np.full(int(run.sum()), near)))
        c1 = CombinedFamily.fit_value(fraw)
        far1 = np.abs(fraw[:, i["s"]] - s) > near
        far2 = np.abs(fraw[:, i["s2_int"]] - s) > near
        with np.errstate(invalid="ignore"):
            alt = np.where(far1, c1, np.where(far2, c1 + fraw[:, i["dchi2"]], np.nan))
            out = alt - ans
        return np.where(np.isfinite(out) & ~nodata, out, np.nan), np.where(~nodata, ans, np.nan)

    @staticmethod
    def _znet(model, cols, prepared, nodata):
        """The quasar refinement net around the classifier's answer (``redsift.models.zrefine``): quasars whose
        ``Z`` is still the classifier's, at or above ``zrefine_zmin``, take the net's answer where its offset lies
        within the net's window (``Z_METHOD = "ZNET"``); ``Z_ZNET`` / ``ZERR_ZNET`` hold it wherever it ran."""
        from .zrefine import refine

        z0 = np.asarray(cols["Z"], float)
        run = (~nodata & (np.char.strip(np.asarray(cols["SPECTYPE"]).astype(str)) == "QSO")
               & (np.asarray(cols["Z_METHOD"]).astype(str) == "CLASSIFIER") & np.isfinite(z0)
               & (z0 >= model.config.zrefine_zmin))
        cols["Z_ZNET"] = np.full(len(z0), np.nan)
        cols["ZERR_ZNET"] = np.full(len(z0), np.nan)
        if not run.any():
            return
        r = refine(model.zrefine, prepared["X_eig"][run], z0[run], np.asarray(prepared["survey"])[run])
        rows = np.flatnonzero(run)
        cols["Z_ZNET"][rows], cols["ZERR_ZNET"][rows] = r["z"], r["zerr"]
        take = rows[r["ok"]]
        for key, src in (("Z", r["z"]), ("ZERR", r["zerr"])):
            cols[key] = np.asarray(cols[key], float).copy()
            cols[key][take] = src[r["ok"]]
        cols["Z_METHOD"] = np.asarray(cols["Z_METHOD"]).astype("U10").copy()
        cols["Z_METHOD"][take] = "ZNET"

    @staticmethod
    def _znet_snr_cells(edges, meth, snr):
        """The refinement net's rows' S/N cells (``"ZNET@2"``: bin 2 of ``edges`` in the classifier's ``SNR_MODEL``;
        '' elsewhere), or None without edges: faint and bright quasars' errors differ in shape, not only in size
        (DESI's faint ones, simulated: 68% / 95% coverage 0.71 / 0.88 where the brighter are over-covered)."""
        if not edges or snr is None:
            return None
        b = np.digitize(np.nan_to_num(np.asarray(snr, float), nan=0.0), edges)
        return np.where(np.asarray(meth).astype(str) == "ZNET", np.char.add("ZNET@", b.astype(str)), "")

    @staticmethod
    def _classifier_zerr(cfg, cols, surveys) -> np.ndarray:
        """``ZERR`` of the rows whose ``Z`` is the classifier's, recalibrated with the release's cells
        (``ZERR_CLASSIFIER`` keeps the classifier's own, and the refinement windows are drawn from it), and of the
        rows the refinement net gave (cells ``"ZNET"``, ``"ZNET/survey"``: its own calibration was made at priors
        drawn in training, not at the classifier's answers)."""
        from .family import cell_values

        z = np.asarray(cols["Z"], float)
        meth = np.asarray(cols["Z_METHOD"]).astype(str)
        key = np.where(meth == "ZNET", "ZNET", np.char.strip(np.asarray(cols["SPECTYPE"]).astype(str)))
        sub = CombinedFamily._znet_snr_cells(cfg.zerr_snr_edges, meth, cols.get("SNR_MODEL"))
        k = cell_values(cfg.zerr_scale, key, surveys, 1.0, classes=sub)
        f = cell_values(cfg.zerr_floor, key, surveys, 0.0, classes=sub)
        new = np.hypot(k * np.asarray(cols["ZERR"], float) / (1 + z), f) * (1 + z)
        return np.where(np.isin(meth, ("CLASSIFIER", "ZNET")), new, cols["ZERR"])

    @staticmethod
    def _zerr_cells(cfg, best, spectype, z0, snr=None) -> np.ndarray:
        """The class part of each refined row's ZERR cell: the classifier's class, with quasars refined at or
        above ``refine_qso_zmax`` (``refine_qso_zbins`` above it) in cells of their own (``"QSO>1.5"``): their
        errors differ from the low-redshift quasars' (one cell for both left the high-redshift ones at 0.59 / 0.68
        coverage on BOSS and the low ones at 0.94 / 0.98, simulated). With ``zerr_snr_edges`` and ``snr`` (the
        classifier's ``SNR_MODEL``) galaxies and quasars are split by S/N bin (``"GALAXY@2"``: bin 2 of the edges),
        whose cells a release fits where they have the rows (else the type's, survey or all: the unsplit class cells
        are not fitted once split); stars keep their class
        cells (split too, DESI's stars fell out of the 95% band: 0.932 -> 0.921, simulated)."""
        best = np.asarray(best).astype(str)
        hiz = (np.asarray(spectype).astype(str) == "QSO") & (np.asarray(z0, float) >= cfg.refine_qso_zmax)
        out = np.where(hiz, np.char.add(best, f">{cfg.refine_qso_zmax:g}"), best)
        if cfg.zerr_snr_edges and snr is not None:
            b = np.digitize(np.nan_to_num(np.asarray(snr, float), nan=0.0), cfg.zerr_snr_edges)
            split = (out != "") & np.isin(np.asarray(spectype).astype(str), ["GALAXY", "QSO"])
            out = np.where(split, np.char.add(np.char.add(out, "@"), b.astype(str)), out)
        return out

    @staticmethod
    def disagreement(z, cc) -> np.ndarray:
        """``|z - Z_CLASSIFIER| / ZERR_CLASSIFIER`` (``cc``: the classifier's columns): how far a refinement
        moved from its prior, in the prior's own errors (NaN where either is missing)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.abs(np.asarray(z, float) - np.asarray(cc["Z"], float)) / np.asarray(cc["ZERR"], float)

    @staticmethod
    def _gate_keys(cfg, cc) -> np.ndarray:
        """Each row's key of the consistency gate: its spectral type, quasars refined at or above
        ``refine_qso_zmax`` as ``"QSO>1.5"`` (the cells of :meth:`_zerr_cells` without the subclasses)."""
        spectype = np.char.strip(np.asarray(cc["SPECTYPE"]).astype(str))
        return CombinedFamily._zerr_cells(cfg, spectype, spectype, cc["Z"])

    @staticmethod
    def _gate_values(cfg, cc) -> np.ndarray:
        keys = CombinedFamily._gate_keys(cfg, cc)
        return np.array([cfg.refine_gate.get(k, np.inf) for k in keys], float)

    @staticmethod
    def _usable(d) -> np.ndarray:
        """Decoded eigen rows usable as an answer: measured, a parabola, not on the class's range edge."""
        from ..zwarning import ZWarningMask

        bad = (d["zwarn"] & int(ZWarningMask.Z_FITLIMIT | ZWarningMask.BAD_MINFIT)) > 0
        return d["ok"] & ~bad & np.isfinite(d["z"]) & np.isfinite(d["zerr"])

    @staticmethod
    def _refine(model, cc, cols, prepared, nodata, raw=None):
        """The eigen scan around the classifier's answer (see the module docstring); updates ``cols`` and
        returns the rows whose answer lies outside the eigen class's redshift range (learnt from the
        training redshifts: no refinement there)."""
        import torch

        from .eigen import RAW_FIELDS, D, decode, scan_window

        cfg, ecfg = model.config, model.eigen.config
        names = list(ecfg.tax.classes)
        best = np.asarray(cc["CLASS_BEST"])
        cls = np.array([names.index(b) if b in names else -1 for b in best], np.int64)
        z0 = np.asarray(cc["Z"], float)
        px = np.asarray(cc["ZERR"], float) / (1 + z0) / (np.log(10) * D)
        half = np.clip(np.ceil(cfg.refine_nsigma * np.nan_to_num(px, nan=cfg.refine_max_px)), cfg.refine_min_px,
                       cfg.refine_max_px).astype(np.int64)
        run = ~nodata & (cls >= 0) & np.isfinite(z0)
        if raw is None:  # (a release passes the windows of an earlier pass with the same classifier answers)
            raw = np.full((len(z0), len(RAW_FIELDS) + ecfg.ncomp), np.nan)
            if run.any():
                with torch.inference_mode():
                    raw[run] = scan_window(model.eigen, prepared["X_eig"][run], cls[run], z0[run], half[run])
        d = decode(raw, ecfg, prepared["survey"], CombinedFamily._zerr_cells(cfg, best, cc["SPECTYPE"], z0,
                                                                             cc.get("SNR_MODEL")))
        use = run & CombinedFamily._usable(d)
        qso_ok = np.zeros(len(z0), bool)
        for a, b in [(-np.inf, cfg.refine_qso_zmax)] if cfg.refine_qso_zbins is None else cfg.refine_qso_zbins:
            qso_ok |= (z0 >= a) & (z0 < b)
        use &= (np.asarray(cc["SPECTYPE"]) != "QSO") | qso_ok
        if cfg.refine_gate:
            use &= ~(CombinedFamily.disagreement(d["z"], cc) >= CombinedFamily._gate_values(cfg, cc))
        # the eigen part's own columns, as the eigen family writes them (rows not scanned: sentinels)
        fe = get_family("eigen")
        ec, _ = fe.columns(model.eigen, raw, Prepared(zwarn=np.zeros(len(z0), np.int64), survey=prepared["survey"]))
        cols["Z_EIGEN"] = ec["Z"]
        cols["ZERR_EIGEN"] = d["zerr"]  # with the cells of the default's rows (NaN where nothing was measured)
        for name, _ in fe.schema(model.eigen):
            cols[name] = ec[name]
        cols["Z"] = np.where(use, d["z"], cols["Z"])
        cols["ZERR"] = np.where(use, d["zerr"], cols["ZERR"])
        cols["Z_METHOD"] = np.where(use, "EIGEN", cols["Z_METHOD"])
        # the spectral type's range, not the class's (a quasar at z 1.15 typed BAL is a doubtful subtype, not
        # a redshift outside what quasars were learnt on)
        span = model.eigen.spectype_shifts()
        types = np.where(cls >= 0, np.array(ecfg.tax.spectypes)[np.clip(cls, 0, None)], "")
        lims = np.array([span.get(t, (-np.inf, np.inf)) for t in types], float).reshape(-1, 2)
        s0 = np.log10(1 + np.where(run, z0, 0.0)) / D
        return run & ((s0 < lims[:, 0] - 0.5) | (s0 > lims[:, 1] + 0.5)), raw

    @staticmethod
    def bal_score(model, logits, c_bal) -> np.ndarray:
        """The BAL score of both parts: the mean of the classifier's ``P(BAL) / (P(BAL) + P(QSO))``
        (:func:`redsift.models.classifier.bal_share`) and QuasarNET's ``C_BAL`` (0 where it has none)."""
        from .classifier import bal_share, class_probs

        return 0.5 * (bal_share(class_probs(logits), model.classifier.config.tax) + np.nan_to_num(np.asarray(c_bal, float)))

    def _bal_decision(self, model, logits, cc, cq, threshold) -> None:
        """Quasars (typed QSO by the classifier, of class QSO or BAL) become BAL where :meth:`bal_score`
        exceeds ``threshold``, QSO elsewhere (``CLASS_BEST``, ``SUBTYPE``; in place). Nothing without both classes."""
        if not {"BAL", "QSO"} <= set(model.classifier.config.tax.classes):
            return
        best = np.asarray(cc["CLASS_BEST"]).astype("U16")
        q = np.isin(best, ["QSO", "BAL"]) & (np.char.strip(np.asarray(cc["SPECTYPE"]).astype(str)) == "QSO")
        bal = self.bal_score(model, logits, cq["C_BAL"]) > threshold
        best = np.where(q, np.where(bal, "BAL", "QSO"), best)
        cc["CLASS_BEST"] = best
        cc["SUBTYPE"] = np.where(q, np.where(bal, "BAL", ""), cc["SUBTYPE"])

    @staticmethod
    def _class_scan(model, cc, prepared, rows):
        """The eigen scan of each row's answered class over the class's whole redshift range (raw rows of
        :func:`redsift.models.eigen.scan`, NaN where not scanned), for the rows ``rows`` (bool)."""
        import torch

        from .eigen import RAW_FIELDS, scan

        names = list(model.eigen.config.tax.classes)
        cls = np.array([names.index(b) if b in names else -1 for b in np.asarray(cc["CLASS_BEST"])], np.int64)
        full = np.full((len(cls), len(RAW_FIELDS) + model.eigen.config.ncomp), np.nan)
        X = prepared["X_eig"]
        with torch.inference_mode():
            for k in np.unique(cls[rows & (cls >= 0)]):
                idx = np.flatnonzero(rows & (cls == k))
                for a in range(0, len(idx), 256):
                    full[idx[a:a + 256]] = scan(model.eigen, X[idx[a:a + 256]], classes=[int(k)], final=False)
        return full

    @staticmethod
    def fit_value(raw) -> np.ndarray:
        """A fit's value as the scan compares trials, from raw eigen rows: ``chi2`` plus the pixels the trial leaves
        unmodelled, less the spectrum's own good pixels (the same for every trial of a row): ``chi2 - npix``."""
        from .eigen import RAW_FIELDS

        return raw[:, RAW_FIELDS.index("chi2")] - raw[:, RAW_FIELDS.index("npix")]

    @staticmethod
    def arbitration(wraw, fraw, z):
        """The chi-square gain of the whole-range scan ``fraw`` over the refinement window ``wraw`` (both raw
        eigen rows of the answered class; trials compared as the scan compares them, ``chi2 + unmodelled
        pixels``) and the scan's redshift, and whether it lies elsewhere (``|dz|/(1+z) > 0.01``, the
        catastrophic limit) than the answer ``z``."""
        from .eigen import RAW_FIELDS, D

        gain = CombinedFamily.fit_value(wraw) - CombinedFamily.fit_value(fraw)
        zf = 10 ** (fraw[:, RAW_FIELDS.index("s")] * D) - 1
        with np.errstate(invalid="ignore"):
            far = np.abs(zf - z) / (1 + z) > 0.01
        return np.nan_to_num(gain, nan=-np.inf), zf, far & np.isfinite(zf)

    def _arbitrate(self, model, cc, cols, prepared, nodata, wraw, cells) -> np.ndarray:
        """Chi-square arbitration between the classifier's redshift and the eigen scan's (issue 18): for rows
        whose type and survey have a cell in ``cells``, the answered class is scanned over its whole range;
        where its best fit lies elsewhere (beyond the catastrophic limit) and beats the refinement window's
        chi-square by more than the cell's threshold, ``Z`` and ``ZERR`` become the scan's and ``Z_METHOD``
        ``EIGEN_SCAN``. The thresholds are chosen at release on the validation set, cell by cell, where the
        replacements there fix more answers than they break (LAMOST's galaxies, whose uncorrected telluric
        bands mislead a chi-square of BOSS-learnt templates, and quasars, whose templates fit a wrong
        redshift better than the right one too often, are left off by that choice; docs/classifier.md).
        Returns the rows replaced."""
        from .eigen import decode

        spectype = np.char.strip(np.asarray(cols["SPECTYPE"]).astype(str))
        surveys = np.asarray(prepared["survey"]).astype(str)
        thr = np.array([cells.get(f"{t}/{v}", np.nan) for t, v in zip(spectype, surveys)], float)
        cand = np.isfinite(thr) & ~nodata & np.isfinite(np.asarray(cols["Z"], float))
        if not cand.any():
            return cand
        fraw = self._class_scan(model, cc, prepared, cand)
        gain, zf, far = self.arbitration(wraw, fraw, np.asarray(cols["Z"], float))
        d = decode(fraw, model.eigen.config, surveys)
        rep = cand & far & (gain > np.nan_to_num(thr, nan=np.inf)) & d["ok"] & np.isfinite(d["zerr"])
        cols["Z"] = np.where(rep, zf, cols["Z"])
        cols["ZERR"] = np.where(rep, d["zerr"], cols["ZERR"])
        cols["Z_METHOD"] = np.where(rep, "EIGEN_SCAN", cols["Z_METHOD"])
        return rep

    @staticmethod
    def _fallback_rows(model, cols, skip, types) -> np.ndarray:
        """Rows of the spectral types ``types`` whose ``Z`` is still the classifier's after every eigen step (the
        refinement window unusable: its best fit on its edge, or not a parabola), quasars below ``refine_qso_zmax``
        (above it the classifier's redshift is kept, or the refinement net's), none of ``skip``."""
        spectype = np.char.strip(np.asarray(cols["SPECTYPE"]).astype(str))
        z = np.asarray(cols["Z"], float)
        return (np.isin(spectype, list(types)) & (np.asarray(cols["Z_METHOD"]).astype(str) == "CLASSIFIER") & ~skip
                & np.isfinite(z) & ((spectype != "QSO") | (z < model.config.refine_qso_zmax)))

    def _scan_fallback(self, model, cc, cols, prepared, rows) -> np.ndarray:
        """The refinement window's fallback (``scan_fallback``): the rows ``rows`` (:meth:`_fallback_rows`) take the
        answered class's scan over its whole range where it is usable (:meth:`_usable`; ``Z``, ``ZERR``; ``Z_METHOD =
        EIGEN_SCAN``): the window could not hold the best fit, the class's whole range can (issue 19: faint
        galaxies below z 0.07 whose classifier redshift was 2-5e-3 off kept it, the window's fit on its edge).
        Returns the rows replaced."""
        from .eigen import decode

        if not rows.any():
            return rows
        fraw = self._class_scan(model, cc, prepared, rows)
        d = decode(fraw, model.eigen.config, np.asarray(prepared["survey"]).astype(str))
        rep = rows & self._usable(d)
        cols["Z"] = np.where(rep, d["z"], cols["Z"])
        cols["ZERR"] = np.where(rep, d["zerr"], cols["ZERR"])
        cols["Z_METHOD"] = np.where(rep, "EIGEN_SCAN", cols["Z_METHOD"])
        return rep

    @staticmethod
    def _peak_scan(model, cols, prepared, peak, rows):
        """For the rows ``rows``, the eigen scan of the answered class in a refinement window at the second peak
        ``peak`` of the classifier's pdf (:func:`~redsift.models.classifier.second_peak`: z, width, probability);
        raw rows, NaN elsewhere."""
        import torch

        from .eigen import RAW_FIELDS, D, scan_window

        cfg, ecfg = model.config, model.eigen.config
        z2, s2, _ = peak
        names = list(ecfg.tax.classes)
        cls = np.array([names.index(b) if b in names else -1 for b in np.asarray(cols["CLASS_BEST"]).astype(str)])
        px = s2 / (1 + z2) / (np.log(10) * D)
        half = np.clip(np.ceil(cfg.refine_nsigma * np.nan_to_num(px, nan=cfg.refine_max_px)), cfg.refine_min_px,
                       cfg.refine_max_px).astype(np.int64)
        run = rows & (cls >= 0) & np.isfinite(z2)
        praw = np.full((len(z2), len(RAW_FIELDS) + ecfg.ncomp), np.nan)
        if run.any():
            with torch.inference_mode():
                praw[run] = scan_window(model.eigen, prepared["X_eig"][run], cls[run], z2[run], half[run])
        return praw

    @staticmethod
    def _peak_candidates(model, cols, prepared, wraw, praw):
        """The second-peak windows' chi-square gain over the answer's window (trials compared as the scan compares
        them), their decoded answers and whether each is usable (a parabola inside the class's range)."""
        from .eigen import decode

        gain, _, _ = CombinedFamily.arbitration(wraw, praw, np.asarray(cols["Z"], float))
        cells = CombinedFamily._zerr_cells(model.config, cols["CLASS_BEST"], cols["SPECTYPE"], cols["Z_CLASSIFIER"],
                                           cols.get("SNR_MODEL"))
        d = decode(praw, model.eigen.config, prepared["survey"], cells)
        return gain, d, CombinedFamily._usable(d)

    @staticmethod
    def _peak_rows(cols, prepared, nodata, cells) -> tuple[np.ndarray, np.ndarray]:
        """Rows a second-peak cell applies to (galaxies and quasars whose answer is the classifier's or its
        refinement) and their cells' ``[p2_min, gain_min]``."""
        spectype = np.char.strip(np.asarray(cols["SPECTYPE"]).astype(str))
        surveys = np.asarray(prepared["survey"]).astype(str)
        lim = np.array([cells.get(f"{t}/{v}", (np.nan, np.nan)) for t, v in zip(spectype, surveys)], float).reshape(-1, 2)
        method = np.asarray(cols["Z_METHOD"]).astype(str)
        ok = ~nodata & np.isfinite(lim[:, 0]) & np.isin(method, ["CLASSIFIER", "EIGEN"]) & np.isin(spectype, ARBITRATE_TYPES)
        return ok, lim

    def _peak_arbitrate(self, model, cols, prepared, nodata, wraw, zl, cells) -> np.ndarray:
        """Second-peak arbitration (issue 18): where the classifier's redshift pdf holds at least the cell's
        ``p2_min`` at a second peak (:func:`redsift.models.classifier.second_peak`), the answered class's eigen
        chi-square is scanned in a refinement window there, and where it beats the answer's window by more than the
        cell's ``gain_min``, its redshift replaces the answer (``Z_METHOD = EIGEN_PEAK``; ``Z_CLASSIFIER`` keeps
        the classifier's first peak). Cells (``TYPE/survey``) chosen at release where the replacements fix more
        catastrophic validation answers than they make. Returns the rows replaced."""
        rows, lim = self._peak_rows(cols, prepared, nodata, cells)
        if not rows.any():
            return rows
        from .classifier import second_peak

        peak = second_peak(zl, model.classifier.config)  # (z, width, probability)
        rows &= peak[2] >= np.nan_to_num(lim[:, 0], nan=np.inf)
        if not rows.any():
            return rows
        praw = self._peak_scan(model, cols, prepared, peak, rows)
        gain, d, good = self._peak_candidates(model, cols, prepared, wraw, praw)
        rep = rows & good & (gain > np.nan_to_num(lim[:, 1], nan=np.inf))
        cols["Z"] = np.where(rep, d["z"], cols["Z"])
        cols["ZERR"] = np.where(rep, d["zerr"], cols["ZERR"])
        cols["Z_METHOD"] = np.where(rep, "EIGEN_PEAK", cols["Z_METHOD"])
        return rep

    @staticmethod
    def _anomaly(model, cols, prepared, nodata, fraw) -> np.ndarray:
        """``ANOMALY`` from the full scans ``fraw`` (the eigen part's learned score where it has one, as the eigen
        family writes it) and the ``OUT_OF_DISTRIBUTION`` bits above the eigen part's per-survey thresholds
        (the 99th percentile of its normal validation spectra); returns the bits (in place for ``ANOMALY``)."""
        from .eigen import anomaly_bits, decode

        surveys = np.asarray(prepared["survey"]).astype(str)
        d = decode(fraw, model.eigen.config, surveys)
        ok = d["ok"] & ~nodata & np.isfinite(d["anomaly"])
        cols["ANOMALY"] = np.where(ok, d["anomaly"], np.nan).astype(np.float32)
        return anomaly_bits(d["anomaly"], ok, model.eigen.config, surveys)

    @staticmethod
    def p_type(cols) -> np.ndarray:
        """The classifier's probability of its own spectral type (the largest ``PTYPE_*``; NaN without data)."""
        from .classifier import SPECTYPES

        with np.errstate(invalid="ignore"):
            return np.max(np.stack([np.asarray(cols[f"PTYPE_{t}"], float) for t in SPECTYPES]), axis=0)

    @staticmethod
    def _type_scan(model, prepared, rows):
        """The eigen scan over every class with its final stage (raw rows of :func:`redsift.models.eigen.scan`:
        the coefficients and anomaly score of a replacing answer; NaN where not scanned) of the rows ``rows``."""
        import torch

        from .eigen import RAW_FIELDS, scan

        full = np.full((len(rows), len(RAW_FIELDS) + model.eigen.config.ncomp), np.nan)
        idx = np.flatnonzero(rows)
        with torch.inference_mode():
            for a in range(0, len(idx), 256):
                full[idx[a:a + 256]] = scan(model.eigen, prepared["X_eig"][idx[a:a + 256]])
        return full

    @staticmethod
    def _type_candidates(model, fraw, surveys, cells=None):
        """Decoded whole scans and whether each is usable as an answer (:meth:`_usable`)."""
        from .eigen import decode

        d = decode(fraw, model.eigen.config, surveys, cells)
        return d, CombinedFamily._usable(d)

    def _type_arbitrate(self, model, cols, prepared, nodata, cells, fraw=None) -> np.ndarray:
        """Chi-square arbitration of the spectral type (issue 18): rows whose classifier's type probability
        (:meth:`p_type`) is below their survey's ``p_max`` are scanned over every eigen class; where the scan's
        spectral type differs from the classifier's and its ``DELTACHI2`` is at least ``dchi2_min``, its answer
        replaces the classifier's (``SPECTYPE``, ``SUBTYPE``, ``CLASS_BEST``, ``Z``, ``ZERR`` and the eigen
        columns; ``Z_METHOD = EIGEN_TYPE``; ``PROB_*`` and ``PTYPE_*`` stay the classifier's). The cells are
        chosen at release on the validation set where the replacements fix more answers than they break.
        Returns the rows replaced."""
        surveys = np.asarray(prepared["survey"]).astype(str)
        lim = np.array([cells.get(v, (np.nan, np.nan)) for v in surveys], float).reshape(-1, 2)
        cand = ~nodata & (self.p_type(cols) < np.nan_to_num(lim[:, 0], nan=-1.0))
        if not cand.any():
            return cand
        if fraw is None:
            fraw = self._type_scan(model, prepared, cand)
        d, good = self._type_candidates(model, fraw, surveys)
        spectype = np.char.strip(np.asarray(cols["SPECTYPE"]).astype(str))
        rep = cand & good & (d["spectype"] != spectype) & (np.nan_to_num(d["dchi2"], nan=-np.inf) >= lim[:, 1])
        if not rep.any():
            return rep
        from .eigen import RAW_FIELDS

        names = np.array(model.eigen.config.tax.classes)
        cols["SPECTYPE"] = np.where(rep, d["spectype"], cols["SPECTYPE"])
        cols["SUBTYPE"] = np.where(rep, d["subtype"], cols["SUBTYPE"])
        cols["CLASS_BEST"] = np.where(rep, names[d["cls"]], cols["CLASS_BEST"])
        for key, value in (("Z", d["z"]), ("ZERR", d["zerr"]), ("Z_EIGEN", d["z"]), ("ZERR_EIGEN", d["zerr"]),
                           ("CHI2", d["chi2"]), ("DELTACHI2", d["dchi2"]), ("NPIXELS", d["npix"]),
                           ("RCHI2", d["rchi2"]), ("ANOMALY", d["anomaly"])):
            if key in cols:
                cols[key] = np.where(rep, value, cols[key])
        if "COEFF" in cols:
            cols["COEFF"] = np.where(rep[:, None], fraw[:, len(RAW_FIELDS):], cols["COEFF"])
        cols["Z_METHOD"] = np.where(rep, "EIGEN_TYPE", cols["Z_METHOD"])
        return rep

    def decisions(self, model) -> dict:
        return model.config.decisions()

    def release(self, model, raw, prepared, meta, min_cell: int = 50, zerr_rows: str = "",
                zerr_bands: bool = False, refine_bins: bool = False, refine_gate: bool = False,
                gate_rows: int = 20, type_arbitrate: bool = False, peak_arbitrate: bool = False,
                zerr_snr: bool = False, full_scan: bool = False, anomaly_flag: bool = False,
                sign_z: float = 0.0, scan_fallback: bool = False, dchi2_flag: bool = False,
                no_signal: bool = False) -> tuple[dict, dict]:
        """The eigen part's ``ZERR`` calibrated where the default uses it: on the validation rows whose
        ``Z`` the refinement gave (``Z_METHOD = EIGEN``) and whose spectral type is right, per spectral type
        and per spectral type / survey (:func:`redsift.models.eigen.fit_zerr_cells`); likewise the
        classifier's ``ZERR`` on the rows whose ``Z`` is the classifier's (``zerr_scale``, ``zerr_floor``),
        those rows restricted by ``zerr_rows`` (``"COLUMN=value"`` of the validation truth, e.g.
        ``SIM_MODE=templates``: ``redsift release --set zerr_rows=SIM_MODE=templates``) where given; with
        ``refine_bins`` the classifier-redshift bins in which quasars take the refinement (those rows too,
        :meth:`_choose_qso_zbins`), chosen before everything else; with ``refine_gate`` the disagreement per
        spectral type beyond which the refinement is refused (:meth:`_choose_gate`, ``gate_rows`` rows at
        least beyond it), chosen next; with ``type_arbitrate`` the type arbitration per survey
        (:meth:`_choose_type_arbitration`), after the redshift arbitration and the BAL decision (and, with
        ``peak_arbitrate``, the second-peak arbitration, :meth:`_choose_peak_arbitration`, chosen before it). The eigen model's
        own release calibrates its full scan, whose rows differ: there the scan also picks the class (a
        wrong star subclass widens the curvature), and quasars reach z 6 where the refinement stops at
        ``refine_qso_zmax``. The classifier's and QuasarNET's decisions are theirs, kept."""
        from .eigen import fit_zerr_cells

        if model.eigen is None:
            return {}, {"eigen": "no eigen part: nothing to choose"}
        for name, flag in (("zerr_bands", zerr_bands), ("refine_bins", refine_bins), ("refine_gate", refine_gate),
                           ("type_arbitrate", type_arbitrate), ("peak_arbitrate", peak_arbitrate),
                           ("zerr_snr", zerr_snr), ("full_scan", full_scan), ("anomaly_flag", anomaly_flag),
                           ("scan_fallback", scan_fallback), ("dchi2_flag", dchi2_flag), ("no_signal", no_signal)):
            if not isinstance(flag, bool):
                raise RedsiftError(f"release: {name} must be true or false, got {flag!r}")
        if isinstance(sign_z, bool) or not isinstance(sign_z, numbers.Real) or not 0 <= sign_z < 10:
            raise RedsiftError(f"release: sign_z must be a number in [0, 10) (2: a cell's net gain at least two "
                               f"standard deviations of the sign test), got {sign_z!r}")
        zcol, _, zvalue = str(zerr_rows).partition("=")
        if zerr_rows and not (zcol and zvalue):
            raise RedsiftError(f"release: zerr_rows={zerr_rows}: expected COLUMN=value (e.g. SIM_MODE=templates)")
        if zerr_rows and zcol not in meta.colnames:
            raise RedsiftError(f"release: zerr_rows={zerr_rows}: the validation set has no column {zcol!r}")
        tax = model.classifier.config.tax
        y = tax.labels(meta, source="validation labels", strict=False)
        truth = np.where(y >= 0, np.array(tax.spectypes)[np.clip(y, 0, None)], "")
        rows = self._row_filter(meta, zcol, zvalue) if zerr_rows else None
        record: dict = {}
        if rows is not None:
            record["classifier_zerr_rule"] = f"rows with {zcol} = {zvalue}"
        if sign_z:
            record["sign_z"] = (f"a cell is turned on where its net gain is at least {sign_z:g} x sqrt(fixed + broken) "
                                f"(the sign test)")
        zbins, wraw = self._choose_qso_zbins(model, raw, prepared, meta, truth, rows, min_cell, record) \
            if refine_bins else (None, None)
        gate, wraw = self._choose_gate(model, raw, prepared, meta, truth, rows, zbins, wraw, record, gate_rows) \
            if refine_gate else (None, wraw)
        ecfg, ccfg = model.eigen.config, model.config
        cols, _, wraw = self._columns_as(model, raw, prepared, wraw,
                                         dataclasses.replace(ecfg, zerr_scale=None, zerr_floor=None, zerr_rchi2=True),
                                         arbitrate=None, bal_mean_threshold=None, refine_qso_zbins=zbins,
                                         refine_gate=gate)
        spectype = np.char.strip(np.asarray(cols["SPECTYPE"], str))
        cell = np.where((np.asarray(cols["Z_METHOD"]) == "EIGEN") & (spectype == truth), spectype, "")
        # (the cells' split chosen here, never inherited from an earlier release's config)
        ccfg = dataclasses.replace(ccfg, zerr_snr_edges=list(ZERR_SNR_EDGES) if zerr_snr else None)
        if zerr_snr:
            record["zerr_snr"] = f"refinement cells split at SNR_MODEL {list(ZERR_SNR_EDGES)}"
        by_class = self._zerr_cells(ccfg, cols["CLASS_BEST"], cols["SPECTYPE"], cols["Z_CLASSIFIER"], cols["SNR_MODEL"]) \
            if ecfg.zerr_by_class else None
        bands = ZERR_BANDS if zerr_bands else None
        scale, floor, erec = fit_zerr_cells(cols["Z"], cols["ZERR"], meta["Z"], cell, prepared["survey"], min_cell,
                                            by_class, bands)
        record.update(erec)
        new = dataclasses.replace(ecfg, zerr_scale=scale or None, zerr_floor=floor or None, zerr_rchi2=True)
        record["eigen_zerr_rows"] = int((cell != "").sum())
        # the chi-square arbitration's thresholds, cell by cell (type / survey), on the same validation rows
        cand = np.isin(spectype, ARBITRATE_TYPES) & (spectype == truth) & np.isfinite(np.asarray(cols["Z"], float))
        fraw = self._class_scan(model, cols, prepared, cand)
        cells, rec = choose_arbitration(wraw, fraw, cols["Z"], meta["Z"], np.where(cand, spectype, ""),
                                        prepared["survey"], sign_z=sign_z)
        record.update(rec)
        bal_thr, bal_rec = self._choose_bal(model, raw, cols, meta, truth)
        record.update(bal_rec)
        if bands:
            record["zerr_rule"] = f"cells nearest the middle of the 68% band {bands[0]} and the 95% band {bands[1]}"
        decided = dict(arbitrate=cells or None, bal_mean_threshold=bal_thr, refine_qso_zbins=zbins, refine_gate=gate,
                       peak_arbitrate=None, zerr_snr_edges=ccfg.zerr_snr_edges)
        # the refinement windows as the release deploys them (the BAL decision may change the class a window is
        # scanned with), scanned once for the choices below (the later decisions act after the refinement)
        _, _, wraw = self._columns_as(model, raw, prepared, None, **decided)
        if peak_arbitrate:
            decided["peak_arbitrate"] = self._choose_peak_arbitration(model, raw, prepared, meta, truth, wraw, decided,
                                                                      record, sign_z)
        tcells = self._choose_type_arbitration(model, raw, prepared, meta, truth, wraw, decided, record, sign_z) \
            if type_arbitrate else None
        if scan_fallback:
            decided["scan_fallback"] = self._choose_scan_fallback(model, raw, prepared, meta, truth, wraw,
                                                                  dict(decided, type_arbitrate=tcells), record, sign_z)
        cscale, cfloor = self._fit_classifier_zerr(model, raw, prepared, meta, truth, dict(decided, type_arbitrate=tcells),
                                                   min_cell, rows, bands, record, wraw)
        if anomaly_flag and not full_scan:
            raise RedsiftError("release: anomaly_flag needs full_scan=true (the flag reads the full scan's score)")
        if dchi2_flag and not full_scan:
            raise RedsiftError("release: dchi2_flag needs full_scan=true (DELTACHI2 reads the full scan's minima)")
        if no_signal and not full_scan:
            raise RedsiftError("release: no_signal needs full_scan=true (the answer's fit is read with the full scan)")
        dcells = smin = None
        if dchi2_flag or no_signal:  # the validation rows as the release deploys them, the full scan on
            from ..metrics import right_answers

            cols, zwarn, wr = self._columns_as(model, raw, prepared, wraw, **dict(
                decided, type_arbitrate=tcells, full_scan=True, anomaly_flag=anomaly_flag))
            right = right_answers(cols["SPECTYPE"], cols["Z"], truth, meta["Z"])
            if dchi2_flag:
                dcells, rec = choose_dchi2_flag(cols["DELTACHI2"], zwarn, right, np.where(truth != "", cols["SPECTYPE"], ""),
                                                prepared["survey"])
                record.update(rec)
                dcells = dcells or None
            if no_signal:
                smin = self._choose_signal_min(model, prepared, cols, zwarn, wr, right, truth, record)
        if full_scan:
            record["full_scan"] = "every row scanned over every class: the learned ANOMALY" + \
                (", OUT_OF_DISTRIBUTION above its thresholds" if anomaly_flag else " (no OUT_OF_DISTRIBUTION bit)")
        return {"eigen": dataclasses.asdict(new), "zerr_scale": cscale or None, "zerr_floor": cfloor or None,
                "type_arbitrate": tcells, "full_scan": full_scan, "anomaly_flag": anomaly_flag, "dchi2_flag": dcells,
                "signal_min": smin, **decided}, record

    @staticmethod
    def _row_filter(meta, col: str, value: str) -> np.ndarray:
        """Validation rows whose truth column ``col`` equals ``value`` (masked values never match); refused
        when none does, with the values present."""
        data = meta[col]
        have = np.char.strip(np.asarray(np.ma.getdata(data)).astype(str))
        match = (have == value) & ~np.ma.getmaskarray(data)
        if not match.any():
            raise RedsiftError(f"release: zerr_rows={col}={value}: no validation row has {col} = {value!r} "
                               f"(values: {', '.join(sorted(set(have.tolist()))[:10])})")
        return match

    def _columns_as(self, model, raw, prepared, wraw=None, eigen=None, **decisions):
        """:meth:`_columns` with the release's decisions replaced (``decisions``: config fields; every decision a
        release chooses, :data:`RELEASE_DECISIONS`, cleared unless given: a model released before must not carry
        its earlier choices into the rows the new ones are chosen on) and, with ``eigen``, the eigen part's
        config; both restored afterwards."""
        ecfg, ccfg = model.eigen.config, model.config
        model.config = dataclasses.replace(ccfg, **{**dict.fromkeys(RELEASE_DECISIONS), **decisions})
        if eigen is not None:
            model.eigen.config = eigen
        try:
            return self._columns(model, raw, prepared, wraw)
        finally:
            model.eigen.config, model.config = ecfg, ccfg

    def _choose_qso_zbins(self, model, raw, prepared, meta, truth, rows, min_cell, record) -> tuple[list | None, np.ndarray]:
        """The ranges of the classifier's ``Z`` (bins of :data:`QSO_ZBIN_EDGES`) in which quasars take the
        eigen refinement: every validation quasar typed right is refined (the rows given by ``rows`` only), and
        a bin is adopted where the refinement's median ``|dz|/(1+z)`` is below the classifier's and its
        catastrophic fraction no larger, with ``min_cell`` rows at least; adjacent bins merged. None where no
        bin has the rows (the ``refine_qso_zmax`` rule stays). Also returns the refinement windows' raw rows
        (the release's next pass has the same classifier answers: not scanned twice)."""
        cols, _, wraw = self._columns_as(model, raw, prepared, arbitrate=None, bal_mean_threshold=None,
                                         refine_qso_zbins=[[-1.0, 99.0]])
        spectype = np.char.strip(np.asarray(cols["SPECTYPE"], str))
        q = (spectype == "QSO") & (truth == "QSO") & (np.asarray(cols["Z_METHOD"]).astype(str) == "EIGEN")
        if rows is not None:
            q &= rows
        zt = np.asarray(meta["Z"], float)
        zc = np.asarray(cols["Z_CLASSIFIER"], float)
        dc = np.abs(zc - zt) / (1 + zt)
        de = np.abs(np.asarray(cols["Z"], float) - zt) / (1 + zt)
        chosen, seen = [], False
        for a, b in zip(QSO_ZBIN_EDGES[:-1], QSO_ZBIN_EDGES[1:]):
            sel = q & (zc >= a) & (zc < b)
            if sel.sum() < min_cell:
                record[f"refine_qso_z{a:g}-{b:g}"] = f"n {int(sel.sum())}: too few rows, not refined"
                continue
            seen = True
            mc, me = float(np.median(dc[sel])), float(np.median(de[sel]))
            cc_, ce = float(np.mean(dc[sel] > 0.01)), float(np.mean(de[sel] > 0.01))
            take = me < mc and ce <= cc_
            record[f"refine_qso_z{a:g}-{b:g}"] = (f"n {int(sel.sum())}: MAD classifier {mc:.2e}, refined {me:.2e}; "
                                                  f"catastrophic {cc_:.3f} / {ce:.3f}: {'refined' if take else 'classifier'}")
            if take:
                if chosen and chosen[-1][1] == a:
                    chosen[-1][1] = b
                else:
                    chosen.append([a, b])
        if not seen:
            record["refine_qso_zbins"] = (f"no redshift bin with {min_cell} validation quasars: "
                                          f"QSO z < {model.config.refine_qso_zmax}")
            return None, wraw
        record["refine_qso_zbins"] = _zbins_text(chosen) or "none"
        return chosen, wraw

    def _choose_gate(self, model, raw, prepared, meta, truth, rows, zbins, wraw, record, min_rows: int = 20):
        """The consistency gate per spectral type (:meth:`_gate_keys`): on the validation rows the refinement
        gave (``Z_METHOD = EIGEN``, typed right; quasars among the ``rows`` only, as the bins are chosen), the
        least disagreement of :data:`GATE_GRID` (:meth:`disagreement`) beyond which the refined redshifts'
        median ``|dz|/(1+z)`` is above the classifier's on the same rows and their catastrophic fraction no
        lower, with ``min_rows`` rows at least; none where no grid value qualifies. Returns the gate (None when
        no type has one) and the windows' raw rows (unchanged: the classifier's answers are the same)."""
        cols, _, wraw = self._columns_as(model, raw, prepared, wraw, arbitrate=None, bal_mean_threshold=None,
                                         refine_qso_zbins=zbins)
        spectype = np.char.strip(np.asarray(cols["SPECTYPE"], str))
        cc = {"Z": cols["Z_CLASSIFIER"], "ZERR": cols["ZERR_CLASSIFIER"], "SPECTYPE": spectype}
        keys = self._gate_keys(model.config, cc)
        ok = (np.asarray(cols["Z_METHOD"]).astype(str) == "EIGEN") & (spectype == truth)
        if rows is not None:
            ok &= rows | (spectype != "QSO")
        zt = np.asarray(meta["Z"], float)
        dc = np.abs(np.asarray(cols["Z_CLASSIFIER"], float) - zt) / (1 + zt)
        de = np.abs(np.asarray(cols["Z"], float) - zt) / (1 + zt)
        dis = self.disagreement(cols["Z"], cc)
        gate = {}
        for key in sorted(set(keys[ok].tolist())):
            notes = []
            for g in GATE_GRID:
                sel = ok & (keys == key) & (dis >= g)
                if sel.sum() < min_rows:
                    notes.append(f"{g:g}: n {int(sel.sum())}")
                    break
                mc, me = float(np.median(dc[sel])), float(np.median(de[sel]))
                cc_, ce = float(np.mean(dc[sel] > 0.01)), float(np.mean(de[sel] > 0.01))
                notes.append(f"{g:g}: n {int(sel.sum())} MAD {mc:.1e} / {me:.1e}, catastrophic {cc_:.3f} / {ce:.3f}")
                if me > mc and cc_ <= ce:
                    gate[key] = g
                    break
            record[f"refine_gate_{key}"] = (f"{gate[key]:g}" if key in gate else "none") + \
                f" (n {int((ok & (keys == key)).sum())}; classifier / refined: " + "; ".join(notes) + ")"
        return gate or None, wraw

    def _choose_peak_arbitration(self, model, raw, prepared, meta, truth, wraw, decided, record,
                                 sign_z: float = 0.0) -> dict | None:
        """The second-peak arbitration's ``[p2_min, gain_min]`` per ``TYPE/survey`` (GALAXY and QSO;
        :meth:`_peak_arbitrate`), chosen on the validation rows typed right as the release deploys them: the pair
        of :data:`PEAK_GRID` whose replacements fix the most catastrophic answers (``|dz|/(1+z) > 0.01``) net of
        those they make, the one replacing fewest rows on a tie; none where no pair has a positive net
        (:func:`clears_sign_test` with ``sign_z``)."""
        from .classifier import second_peak
        from .family import SURVEYS

        k = len(model.classifier.config.tax) + model.classifier.config.n_z
        zl = np.asarray(raw).reshape(prepared.nrows, -1)[:, len(model.classifier.config.tax):k]
        cols, _, wraw = self._columns_as(model, raw, prepared, wraw, **decided)  # (scanned here if not handed over)
        spectype = np.char.strip(np.asarray(cols["SPECTYPE"]).astype(str))
        nodata = ~np.isfinite(np.asarray(cols["Z"], float))
        every = {f"{t}/{v}": (0.0, -np.inf) for t in ARBITRATE_TYPES for v in SURVEYS}
        rows, _ = self._peak_rows(cols, prepared, nodata, every)
        rows &= spectype == truth
        peak = second_peak(zl, model.classifier.config)
        p2 = peak[2]
        praw = self._peak_scan(model, cols, prepared, peak, rows)
        gain, d, good = self._peak_candidates(model, cols, prepared, wraw, praw)
        zt = np.asarray(meta["Z"], float)
        with np.errstate(invalid="ignore"):
            bad0 = np.abs(np.asarray(cols["Z"], float) - zt) / (1 + zt) > 0.01
            bad1 = np.abs(d["z"] - zt) / (1 + zt) > 0.01
        surveys = np.asarray(prepared["survey"]).astype(str)
        cells = {}
        for t in ARBITRATE_TYPES:
            for v in SURVEYS:
                here = rows & (spectype == t) & (surveys == v)
                if not here.any():
                    continue
                best, tried = None, []
                for p, g in PEAK_GRID:
                    r = here & good & (p2 >= p) & (gain > g)
                    fixed, broken = int((r & bad0 & ~bad1).sum()), int((r & ~bad0 & bad1).sum())
                    tried.append(f"P2>={p:g} gain>{g:g}: +{fixed} -{broken}")
                    key = (fixed - broken, -int(r.sum()))
                    if clears_sign_test(fixed, broken, sign_z) and (best is None or key > best[0]):
                        best = (key, [p, g])
                if best is not None:
                    cells[f"{t}/{v}"] = best[1]
                reach = int((here & good & bad0 & ~bad1).sum())
                record[f"peak_arbitrate_{t}/{v}"] = (f"{'P2 >= %g, gain > %g' % tuple(best[1]) if best else 'off'} "
                                                     f"(n {int(here.sum())}, catastrophic {int((here & bad0).sum())}, "
                                                     f"truth at the second peak's refinement {reach}; "
                                                     + ", ".join(tried) + ")")
        return cells or None

    def _choose_type_arbitration(self, model, raw, prepared, meta, truth, wraw, decided, record,
                                 sign_z: float = 0.0) -> dict | None:
        """The type arbitration's ``[p_max, dchi2_min]`` per survey (:meth:`_type_arbitrate`), chosen on the
        validation rows with a known type as the release deploys them (``decided``): the pair of
        :data:`TYPE_GRID` whose replacements turn the most wrong answers right (type right and ``|dz|/(1+z)``
        within 0.01) net of the right answers they turn wrong, the one replacing fewest rows on a tie; none for
        a survey where no pair has a positive net (:func:`clears_sign_test` with ``sign_z``)."""
        from .family import SURVEYS

        cols, _, _ = self._columns_as(model, raw, prepared, wraw, **decided)
        surveys = np.asarray(prepared["survey"]).astype(str)
        pt = self.p_type(cols)
        known = truth != ""
        with np.errstate(invalid="ignore"):
            cand = known & (pt < max(p for p, _ in TYPE_GRID))
        fraw = self._type_scan(model, prepared, cand)
        d, good = self._type_candidates(model, fraw, surveys)
        zt = np.asarray(meta["Z"], float)
        spectype = np.char.strip(np.asarray(cols["SPECTYPE"]).astype(str))
        with np.errstate(invalid="ignore"):
            right0 = (spectype == truth) & (np.abs(np.asarray(cols["Z"], float) - zt) / (1 + zt) <= 0.01)
            right1 = (d["spectype"] == truth) & (np.abs(d["z"] - zt) / (1 + zt) <= 0.01)
        moves = cand & good & (d["spectype"] != spectype)
        dchi2 = np.nan_to_num(d["dchi2"], nan=-np.inf)
        cells = {}
        for v in SURVEYS:
            here = surveys == v
            if not (here & known).any():
                continue
            best, tried = None, []
            for p, dmin in TYPE_GRID:
                r = moves & here & (pt < p) & (dchi2 >= dmin)
                fixed, broken = int((r & ~right0 & right1).sum()), int((r & right0 & ~right1).sum())
                tried.append(f"P<{p:g} dchi2>={dmin:g}: +{fixed} -{broken}")
                key = (fixed - broken, -int(r.sum()))
                if clears_sign_test(fixed, broken, sign_z) and (best is None or key > best[0]):
                    best = (key, [p, dmin])
            if best is not None:
                cells[v] = best[1]
            record[f"type_arbitrate_{v}"] = (f"{'P < %g, DELTACHI2 >= %g' % tuple(best[1]) if best else 'off'} "
                                             f"(n {int((here & known).sum())}, wrong {int((here & known & ~right0).sum())}; "
                                             + ", ".join(tried) + ")")
        return cells or None

    def _choose_scan_fallback(self, model, raw, prepared, meta, truth, wraw, decided, record,
                              sign_z: float = 0.0) -> list | None:
        """The spectral types that take the window's fallback (:meth:`_scan_fallback`), chosen on the validation rows
        as the release deploys them (``decided``): a type is on where its replacements turn more answers right than
        wrong (type right and ``|dz|/(1+z)`` within the type's good-fraction limit: 1e-3 for galaxies, 0.01 for
        quasars, issue 19's) by the sign test with ``sign_z`` (:func:`clears_sign_test`), every survey together."""
        from ..zwarning import ZWarningMask

        cols, zwarn, _ = self._columns_as(model, raw, prepared, wraw, **decided)
        cc = {"CLASS_BEST": cols["CLASS_BEST"]}
        zt = np.asarray(meta["Z"], float)
        # (as deployed: no fallback for rows without data or beyond the class's range; unlabelled rows not counted)
        skip = (zwarn & int(ZWarningMask.NODATA | ZWarningMask.Z_FITLIMIT)) > 0
        on = []
        for t, lim in (("GALAXY", 1e-3), ("QSO", 0.01)):
            rows = self._fallback_rows(model, cols, skip, (t,))
            trial = dict(cols)  # (the fallback rebinds its columns: cols keeps the answers without it)
            rep = self._scan_fallback(model, cc, trial, prepared, rows)
            with np.errstate(invalid="ignore"):
                good = truth == t
                right0 = good & (np.abs(np.asarray(cols["Z"], float) - zt) / (1 + zt) <= lim)
                right1 = good & (np.abs(np.asarray(trial["Z"], float) - zt) / (1 + zt) <= lim)
            fixed, broken = int((rep & ~right0 & right1).sum()), int((rep & right0 & ~right1).sum())
            ok = clears_sign_test(fixed, broken, sign_z)
            record[f"scan_fallback_{t}"] = (f"{'on' if ok else 'off'} (rows {int(rows.sum())}, replaced {int(rep.sum())}: "
                                            f"+{fixed} -{broken} at |dz|/(1+z) <= {lim:g})")
            if ok:
                on.append(t)
        return on or None

    def _choose_signal_min(self, model, prepared, cols, zwarn, wraw, right, truth, record) -> float | None:
        """``NO_SIGNAL``'s limit: :data:`SIGNAL_MIN` (fixed, not fitted: pure noise gains at most ~60, simulated),
        kept where on the validation rows as deployed (``cols``, ``zwarn``, their windows ``wraw``; ``right`` the
        right answers: type right, ``|dv|`` within DESI's limits) no survey has more than :data:`SIGNAL_MAX_LOSS` of
        its right answers below it; None (no bit) otherwise."""
        from ..zwarning import ZWarningMask

        nodata = (np.asarray(zwarn) & int(ZWarningMask.NODATA)) > 0
        _, ans = self._answer_fit(model, cols, prepared, nodata, wraw, self._type_scan(model, prepared, ~nodata))
        with np.errstate(invalid="ignore"):
            low = self.signal_gain(prepared["X_eig"], ans) < SIGNAL_MIN
        surveys = np.asarray(prepared["survey"]).astype(str)
        worst = 0.0
        for v in sorted(set(surveys[right])):
            r, w = right & (surveys == v), ~right & (surveys == v) & (truth != "")
            loss = float(np.mean(low[r]))
            worst = max(worst, loss)
            record[f"no_signal_{v}"] = (f"{int((low & r).sum())} of {int(r.sum())} right answers gain less than "
                                        f"{SIGNAL_MIN:g} ({loss:.4f}); wrong answers below it {int((low & w).sum())}")
        on = worst <= SIGNAL_MAX_LOSS
        record["no_signal"] = (f"{'on' if on else 'off'}: NO_SIGNAL below a gain of {SIGNAL_MIN:g} (the largest survey "
                               f"loss of right answers {worst:.4f}, allowed {SIGNAL_MAX_LOSS:g})")
        return SIGNAL_MIN if on else None

    def _fit_classifier_zerr(self, model, raw, prepared, meta, truth, decided, min_cell, rows, bands,
                             record, wraw=None) -> tuple[dict, dict]:
        """The classifier's ZERR cells where the default gives its Z, fitted on the validation rows as the
        release deploys them (its arbitration and BAL decision applied: rows the arbitration replaces are the
        classifier's catastrophic answers and must not widen the cells), typed right, and restricted by the
        truth column ``rows = (column, value)`` where given (masked values never match). The refinement net's rows
        get cells of their own (``"ZNET"``, :meth:`_classifier_zerr`)."""
        from .eigen import fit_zerr_cells

        cols, _, _ = self._columns_as(model, raw, prepared, wraw, **decided)
        spectype = np.char.strip(np.asarray(cols["SPECTYPE"], str))
        meth = np.asarray(cols["Z_METHOD"]).astype(str)
        keep = np.isin(meth, ("CLASSIFIER", "ZNET")) & (spectype == truth)
        if rows is not None:
            keep &= rows
        net = meth == "ZNET"
        ccell = np.where(keep & ~net, spectype, "")
        cscale, cfloor, crec = fit_zerr_cells(cols["Z"], cols["ZERR"], meta["Z"], ccell, prepared["survey"], min_cell,
                                              bands=bands)
        # the net's rows: cells "ZNET" and "ZNET/survey", and by S/N ("ZNET@2", "ZNET@2/survey") with the release's
        # S/N edges (fitted as classes within QSO, kept apart from its cells)
        sub = self._znet_snr_cells(decided.get("zerr_snr_edges"), meth, cols.get("SNR_MODEL"))
        for classes in [np.where(net, "ZNET", "")] + ([sub] if sub is not None else []):
            nscale, nfloor, nrec = fit_zerr_cells(cols["Z"], cols["ZERR"], meta["Z"], np.where(keep & net, "QSO", ""),
                                                  prepared["survey"], min_cell, classes=classes, bands=bands)
            for table, new in ((cscale, nscale), (cfloor, nfloor), (crec, nrec)):
                table.update({k: v for k, v in new.items() if "ZNET" in k})
        record.update({f"classifier_{k}": v for k, v in crec.items()})
        record["classifier_zerr_rows"] = int(keep.sum())
        if not cscale:
            record["classifier_zerr"] = f"no cell with {min_cell} rows: the classifier's ZERR as it is"
        return cscale, cfloor

    def _choose_bal(self, model, raw, cols, meta, truth) -> tuple[float | None, dict]:
        """The BAL threshold of :meth:`bal_score` at QuasarNET's operating point (98% of BALs found, 97% of
        non-BAL quasars kept; :func:`redsift.metrics.bal_threshold` with the largest margin over both, BALs
        counted as the paper counts them: ``BAL_FLAG`` and ``BI_CIV`` agreeing, z >= 1.57) on the validation
        rows. None (the classifier's own decision) without BAL truth in the validation set."""
        from ..metrics import bal_metrics, bal_threshold

        if not {"BAL_FLAG", "BI_CIV"} <= set(meta.colnames) or not {"BAL", "QSO"} <= set(model.classifier.config.tax.classes):
            return None, {"bal_rule": "no BAL truth in the validation set: the classifier's own decision"}
        n = len(model.classifier.config.tax)
        score = self.bal_score(model, np.asarray(raw)[:, :n], cols["C_BAL"])
        qp = np.char.strip(np.asarray(cols["SPECTYPE"]).astype(str)) == "QSO"
        args = (np.asarray(meta["BAL_FLAG"]), truth == "QSO", np.asarray(meta["Z"], float))
        bi = np.asarray(meta["BI_CIV"], float)
        grid = np.round(np.arange(0.05, 0.995, 0.0025), 4)
        thr, m = bal_threshold(score, qp, *args, grid=grid, bi_civ=bi, targets=(0.98, 0.97))
        own = bal_metrics(qp & (np.asarray(cols["SUBTYPE"]).astype(str) == "BAL"), *args, bi_civ=bi)
        return thr, {"bal_rule": (f"mean(P_BAL share, C_BAL) > {thr:g}: validation BALs found {m['bal_completeness']:.4f}, "
                                  f"non-BAL kept {m['nonbal_rejection']:.4f} (n {m['n_bal']} / {m['n_nonbal']}); the "
                                  f"classifier's own decision {own['bal_completeness']:.4f} / {own['nonbal_rejection']:.4f}")}

    def plot(self, model, spectra, i, row, ax=None):
        return get_family("quasarnet").plot(model.quasarnet, spectra, i, row, ax=ax) if row["SPECTYPE"] == "QSO" \
            else get_family("classifier").plot(model.classifier, spectra, i, row, ax=ax)

    def report(self, t, out, header, overrides, truth_path="") -> list[str]:
        from ..evaluate.classifier import classifier_report

        return classifier_report(t, out, header, overrides, truth_path, combined=True)
