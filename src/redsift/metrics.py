"""Classification and redshift metrics as QuasarNET reports them (Busca & Balland 2018, sect. 4).

* ``dv = c (z_pred - z_true) / (1 + z_true)`` in km/s;
* quasar purity: among spectra classified as quasars, the fraction that are
  quasars (or galaxies, as in the paper) with ``|dv| < dv_max`` (6000 km/s);
* quasar completeness: among true quasars, the fraction classified as quasars
  with ``|dv| < dv_max``;
* catastrophic fraction: among true quasars classified as quasars, the
  fraction with ``|dv| > dv_max``;
* BAL completeness (true BALs found) and non-BAL rejection (true non-BALs not
  flagged), on true quasars with a known BAL label whose CIV BAL region
  (1400-1549 A rest) is on the grid: z >= :data:`BAL_ZMIN` for spectra starting
  at 3600 A (quasars at lower redshift cannot show a CIV BAL and would make the
  rejection look better than it is). When the balnicity index is known, as in
  the paper (sect. 4.3), a BAL is a quasar flagged BAL with ``BI_CIV > 0`` and a
  non-BAL one not flagged with ``BI_CIV = 0``: quasars whose (visual) flag and
  BI disagree are left out, as they are given weight zero in training. The
  same measurement with BI alone as the truth (every ``BI_CIV > 0`` a BAL,
  every ``BI_CIV = 0`` a non-BAL) is returned beside it (``*_bi``).

The finders are trained with eq. 1's balanced weights, so their confidences
are not probabilities: for a rare positive (BAL) the confidence of a non-BAL is
pushed up by roughly the ratio of empty to full boxes. :func:`bal_threshold`
picks the BAL threshold on a *validation* set.
"""

from __future__ import annotations

import numpy as np

from .constants import C_KMS

__all__ = ["C_KMS", "BAL_ZMIN", "DV_CAT", "velocity_difference", "right_answers", "nmad", "qso_metrics", "pulls",
           "pull_metrics", "bal_metrics", "bal_threshold"]

#: DESI's catastrophic limits on |dv|, km/s, per true spectral type (other types: 1,000)
DV_CAT = {"GALAXY": 1000.0, "STAR": 1000.0, "QSO": 3000.0}

#: Lowest redshift at which the CIV BAL region (from 1400 A rest) is on a grid starting at 3600 A.
BAL_ZMIN = 3600.0 / 1400.0 - 1


def velocity_difference(z_pred, z_true) -> np.ndarray:
    z_pred, z_true = np.asarray(z_pred, float), np.asarray(z_true, float)
    return C_KMS * (z_pred - z_true) / (1 + z_true)


def right_answers(spectype, z, true_type, z_true) -> np.ndarray:
    """Answers with the right spectral type and ``|dv|`` within DESI's catastrophic limit of the true type
    (:data:`DV_CAT`); a non-finite ``z`` or an unlabelled row (true type "") is not right."""
    spectype = np.char.strip(np.asarray(spectype).astype(str))
    true_type = np.char.strip(np.asarray(true_type).astype(str))
    z, z_true = np.asarray(z, float), np.asarray(z_true, float)
    lim = np.array([DV_CAT.get(t, 1000.0) for t in true_type.tolist()], float)
    with np.errstate(invalid="ignore"):
        dv = np.abs(z - z_true) / (1 + z_true) * C_KMS
    return (spectype == true_type) & (true_type != "") & (np.nan_to_num(dv, nan=np.inf) <= lim)


def nmad(x) -> float:
    """Normalised median absolute deviation, 1.4826 median(|x - median(x)|)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if x.size else float("nan")


def qso_metrics(is_qso_pred, z_pred, class_true, z_true, dv_max: float = 6000.0) -> dict:
    is_qso_pred = np.asarray(is_qso_pred, bool)
    cls = np.asarray(class_true).astype(str)
    true_qso = cls == "QSO"
    dv = velocity_difference(z_pred, z_true)
    good_z = np.abs(dv) < dv_max
    n_pred, n_true = int(is_qso_pred.sum()), int(true_qso.sum())
    correct = is_qso_pred & (true_qso | (cls == "GALAXY")) & good_z
    found = true_qso & is_qso_pred & good_z
    both = true_qso & is_qso_pred
    dvq = dv[both]
    return {
        "n": int(cls.size), "n_true_qso": n_true, "n_pred_qso": n_pred,
        "purity": correct.sum() / n_pred if n_pred else float("nan"),
        "completeness": found.sum() / n_true if n_true else float("nan"),
        "catastrophic": float(np.mean(np.abs(dvq) > dv_max)) if dvq.size else float("nan"),
        "dv_mean": float(np.mean(dvq[np.abs(dvq) < dv_max])) if found.any() else float("nan"),
        "dv_std": float(np.std(dvq[np.abs(dvq) < dv_max])) if found.any() else float("nan"),
        "dv_nmad": nmad(dvq[np.abs(dvq) < dv_max]) if found.any() else float("nan"),
    }


def pulls(z_pred, zerr, z_true, found, dv_max: float = 6000.0) -> np.ndarray:
    """The pulls ``(z_pred - z_true) / zerr`` of true quasars found (``found``) with ``|dv| < dv_max``
    and a finite, positive ``zerr``."""
    z_pred, zerr, z_true = (np.asarray(a, float) for a in (z_pred, zerr, z_true))
    sel = np.asarray(found, bool) & np.isfinite(zerr) & (zerr > 0)
    sel &= np.abs(velocity_difference(np.where(sel, z_pred, 0), z_true)) < dv_max
    return (z_pred[sel] - z_true[sel]) / zerr[sel]


def pull_metrics(z_pred, zerr, z_true, found, dv_max: float = 6000.0) -> dict:
    """Standard deviation and NMAD of :func:`pulls`: both ~1 for a calibrated ``zerr``."""
    pull = pulls(z_pred, zerr, z_true, found, dv_max)
    return {"pull_std": float(np.std(pull)) if pull.size else float("nan"),
            "pull_nmad": nmad(pull) if pull.size else float("nan")}


def bal_metrics(is_bal_pred, bal_true, is_qso_true, z_true=None, zmin: float = BAL_ZMIN, bi_civ=None) -> dict:
    """BAL completeness and non-BAL rejection (on true quasars with ``z_true >= zmin`` when given).

    ``bal_true`` is the BAL flag (1, 0, -1 unknown). With ``bi_civ``, only quasars whose flag and
    ``BI_CIV`` agree count (Busca & Balland 2018, sect. 3 and 4.3), and ``bal_completeness_bi`` /
    ``nonbal_rejection_bi`` measure the same decisions against ``BI_CIV > 0`` alone (flag known).
    """
    is_bal_pred = np.asarray(is_bal_pred, bool)
    bal = np.asarray(bal_true)
    q = np.asarray(is_qso_true, bool)
    if z_true is not None:
        q = q & (np.nan_to_num(np.asarray(z_true, float), nan=-1.0) >= zmin)
    t_bal = q & (bal == 1)
    t_non = q & (bal == 0)
    out = {}
    if bi_civ is not None:
        bi = np.nan_to_num(np.asarray(bi_civ, float), nan=0.0)
        known = q & (bal >= 0)
        out = {"n_bal_bi": int((known & (bi > 0)).sum()), "n_nonbal_bi": int((known & (bi <= 0)).sum()),
               "bal_completeness_bi": _mean(is_bal_pred[known & (bi > 0)]),
               "nonbal_rejection_bi": _mean(~is_bal_pred[known & (bi <= 0)])}
        t_bal &= bi > 0
        t_non &= bi <= 0
    return {"n_bal": int(t_bal.sum()), "n_nonbal": int(t_non.sum()),
            "bal_completeness": _mean(is_bal_pred[t_bal]), "nonbal_rejection": _mean(~is_bal_pred[t_non]), **out}


def _mean(x) -> float:
    return float(np.mean(x)) if np.size(x) else float("nan")


def bal_threshold(c_bal, is_qso_pred, bal_true, is_qso_true, z_true=None, zmin: float = BAL_ZMIN,
                  grid=None, bi_civ=None, targets=(0.0, 0.0)) -> tuple[float, dict]:
    """The BAL threshold with the largest ``min(completeness - targets[0], rejection - targets[1])``.

    With the default ``targets`` it maximises min(BAL completeness, non-BAL rejection); with
    ``targets=(0.98, 0.97)`` it looks for the paper's operating point (98.0% / 97.0%) and takes the
    threshold with the largest margin over both. Meant for a validation set (never the held-out set
    the model is judged on). The default grid is finer above 0.95, where eq. 1's balanced weights
    crowd the BAL confidences.
    """
    c = np.nan_to_num(np.asarray(c_bal, float))
    qp = np.asarray(is_qso_pred, bool)
    if grid is None:
        grid = np.round(np.r_[np.arange(0.05, 0.95, 0.005), np.arange(0.95, 0.9995, 0.001)], 4)
    best, best_m, best_score = 0.4, None, -np.inf
    for th in np.asarray(grid):
        m = bal_metrics(qp & (c > th), bal_true, is_qso_true, z_true, zmin, bi_civ)
        score = min(m["bal_completeness"] - targets[0], m["nonbal_rejection"] - targets[1])
        if score > best_score:
            best, best_m, best_score = float(th), m, score
    if best_m is None:  # no BALs or no non-BALs: nothing to choose on
        best_m = bal_metrics(qp & (c > best), bal_true, is_qso_true, z_true, zmin, bi_civ)
    return best, best_m


def redshift_metrics(z_pred, z_true, catastrophic: float = 0.01) -> dict:
    """Bias (median), NMAD and MAD (median |dz|/(1+z)) of dz/(1+z), and the catastrophic fraction
    (|dz|/(1+z) > ``catastrophic``), for matched arrays."""
    z_pred, z_true = np.asarray(z_pred, float), np.asarray(z_true, float)
    d = (z_pred - z_true) / (1 + z_true)
    ok = np.isfinite(d)
    d = d[ok]
    if not d.size:
        return {"n": 0, "bias": float("nan"), "nmad": float("nan"), "mad": float("nan"), "catastrophic": float("nan")}
    return {"n": int(d.size), "bias": float(np.median(d)), "nmad": nmad(d), "mad": float(np.median(np.abs(d))),
            "catastrophic": float(np.mean(np.abs(d) > catastrophic))}


def coverage(z_pred, zerr, z_true) -> dict:
    """Fraction of |z - z_true| within 1 and 1.96 ZERR (68.3% and 95% expected), and the robust pull scatter."""
    z_pred, zerr, z_true = (np.asarray(a, float) for a in (z_pred, zerr, z_true))
    ok = np.isfinite(z_pred) & np.isfinite(zerr) & (zerr > 0)
    p = (z_pred[ok] - z_true[ok]) / zerr[ok]
    if not p.size:
        return {"cov68": float("nan"), "cov95": float("nan"), "pull_nmad": float("nan"), "n_pull": 0}
    return {"cov68": float(np.mean(np.abs(p) < 1)), "cov95": float(np.mean(np.abs(p) < 1.96)), "pull_nmad": nmad(p),
            "n_pull": int(p.size)}


def classifier_metrics(d: dict, y, z_true, cfg, zerr) -> dict:
    """Accuracy (overall, per class, mean and minimum per class), spectral-type accuracy, redshift metrics
    per true spectral type and ZERR coverage, for decoded classifier outputs ``d`` against class indices
    ``y`` (-1/-2: ignored/unlabelled rows, left out)."""
    tax = cfg.tax
    y = np.asarray(y)
    ok = y >= 0
    cls, st = d["cls"][ok], d["spectype"][ok]
    yt = y[ok]
    types = np.array(tax.spectypes)
    true_st = types[yt] if yt.size else np.zeros(0, "U8")
    m = {"n": int(ok.sum()), "accuracy": float(np.mean(cls == yt)) if yt.size else float("nan")}
    accs = []
    for k, name in enumerate(tax.classes):
        sel = yt == k
        if sel.any():
            a = float(np.mean(cls[sel] == k))
            m[f"acc_{name}"] = a
            accs.append(a)
    m["mean_class_acc"] = float(np.mean(accs)) if accs else float("nan")
    m["min_class_acc"] = float(np.min(accs)) if accs else float("nan")
    m["spectype_acc"] = float(np.mean(st == true_st)) if yt.size else float("nan")
    zp, zt, ze = d["z"][ok], np.asarray(z_true, float)[ok], np.asarray(zerr, float)[ok]
    if cfg.z_head != "none":
        for s in ("GALAXY", "QSO", "STAR"):
            sel = true_st == s
            if not sel.any():
                continue
            r = redshift_metrics(zp[sel], zt[sel])
            m[f"typeacc_{s}"] = float(np.mean(st[sel] == s))
            m[f"nmad_{s}"], m[f"cat_{s}"], m[f"bias_{s}"] = r["nmad"], r["catastrophic"], r["bias"]
            if s == "STAR":
                m["v_std_STAR"] = nmad((zp[sel] - zt[sel]) * C_KMS)
        right = st == true_st
        c = coverage(zp[right], ze[right], zt[right])
        m.update({k: v for k, v in c.items() if k != "n_pull"})
    return m
