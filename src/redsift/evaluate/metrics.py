"""Classification and redshift metrics as QuasarNET reports them (Busca & Balland 2018, sect. 4).

* ``dv = c (z_pred - z_true) / (1 + z_true)`` in km/s;
* quasar purity: among spectra classified as quasars, the fraction that are
  quasars (or galaxies, as in the paper) with ``|dv| < dv_max`` (6000 km/s);
* quasar completeness: among true quasars, the fraction classified as quasars
  with ``|dv| < dv_max``;
* catastrophic fraction: among true quasars classified as quasars, the
  fraction with ``|dv| > dv_max``;
* BAL completeness (true BALs found) and non-BAL rejection (true non-BALs not
  flagged), on true quasars with a known BAL label.
"""

from __future__ import annotations

import numpy as np

__all__ = ["C_KMS", "velocity_difference", "nmad", "qso_metrics", "bal_metrics"]

C_KMS = 299792.458


def velocity_difference(z_pred, z_true) -> np.ndarray:
    z_pred, z_true = np.asarray(z_pred, float), np.asarray(z_true, float)
    return C_KMS * (z_pred - z_true) / (1 + z_true)


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


def bal_metrics(is_bal_pred, bal_true, is_qso_true) -> dict:
    is_bal_pred = np.asarray(is_bal_pred, bool)
    bal = np.asarray(bal_true)
    q = np.asarray(is_qso_true, bool)
    t_bal = q & (bal == 1)
    t_non = q & (bal == 0)
    return {"n_bal": int(t_bal.sum()), "n_nonbal": int(t_non.sum()),
            "bal_completeness": float(np.mean(is_bal_pred[t_bal])) if t_bal.any() else float("nan"),
            "nonbal_rejection": float(np.mean(~is_bal_pred[t_non])) if t_non.any() else float("nan")}
