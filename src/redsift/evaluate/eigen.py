"""The eigen family's section of ``redsift evaluate`` (docs/eigen.md).

Per true spectral type: the fraction typed right, MAD (median |dz|/(1+z)), GF (fraction with
|dz|/(1+z) under 1e-3 and under 0.01: GaSNet-III's "good fraction" at its code's default and at the
catastrophic limit), NMAD, the catastrophic fraction with DESI's limits (|dv| > 1000 km/s for galaxies and
stars, > 3000 km/s for quasars), ZERR pulls and coverage; the MK letter of stars; the same among
``ZWARN == 0``. Figures: ``deltachi2.png`` (the degeneracy plot: DELTACHI2 of right and wrong answers and
the failure rate kept against a DELTACHI2 cut), ``chi2_curves.png`` (the coarse chi-square curves of a few
spectra, when the model named in the catalog header can be loaded and the truth is a dataset), and
``anomaly_roc.png`` with the ROC AUC when the truth carries an ``ANOMALY`` column (injected anomalies,
``scripts/eigen_anomalies.py``).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..constants import C_KMS
from ..metrics import DV_CAT, coverage, nmad, right_answers
from ..taxonomy import SPECTYPES

__all__ = ["eigen_report", "eigen_metrics", "roc_auc"]

log = logging.getLogger(__name__)


def roc_auc(score, label) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic; ties count one half)."""
    score, label = np.asarray(score, float), np.asarray(label, bool)
    ok = np.isfinite(score)
    score, label = score[ok], label[ok]
    npos, nneg = int(label.sum()), int((~label).sum())
    if not npos or not nneg:
        return float("nan")
    from scipy.stats import rankdata

    r = rankdata(score)
    return float((r[label].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def eigen_metrics(spectype, z, zerr, true_type, true_z, zwarn=None) -> dict:
    """Per true spectral type: n, typed right, MAD, GF(1e-3), GF(0.01), NMAD, catastrophic (DESI limits),
    68/95% coverage of ZERR; with ``zwarn`` also the fraction with ZWARN == 0 and the catastrophic rate there."""
    spectype, true_type = np.asarray(spectype).astype(str), np.asarray(true_type).astype(str)
    z, zerr, true_z = (np.asarray(a, float) for a in (z, zerr, true_z))
    dz = (z - true_z) / (1 + true_z)
    out = {}
    for t in SPECTYPES:
        m = true_type == t
        if not m.any():
            continue
        a = np.abs(dz[m])
        a = np.where(np.isfinite(a), a, np.inf)
        cat = a > DV_CAT[t] / C_KMS
        row = {"n": int(m.sum()), "typed": float(np.mean(spectype[m] == t)), "mad": float(np.median(a)),
               "gf_1e-3": float(np.mean(a < 1e-3)), "gf_0.01": float(np.mean(a < 0.01)),
               "nmad": nmad(dz[m][np.isfinite(dz[m])]) if np.isfinite(dz[m]).any() else float("nan"),
               "catastrophic": float(np.mean(cat))}
        row.update(coverage(z[m], zerr[m], true_z[m]))
        if zwarn is not None:
            good = np.asarray(zwarn)[m] == 0
            row["zwarn0"] = float(np.mean(good))
            row["catastrophic_zwarn0"] = float(np.mean(cat[good])) if good.any() else float("nan")
        out[t] = row
    return out


def _table(metrics: dict) -> list[str]:
    lines = ["| true type | n | typed right | MAD | GF(1e-3) | GF(0.01) | NMAD | catastrophic (DESI) | 68% cov | 95% cov | "
             "ZWARN=0 | catastrophic at ZWARN=0 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t, r in metrics.items():
        lines.append(f"| {t} | {r['n']} | {r['typed']:.4f} | {r['mad']:.2e} | {r['gf_1e-3']:.4f} | {r['gf_0.01']:.4f} | "
                     f"{r['nmad']:.2e} | {r['catastrophic']:.4f} | {r['cov68']:.3f} | {r['cov95']:.3f} | "
                     f"{r.get('zwarn0', float('nan')):.4f} | {r.get('catastrophic_zwarn0', float('nan')):.4f} |")
    return lines


def _figure(nrows=1, ncols=1, size=(6, 4)):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _deltachi2_plot(dchi2, wrong, path, label, signed: bool = False):
    """DELTACHI2 of right and wrong answers and what a cut keeps. ``signed``: the default's DELTACHI2, negative where
    another redshift fits better than its answer (``sign(d) log10(1 + |d|)``, the cuts from -1,000)."""
    fig, ax = _figure(1, 2, (11, 4))
    if signed:
        fin = np.where(np.isfinite(dchi2), dchi2, np.nan)
        d = np.sign(fin) * np.log10(1 + np.abs(fin))
        bins = np.linspace(-4, 6, 60)
        xlab = "sign x log10(1 + |DELTACHI2|)"
        mark = np.log10(10)
    else:
        d = np.log10(np.clip(np.where(np.isfinite(dchi2), dchi2, 1e6), 1e-2, 1e6))
        bins = np.linspace(-2, 6, 50)
        xlab = "log10 DELTACHI2"
        mark = np.log10(9)
    ax[0, 0].hist(d[~wrong], bins, histtype="step", label=f"right ({int((~wrong).sum())})", density=True)
    ax[0, 0].hist(d[wrong], bins, histtype="step", label=f"catastrophic or wrong type ({int(wrong.sum())})", density=True)
    ax[0, 0].axvline(mark, color="k", ls=":", label="SMALL_DELTA_CHI2 (9)")
    ax[0, 0].set_xlabel(xlab)
    ax[0, 0].set_ylabel("density")
    ax[0, 0].legend(fontsize=8)
    cuts = np.r_[-np.logspace(3, -1, 30), np.logspace(-1, 4, 40)] if signed else np.logspace(-1, 4, 60)
    kept = np.array([np.mean(dchi2 >= c) for c in cuts])
    fail = np.array([np.mean(wrong[dchi2 >= c]) if (dchi2 >= c).any() else np.nan for c in cuts])
    ax[0, 1].plot(cuts, kept, label="fraction kept")
    ax[0, 1].plot(cuts, fail * 10, label="wrong among kept x 10")
    ax[0, 1].set_xscale("symlog" if signed else "log")
    ax[0, 1].axvline(9, color="k", ls=":")
    ax[0, 1].set_xlabel("DELTACHI2 cut (kept: DELTACHI2 >= cut)")
    ax[0, 1].legend(fontsize=8)
    fig.suptitle(f"degeneracy: DELTACHI2 ({label})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _roc_plot(score, label, kinds, path, title):
    fig, ax = _figure(1, 1, (5.5, 5))
    a = ax[0, 0]
    ok = np.isfinite(score)
    for kind in sorted(set(kinds[label])):
        sel = ok & (~label | (kinds == kind))
        s, lab = score[sel], label[sel]
        order = np.argsort(-s)
        tp = np.cumsum(lab[order]) / max(lab.sum(), 1)
        fp = np.cumsum(~lab[order]) / max((~lab).sum(), 1)
        a.plot(fp, tp, label=f"{kind}: AUC {roc_auc(s, lab):.3f}")
    a.plot([0, 1], [0, 1], "k:", lw=0.8)
    a.set_xlabel("false positive rate (normal spectra)")
    a.set_ylabel("true positive rate (injected anomalies)")
    a.set_title(title, fontsize=9)
    a.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _curves_plot(header, truth_path, t, path, label) -> bool:
    """Coarse chi-square curves of one spectrum per true type and of the worst failure (needs the model
    named in the header and a dataset truth)."""
    model_name = str(header.get("MODEL", ""))
    src = model_name.split(":", 1)[1] if ":" in model_name else model_name
    try:
        import torch

        from ..data.store import Dataset
        from ..models import get_family, load_model
        from ..models.eigen import scan

        model = load_model(src)
        if getattr(model, "family", "") != "eigen":
            return False
        ds = Dataset(truth_path)
    except Exception as exc:  # noqa: BLE001 - the figure is optional; say why it is missing
        log.info("chi2 curves skipped (%s)", exc)
        return False
    tt = np.asarray(t["TRUE_CLASS"]).astype(str)
    z, zt = np.asarray(t["Z"], float), np.asarray(t["TRUE_Z"], float)
    err = np.abs(z - zt) / (1 + zt)
    picks = []
    for c in ("GALAXY", "QSO", "STAR"):
        idx = np.flatnonzero(tt == c)
        if len(idx):
            picks.append((f"{c}", idx[0]))
    bad = np.flatnonzero(np.where(np.isfinite(err), err, np.inf) > 0.01)
    if len(bad):
        picks.append(("worst failure", bad[np.argmax(np.asarray(t["DELTACHI2"], float)[bad])]))
    pos = {int(tid): r for r, tid in enumerate(np.asarray(ds.meta["TARGETID"]))}  # the truth's rows
    rows = np.array([pos.get(int(tid), -1) for tid in np.asarray(t["TARGETID"])], np.int64)
    picks = [(name, i) for name, i in picks if rows[i] >= 0]
    fam = get_family("eigen")
    fig, ax = _figure(len(picks), 1, (9, 2.4 * len(picks)))
    for a, (name, i) in zip(ax[:, 0], picks):
        f, iv, _ = ds.read([rows[i]])
        X = fam.prepare_gridded(model, f, iv, np.zeros(1, np.int64))["X"]
        with torch.inference_mode():
            _, curves = scan(model, X, return_curves=True)
        finite = [c2[0][np.isfinite(c2[0])] for _, c2 in curves.values()]
        gmin = min((float(x.min()) for x in finite if len(x)), default=0.0)
        for cname, (zz, c2) in curves.items():
            if len(zz) > 20:  # the redshift classes; stars are the points near z = 0
                a.plot(zz, c2[0] - gmin + 1, lw=0.7, label=cname)
        stars = [(cname, float(np.nanmin(c2[0])) - gmin + 1) for cname, (zz, c2) in curves.items() if len(zz) <= 20
                 and np.isfinite(c2[0]).any()]
        if stars:
            sname, sval = min(stars, key=lambda x: x[1])
            a.plot([0], [sval], "k*", label=f"best star ({sname})")
        a.axvline(zt[i], color="k", ls=":", lw=0.8)
        a.axvline(z[i], color="r", ls="--", lw=0.8)
        a.set_yscale("log")
        a.set_ylabel("chi2 - best + 1 (coarse)")
        a.set_title(f"{name}: true z {zt[i]:.4f} (dotted), found {z[i]:.4f} (dashed), DELTACHI2 "
                    f"{float(t['DELTACHI2'][i]):.1f}", fontsize=8)
        a.legend(fontsize=6, ncol=3)
    ax[-1, 0].set_xlabel("trial redshift")
    fig.suptitle(f"chi-square curves ({label})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def eigen_report(t, out, header, overrides, truth_path="") -> list[str]:
    """Markdown lines (and figures in ``out``) for a catalog of the eigen family joined to its truth."""
    tt = np.asarray(t["TRUE_CLASS"]).astype(str)
    zw = np.asarray(t["ZWARN"], np.int64)
    m = eigen_metrics(t["SPECTYPE"], t["Z"], t["ZERR"], tt, t["TRUE_Z"], zw)
    lines = ["## Eigenspectra + chi-square scan", "",
             "Per true spectral type (catastrophic: |dv| > 1000 km/s for galaxies and stars, > 3000 km/s for quasars):", ""]
    lines += _table(m) + [""]
    star = tt == "STAR"
    if star.any() and "TRUE_SUBCLASS" in t.colnames:
        letter = np.array([s[:1] for s in np.asarray(t["TRUE_SUBCLASS"]).astype(str)])
        sub = np.asarray(t["SUBTYPE"]).astype(str)
        mk = "OBAFGKML"
        ok = star & np.isin(letter, list(mk)) & np.isin(sub, list(mk))
        if ok.any():
            d = np.abs(np.array([mk.index(a) for a in letter[ok]]) - np.array([mk.index(b) for b in sub[ok]]))
            lines += [f"Stars: MK letter exact {np.mean(d == 0):.3f}, within one type {np.mean(d <= 1):.3f} "
                      f"({int(ok.sum())} stars typed with an MK letter).", ""]
    wrong = ~right_answers(t["SPECTYPE"], t["Z"], tt, t["TRUE_Z"])
    label = overrides.get("label", "simulated held-out")
    if "DELTACHI2" in t.colnames:
        dchi2 = np.asarray(t["DELTACHI2"], float)
        if np.isfinite(dchi2).any():
            _deltachi2_plot(dchi2, wrong, os.path.join(out, "deltachi2.png"), label)
            small = (zw & 4) > 0
            lines += [f"Degeneracy: {np.mean(small):.4f} flagged SMALL_DELTA_CHI2; wrong (type or catastrophic) among "
                      f"them {np.mean(wrong[small]) if small.any() else float('nan'):.3f}, among the rest "
                      f"{np.mean(wrong[~small]):.4f} (`deltachi2.png`).", ""]
    if truth_path and _curves_plot(header, truth_path, t, os.path.join(out, "chi2_curves.png"), label):
        lines += ["Chi-square curves of one spectrum per type and of the failure with the largest DELTACHI2: "
                  "`chi2_curves.png`.", ""]
    if "TRUE_ANOMALY" in t.colnames and "ANOMALY" in t.colnames:
        kinds = np.asarray(t["TRUE_ANOMALY"]).astype(str)
        lab = kinds != ""
        score = np.asarray(t["ANOMALY"], float)
        auc = roc_auc(score, lab)
        lines += [f"Anomalies: ROC AUC {auc:.3f} over {int(lab.sum())} injected and {int((~lab).sum())} normal spectra; "
                  "per kind:", "", "| kind | n | AUC |", "|---|---|---|"]
        for kind in sorted(set(kinds[lab])):
            sel = ~lab | (kinds == kind)
            lines.append(f"| {kind} | {int((kinds == kind).sum())} | {roc_auc(score[sel], lab[sel]):.3f} |")
        lines.append("")
        _roc_plot(score, lab, kinds, os.path.join(out, "anomaly_roc.png"), f"anomaly score ROC ({label})")
    return lines
