"""QuasarNET's section of ``redsift evaluate`` (Busca & Balland 2018, figs. 2-7).

``purity_completeness.png`` (fig. 3: against the confidence threshold, 1- and 2-line detections),
``dv_hist.png`` (fig. 4), ``bal.png`` (fig. 5), ``zbins.png`` (fig. 7), ``pulls.png`` ((z - z_true) /
ZERR against a unit Gaussian) when the catalog has finite ZERR, and ``examples.png`` (fig. 2) when the
truth is a dataset whose spectra can be read. ``--set c_th=X`` recomputes IS_QSO at threshold X from
the per-line confidences (default: the catalog's own IS_QSO and Z).
"""

from __future__ import annotations

import os

import numpy as np
from astropy.table import Table

from ..constants import QSO_LINES_VACUUM
from ..metrics import BAL_ZMIN, bal_metrics, pull_metrics, pulls, qso_metrics, velocity_difference

__all__ = ["decisions", "evaluate_catalog", "quasarnet_report"]

LINES = tuple(name for name, _ in QSO_LINES_VACUUM)


def decisions(t: Table, c_th: float | None, n_lines: int = 1):
    """IS_QSO and redshift: the catalog's own (``IS_QSO``, ``Z``: the model's decision rule and
    redshift method) when ``c_th`` is None, else IS_QSO recomputed from the per-line confidences at
    threshold ``c_th`` with the catalog's ``Z`` where it has one and the most confident line's
    redshift elsewhere."""
    lines = [ln for ln in LINES if f"C_{ln}" in t.colnames]
    C = np.column_stack([np.nan_to_num(np.asarray(t[f"C_{ln}"], float), nan=0.0) for ln in lines])
    Z = np.column_stack([np.asarray(t[f"Z_{ln}"], float) for ln in lines])
    zbest = Z[np.arange(len(t)), C.argmax(axis=1)]
    if "Z" in t.colnames:
        zcat = np.asarray(t["Z"], float)
        zbest = np.where(np.isfinite(zcat), zcat, zbest)
    if c_th is None and "IS_QSO" in t.colnames:
        return np.asarray(t["IS_QSO"], bool), zbest
    is_qso = (C > (0.4 if c_th is None else c_th)).sum(axis=1) >= n_lines
    return is_qso, zbest


def evaluate_catalog(t: Table, c_th: float | None = None, c_bal: float | None = None) -> dict:
    """Metrics of a joined catalog: the model's own decisions when ``c_th`` is None (see :func:`decisions`);
    ``c_bal=None`` uses the model's own BAL decision (``IS_BAL``)."""
    is_qso, zbest = decisions(t, c_th)
    cls = np.asarray(t["TRUE_CLASS"]).astype(str)
    m = qso_metrics(is_qso, zbest, cls, t["TRUE_Z"])
    if "ZERR" in t.colnames and np.isfinite(np.asarray(t["ZERR"], float)).any():
        m.update(pull_metrics(t["Z"], t["ZERR"], t["TRUE_Z"], is_qso & (cls == "QSO")))
    if "TRUE_BAL_FLAG" in t.colnames and "C_BAL" in t.colnames:
        if c_bal is None and "IS_BAL" in t.colnames:
            is_bal = is_qso & np.asarray(t["IS_BAL"], bool)
        else:
            is_bal = is_qso & (np.nan_to_num(np.asarray(t["C_BAL"], float)) > (0.4 if c_bal is None else c_bal))
        m.update(bal_metrics(is_bal, t["TRUE_BAL_FLAG"], cls == "QSO", t["TRUE_Z"], bi_civ=_col(t, "TRUE_BI_CIV")))
    return m


def _col(t, name):
    return np.asarray(t[name]) if name in t.colnames else None


def _bins_table(t, key, edges, c_th):
    rows = []
    vals = np.asarray(t[key], float)
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (vals >= lo) & (vals < hi)
        if sel.sum() == 0:
            continue
        m = evaluate_catalog(t[sel], c_th)
        rows.append((lo, hi, int(sel.sum()), m["n_true_qso"], m["purity"], m["completeness"], m["dv_std"],
                     m["catastrophic"]))
    return rows


def _examples(t, truth_path, c_th, png) -> str:
    """Fig. 2: a few spectra of each outcome with their line detections (datasets only)."""
    from ..data.store import INDEX_NAME, Dataset
    from ..spectra import Spectra
    from .plots import new_axes, plot_prediction

    if not (os.path.isdir(truth_path) and os.path.exists(os.path.join(truth_path, INDEX_NAME))):
        return ""
    ds = Dataset(truth_path)
    tid = np.asarray(ds.meta["TARGETID"])
    is_qso, zb = decisions(t, c_th)
    cls = np.asarray(t["TRUE_CLASS"]).astype(str)
    dv = np.abs(velocity_difference(zb, t["TRUE_Z"]))
    bal = np.asarray(t["TRUE_BAL_FLAG"]) == 1 if "TRUE_BAL_FLAG" in t.colnames else np.zeros(len(t), bool)
    picks = [("quasar found", is_qso & (cls == "QSO") & (dv < 6000) & ~bal),
             ("BAL quasar", is_qso & (cls == "QSO") & bal),
             ("quasar missed", ~is_qso & (cls == "QSO")),
             ("wrong redshift", is_qso & (cls == "QSO") & (dv >= 6000)),
             ("false positive", is_qso & (cls == "STAR")),
             ("star rejected", ~is_qso & (cls == "STAR"))]
    chosen = [(label, int(np.flatnonzero(sel)[0])) for label, sel in picks if sel.any()]
    if not chosen:
        return ""
    fig, _ = new_axes(figsize=(10, 2.6 * len(chosen)))
    fig.clear()
    axes = np.atleast_1d(fig.subplots(len(chosen), 1))
    for ax, (label, k) in zip(axes, chosen):
        row = int(np.flatnonzero(tid == t["TARGETID"][k])[0])
        flux, ivar, mask = ds.read([row])
        spec = Spectra(ds.grid.wave, flux, ivar, mask, ds.meta[[row]])
        plot_prediction(spec, 0, t[k], ax=ax)
        ax.set_title(f"{label}: true {cls[k]} z={t['TRUE_Z'][k]:.3f} | " + ax.get_title(), fontsize=8)
    fig.savefig(png, dpi=80)
    return ", ".join(label for label, _ in chosen)


def quasarnet_report(t: Table, out: str, header: dict, overrides: dict, truth_path: str = "") -> list[str]:
    """The QuasarNET section: Markdown lines; the figures are written into ``out``."""
    from .plots import new_axes

    c_th = float(overrides["c_th"]) if "c_th" in overrides else None
    rule = {k: header[k] for k in ("C_TH", "N_LINES", "C_BAL", "Z_METHOD") if k in header}
    m = evaluate_catalog(t, c_th)
    cls = np.asarray(t["TRUE_CLASS"]).astype(str)
    bal_set = (" whose BAL flag and BI_CIV agree (the paper's set; *_bi: BI_CIV > 0 alone as the truth)"
               if "bal_completeness_bi" in m else "")
    own = "the catalog's own (IS_QSO, Z)" if c_th is None else f"c_th = {c_th}, 1 line"
    lines = ["## QuasarNET", "",
             f"{m['n_true_qso']} true quasars; quasar decisions: {own}; BAL: the catalog's IS_BAL (the model's "
             f"own BAL threshold), counted on true quasars at z >= {BAL_ZMIN:.2f}"
             f"{bal_set}.",
             *(["The model's decision rule (catalog header): "
                + ", ".join(f"{k} = {v}" for k, v in rule.items()) + "."] if rule else []),
             "",
             "| metric | value |", "|---|---:|"]
    for k in ("purity", "completeness", "catastrophic", "dv_mean", "dv_std", "dv_nmad", "pull_std", "pull_nmad",
              "bal_completeness", "nonbal_rejection", "n_bal", "n_nonbal", "bal_completeness_bi",
              "nonbal_rejection_bi", "n_bal_bi", "n_nonbal_bi"):
        if k in m:
            v = m[k]
            lines.append(f"| {k} | {v:.4f} |" if isinstance(v, float) and abs(v) < 10 else f"| {k} | {v:.0f} |"
                         if isinstance(v, (int, float)) and np.isfinite(v) else f"| {k} | {v} |")

    # fig. 3: purity and completeness against the threshold
    ths = np.linspace(0.05, 0.95, 19)
    fig, ax = new_axes(figsize=(6, 4))
    sweep = {}
    for nl, ls in ((1, "-"), (2, "--")):
        pur, com = [], []
        for th in ths:
            q, zb = decisions(t, th, nl)
            mm = qso_metrics(q, zb, cls, t["TRUE_Z"])
            pur.append(mm["purity"])
            com.append(mm["completeness"])
            sweep[(nl, round(float(th), 2))] = (mm["purity"], mm["completeness"])
        ax.plot(ths, pur, ls, color="tab:blue", label=f"purity, {nl} line{'s' if nl > 1 else ''}")
        ax.plot(ths, com, ls, color="tab:red", label=f"completeness, {nl} line{'s' if nl > 1 else ''}")
    if "C_TH" in rule:
        ax.axvline(float(rule["C_TH"]), color="0.5", ls=":", label=f"the model's c_th {rule['C_TH']}")
    ax.set_xlabel("confidence threshold c_th")
    ax.set_ylim(0.8, 1.0)
    ax.legend(fontsize=7)
    fig.savefig(os.path.join(out, "purity_completeness.png"), dpi=110)
    lines += ["", "Purity / completeness against the threshold (fig. 3):", "",
              "| c_th | 1 line | 2 lines |", "|---:|---|---|"]
    for th in (0.2, 0.4, 0.6, 0.8, 0.9, 0.95):
        cells = [f"{sweep[(nl, th)][0]:.4f} / {sweep[(nl, th)][1]:.4f}" for nl in (1, 2)]
        lines.append(f"| {th} | {cells[0]} | {cells[1]} |")

    # fig. 4: velocity differences of true quasars classified as quasars
    q, zb = decisions(t, c_th)
    dv = velocity_difference(zb, t["TRUE_Z"])[q & (cls == "QSO")]
    fig, ax = new_axes(figsize=(6, 4))
    ax.hist(np.clip(dv, -6000, 6000), np.linspace(-6000, 6000, 121), color="k", histtype="step")
    ax.set_xlabel("dv = c (z_pred - z_true) / (1 + z_true)  [km/s]")
    ax.set_title(f"mean {m['dv_mean']:.0f}, std {m['dv_std']:.0f}, NMAD {m['dv_nmad']:.0f} km/s; "
                 f"|dv| > 6000: {100 * m['catastrophic']:.2f}%", fontsize=8)
    fig.savefig(os.path.join(out, "dv_hist.png"), dpi=110)

    # the redshift errors: pulls of the true quasars found, against a unit Gaussian
    if "pull_std" in m:
        pull = pulls(t["Z"], t["ZERR"], t["TRUE_Z"], q & (cls == "QSO"))
        fig, ax = new_axes(figsize=(6, 4))
        edges = np.linspace(-5, 5, 81)
        ax.hist(np.clip(pull, -5, 5), edges, density=True, color="k", histtype="step", label="pulls")
        x = np.linspace(-5, 5, 400)
        ax.plot(x, np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi), color="tab:red", label="unit Gaussian")
        ax.set_xlabel("(z - z_true) / ZERR")
        ax.set_title(f"std {m['pull_std']:.2f}, NMAD {m['pull_nmad']:.2f} ({pull.size} quasars)", fontsize=8)
        ax.legend(fontsize=7)
        fig.savefig(os.path.join(out, "pulls.png"), dpi=110)

    # fig. 5: BAL completeness and non-BAL rejection against the BAL threshold
    if "C_BAL" in t.colnames and "TRUE_BAL_FLAG" in t.colnames:
        fig, ax = new_axes(figsize=(6, 4))
        comp, rej = [], []
        bths = np.r_[ths, 0.97, 0.98, 0.99, 0.995]  # balanced-loss BAL confidences crowd near 1
        cbal, bflag, tz, bi = np.nan_to_num(np.asarray(t["C_BAL"], float)), t["TRUE_BAL_FLAG"], t["TRUE_Z"], _col(t, "TRUE_BI_CIV")
        for th in bths:
            bm = bal_metrics(q & (cbal > th), bflag, cls == "QSO", tz, bi_civ=bi)
            comp.append(bm["bal_completeness"])
            rej.append(bm["nonbal_rejection"])
        ax.plot(bths, comp, label="BAL completeness")
        ax.plot(bths, rej, label="non-BAL rejection")
        if "C_BAL" in rule:
            ax.axvline(float(rule["C_BAL"]), color="0.5", ls=":", label=f"the model's c_bal {rule['C_BAL']}")
        ax.set_xlabel("BAL confidence threshold")
        ax.legend(fontsize=7)
        fig.savefig(os.path.join(out, "bal.png"), dpi=110)

    # fig. 7: purity/completeness in redshift bins; and every metric per S/N bin
    zrows = _bins_table(t, "TRUE_Z", [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 5.5], c_th)
    fig, ax = new_axes(figsize=(6, 4))
    mids = [(r[0] + r[1]) / 2 for r in zrows]
    ax.plot(mids, [r[4] for r in zrows], "o-", label="purity")
    ax.plot(mids, [r[5] for r in zrows], "s-", label="completeness")
    ax.set_xlabel("true redshift")
    ax.legend(fontsize=7)
    fig.savefig(os.path.join(out, "zbins.png"), dpi=110)
    for title, rows in (("redshift", zrows),
                        ("S/N per pixel", _bins_table(t, "TRUE_SNR", [0, 0.5, 1, 2, 5, 10, 1e9], c_th)
                         if "TRUE_SNR" in t.colnames else [])):
        if not rows:
            continue
        lines += ["", f"By {title}:", "", "| bin | spectra | true QSO | purity | completeness | dv std | catastrophic |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for lo, hi, n, nq, pur, com, dvs, cat_ in rows:
            hi_s = "inf" if hi > 1e8 else f"{hi:g}"
            lines.append(f"| {lo:g}-{hi_s} | {n} | {nq} | {pur:.4f} | {com:.4f} | {dvs:.0f} | {cat_:.4f} |")
    ex = _examples(t, truth_path, c_th, os.path.join(out, "examples.png"))
    if ex:
        lines += ["", f"Example spectra with their detected lines: examples.png ({ex})."]
    return lines
