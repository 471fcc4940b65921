"""The classifier's section of ``redsift evaluate`` (and the default combined model's).

Against the truth's labels mapped into the catalog's taxonomy (:mod:`redsift.taxonomy`): the confusion
matrix (counts and row-normalised, ``confusion.png``), per-class precision and recall, the STAR/GALAXY/QSO
view, redshift metrics per true class (bias, NMAD and MAD of dz/(1+z), catastrophic fraction
|dz|/(1+z) > 0.01; stars: the velocity scatter), ZERR pulls with the 68%/95% coverage (``pulls.png``)
and the uncertainty against S/N (``zerr_snr.png``), all per survey when the truth holds several. For
the combined model, the same quasar figures for the classifier alone, QuasarNET alone and the
combination (the rule's measured gain), and the redshifts of each type by the part that gave them (``Z_METHOD``).
"""

from __future__ import annotations

import os

import numpy as np

from ..constants import C_KMS
from ..metrics import coverage, nmad, redshift_metrics
from ..taxonomy import BUILTIN_DIR, SPECTYPES, load_taxonomy

__all__ = ["classifier_report", "taxonomy_of", "truth_labels"]


def taxonomy_of(t, header: dict):
    """The catalog's taxonomy: the built-in one whose classes are its ``PROB_*`` columns."""
    classes = [c[5:] for c in t.colnames if c.startswith("PROB_")]
    for f in sorted(BUILTIN_DIR.glob("*.json")):
        tax = load_taxonomy(f)
        if list(tax.classes) == classes:
            return tax
    from ..taxonomy import Taxonomy

    return Taxonomy(header.get("TAXONOMY", "catalog"), tuple(classes), tuple("STAR" for _ in classes), tuple({} for _ in classes))


def truth_labels(t, tax) -> np.ndarray:
    """Class index of each row's truth in ``tax`` (-1 ignored, -2 fits no class)."""
    cols = {}
    for key in ("CLASS", "SUBCLASS", "BAL_FLAG", "Z"):
        if f"TRUE_{key}" in t.colnames:
            cols[key] = np.asarray(t[f"TRUE_{key}"])
    n = len(t)
    cols.setdefault("BAL_FLAG", np.zeros(n, np.int64))
    cols.setdefault("SUBCLASS", np.full(n, ""))
    return tax.labels(cols, source="truth", strict=False)


def _confusion(y, pred, k):
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (y, pred), 1)
    return m


def _plot_confusion(m, names, path, title):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5.4))
    rows = m.sum(axis=1, keepdims=True)
    norm = np.where(rows > 0, m / np.maximum(rows, 1), 0)
    for ax, data, what in ((fig.add_subplot(1, 2, 1), m, "counts"), (fig.add_subplot(1, 2, 2), norm, "row-normalised")):
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title}: {what}", fontsize=9)
        for i in range(len(names)):
            for j in range(len(names)):
                v = data[i, j]
                if v:
                    txt = f"{v:.2f}" if what != "counts" else str(int(v))
                    ax.text(j, i, txt, ha="center", va="center", fontsize=5.5,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.subplots_adjust(wspace=0.3)
    fig.colorbar(im, ax=fig.axes, shrink=0.8, label="fraction of the true class")
    fig.savefig(path, dpi=130, bbox_inches="tight")


def _plot_pulls(groups, path, what):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    x = np.linspace(-5, 5, 201)
    for name, p in groups.items():
        if len(p) > 10:
            ax.hist(np.clip(p, -5, 5), bins=50, range=(-5, 5), density=True, histtype="step", label=f"{name} ({len(p)})")
    ax.plot(x, np.exp(-x**2 / 2) / np.sqrt(2 * np.pi), "k--", label="N(0, 1)")
    ax.set_xlabel("(z - z_true) / ZERR")
    ax.set_ylabel("density")
    ax.set_title(f"ZERR pulls ({what})", fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=130, bbox_inches="tight")


def _plot_zerr_snr(rows, path, what):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for name, (mid, med_err, spread) in rows.items():
        line = ax.plot(mid, med_err, "o-", label=f"{name}: median ZERR/(1+z)")[0]
        ax.plot(mid, spread, "s--", color=line.get_color(), label=f"{name}: NMAD of dz/(1+z)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("median S/N per pixel")
    ax.set_ylabel("dz/(1+z)")
    ax.set_title(f"uncertainty against S/N ({what})", fontsize=9)
    ax.legend(fontsize=6)
    fig.savefig(path, dpi=130, bbox_inches="tight")


def _section(t, tax, y, out, tag: str):
    """``(lines, true spectral type per row)``; the types are None when no row has a label."""
    names = list(tax.classes)
    k = len(names)
    pred_name = np.asarray(t["CLASS_BEST"]).astype(str) if "CLASS_BEST" in t.colnames else np.full(len(t), "")
    pred = np.array([names.index(p) if p in names else -1 for p in pred_name])
    ok = (y >= 0) & (pred >= 0)
    lines = []
    if not ok.any():
        return [f"No row of {tag or 'the catalog'} has a label in taxonomy {tax.name}."], None
    m = _confusion(y[ok], pred[ok], k)
    _plot_confusion(m, names, os.path.join(out, f"confusion{tag and '_' + tag}.png"), f"{tax.name} {tag or 'all'}")
    rec = np.diag(m) / np.maximum(m.sum(axis=1), 1)
    prec = np.diag(m) / np.maximum(m.sum(axis=0), 1)
    present = m.sum(axis=1) > 0
    lines += [f"Taxonomy **{tax.name}**, {int(ok.sum())} labelled spectra ({int((y == -1).sum())} ignored by the "
              f"taxonomy, {int((y == -2).sum())} fitting no class): accuracy {np.trace(m) / m.sum():.4f}, mean per-class "
              f"accuracy (recall) **{rec[present].mean():.4f}**, lowest **{rec[present].min():.4f}** "
              f"({names[int(np.argmin(np.where(present, rec, 2)))]}). `confusion{tag and '_' + tag}.png`.", "",
              "| class | true | recall | precision |", "|---|---:|---:|---:|"]
    for i, c in enumerate(names):
        if present[i]:
            lines.append(f"| {c} | {int(m[i].sum())} | {rec[i]:.4f} | {prec[i]:.4f} |")
    lines += ["", "Confusion matrix (counts; rows true, columns predicted):", "",
              "| true \\ pred | " + " | ".join(names) + " |", "|---|" + "---:|" * k]
    for i, c in enumerate(names):
        if present[i]:
            lines.append(f"| {c} | " + " | ".join(str(int(v)) for v in m[i]) + " |")
    # the STAR / GALAXY / QSO view
    types = np.array(tax.spectypes)
    true_st = np.where(y >= 0, types[np.clip(y, 0, None)], "")
    st = np.asarray(t["SPECTYPE"]).astype(str)
    lines += ["", "| spectral type | true | classed as it (recall) | precision |", "|---|---:|---:|---:|"]
    for s in SPECTYPES:
        sel = true_st == s
        if sel.any():
            lines.append(f"| {s} | {int(sel.sum())} | {np.mean(st[sel] == s):.4f} | "
                         f"{np.mean(true_st[(st == s) & (y >= 0)] == s) if ((st == s) & (y >= 0)).any() else float('nan'):.4f} |")
    return lines, true_st


def _redshifts(t, true_st, out, tag, what, true_cls=None) -> list[str]:
    z = np.asarray(t["Z"], float)
    zt = np.asarray(t["TRUE_Z"], float)
    ze = np.asarray(t["ZERR"], float) if "ZERR" in t.colnames else np.full(len(t), np.nan)
    st = np.asarray(t["SPECTYPE"]).astype(str)
    zw0 = np.asarray(t["ZWARN"]) == 0 if "ZWARN" in t.colnames else np.ones(len(t), bool)
    lines = ["", "Redshifts of spectra typed correctly (dz/(1+z); catastrophic: |dz|/(1+z) > 0.01; stars: "
                 "velocity NMAD); ZERR coverage: fraction within 1 and 1.96 ZERR (0.683 / 0.95 expected); "
                 "the share with ZWARN == 0, the catastrophic fraction and the coverage among them (how DESI quotes it):", "",
             "| true type | n | bias | NMAD | MAD | catastrophic | 68% cov | 95% cov | pull NMAD | ZWARN == 0 "
             "| catastrophic, ZWARN == 0 | 68% / 95% cov, ZWARN == 0 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    pulls, snr_rows, per_class = {}, {}, []
    snr = np.asarray(t["TRUE_SNR"], float) if "TRUE_SNR" in t.colnames else None
    for s in SPECTYPES:
        sel = (true_st == s) & (st == s) & np.isfinite(z)
        if not sel.any():
            continue
        r = redshift_metrics(z[sel], zt[sel])
        c = coverage(z[sel], ze[sel], zt[sel])
        c0 = coverage(z[sel & zw0], ze[sel & zw0], zt[sel & zw0])
        extra = f" (v NMAD {nmad((z[sel] - zt[sel]) * C_KMS):.0f} km/s)" if s == "STAR" else ""
        lines.append(f"| {s}{extra} | {r['n']} | {r['bias']:.2e} | {r['nmad']:.2e} | {r['mad']:.2e} | "
                     f"{r['catastrophic']:.4f} | {c['cov68']:.3f} | {c['cov95']:.3f} | {c['pull_nmad']:.2f} | "
                     f"{np.mean(zw0[sel]):.3f} | {redshift_metrics(z[sel & zw0], zt[sel & zw0])['catastrophic']:.4f} | "
                     f"{c0['cov68']:.3f} / {c0['cov95']:.3f} |")
        good = sel & np.isfinite(ze) & (ze > 0)
        pulls[s] = (z[good] - zt[good]) / ze[good]
        for c in ([] if true_cls is None else sorted(set(true_cls[sel]) - {s, ""})):
            cs = sel & (true_cls == c)
            if cs.sum() >= 20:
                cc = coverage(z[cs], ze[cs], zt[cs])
                per_class.append(f"| {c} ({s}) | {int(cs.sum())} | {cc['cov68']:.3f} | {cc['cov95']:.3f} | "
                                 f"{cc['pull_nmad']:.2f} |")
        if snr is not None and good.sum() > 50:
            edges = np.quantile(snr[good], np.linspace(0, 1, 6))
            mid, med, spread = [], [], []
            for lo, hi in zip(edges[:-1], edges[1:]):
                b = good & (snr >= lo) & (snr <= hi)
                if b.sum() > 10:
                    mid.append(np.median(snr[b]))
                    med.append(np.median(ze[b] / (1 + zt[b])))
                    spread.append(nmad((z[b] - zt[b]) / (1 + zt[b])))
            snr_rows[s] = (mid, med, spread)
    if per_class:  # a type's coverage can be right on average and wrong for each of its classes
        lines += ["", "ZERR coverage per true class (typed right; classes with 20 rows or more):", "",
                  "| class | n | 68% cov | 95% cov | pull NMAD |", "|---|---:|---:|---:|---:|"] + per_class
    if pulls:
        _plot_pulls(pulls, os.path.join(out, f"pulls{tag and '_' + tag}.png"), what)
    if snr_rows:
        _plot_zerr_snr(snr_rows, os.path.join(out, f"zerr_snr{tag and '_' + tag}.png"), what)
        lines += ["", "Uncertainty against S/N (S/N quintiles; median ZERR/(1+z) vs the measured NMAD of dz/(1+z)):", "",
                  "| type | S/N | median ZERR/(1+z) | NMAD dz/(1+z) |", "|---|---:|---:|---:|"]
        for s, (mid, med, spread) in snr_rows.items():
            for a, b, c in zip(mid, med, spread):
                lines.append(f"| {s} | {a:.1f} | {b:.2e} | {c:.2e} |")
    return lines


def _combined(t, true_st) -> list[str]:
    """Quasars: the classifier alone, QuasarNET alone and the combination (the rule's measured gain)."""
    from ..metrics import velocity_difference

    is_q_true = true_st == "QSO"
    labelled = true_st != ""
    zt = np.asarray(t["TRUE_Z"], float)
    ways = {"classifier alone": (np.asarray(t["SPECTYPE"]).astype(str) == "QSO", np.asarray(t["Z_CLASSIFIER"], float)),
            "QuasarNET alone": (np.asarray(t["IS_QSO"], bool), np.asarray(t["Z_QUASARNET"], float)),
            "combined (default)": (np.asarray(t["SPECTYPE"]).astype(str) == "QSO", np.asarray(t["Z"], float))}
    lines = ["", "### The combination rule against each part (quasars)", "",
             "A quasar is found when typed QSO with |dv| < 3000 km/s. Purity: true quasars among those typed QSO.", "",
             "| answer | purity | completeness | found | dv NMAD (km/s) | |dv| > 3000 km/s among typed QSO |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, (typed, z) in ways.items():
        typed = typed & labelled
        dv = velocity_difference(z, zt)
        found = typed & is_q_true & (np.abs(dv) < 3000)
        purity = np.mean(is_q_true[typed]) if typed.any() else float("nan")
        compl = found.sum() / max(is_q_true.sum(), 1)
        sel = typed & is_q_true & np.isfinite(dv)
        lines.append(f"| {name} | {purity:.4f} | {compl:.4f} | {int(found.sum())} / {int(is_q_true.sum())} | "
                     f"{nmad(dv[found]):.0f} | {np.mean(np.abs(dv[sel]) > 3000) if sel.any() else float('nan'):.4f} |")
    return lines


def _methods(t, true_st) -> list[str]:
    """Redshifts by the part that gave them (``Z_METHOD``), per true type typed right: how many rows each rule
    answers and how good those answers are (MAD, catastrophic fraction, ZERR coverage)."""
    zt = np.asarray(t["TRUE_Z"], float)
    z = np.asarray(t["Z"], float)
    ze = np.asarray(t["ZERR"], float)
    st = np.char.strip(np.asarray(t["SPECTYPE"]).astype(str))
    method = np.char.strip(np.asarray(t["Z_METHOD"]).astype(str))
    lines = ["", "### Redshifts by the part that gave them (`Z_METHOD`; rows typed right)", "",
             "| type | Z_METHOD | n | MAD dz/(1+z) | catastrophic | 68% cov | 95% cov |", "|---|---|---:|---:|---:|---:|---:|"]
    for s in SPECTYPES:
        right = (true_st == s) & (st == s) & np.isfinite(z)
        for m in sorted(set(method[right]) - {""}):
            sel = right & (method == m)
            r, c = redshift_metrics(z[sel], zt[sel]), coverage(z[sel], ze[sel], zt[sel])
            lines.append(f"| {s} | {m} | {r['n']} | {r['mad']:.2e} | {r['catastrophic']:.4f} | {c['cov68']:.3f} | "
                         f"{c['cov95']:.3f} |")
    return lines


def _describe_truth(truth_path: str) -> str:
    """What the truth is, for figure titles: "simulated" when it is a simulated dataset."""
    from ..data.store import INDEX_NAME, Dataset

    if truth_path and os.path.isdir(truth_path) and os.path.exists(os.path.join(truth_path, INDEX_NAME)):
        if Dataset(truth_path).provenance.get("mode") in ("templates", "parametric"):
            return "simulated"
    return "labelled set"


def classifier_report(t, out, header, overrides, truth_path="", combined: bool = False) -> list[str]:
    what = _describe_truth(str(truth_path))
    tax = taxonomy_of(t, header)
    y = truth_labels(t, tax)
    lines = ["## Classifier" + (" + QuasarNET (combined)" if combined else ""), ""]
    survey = np.asarray(t["TRUE_SURVEY"]).astype(str) if "TRUE_SURVEY" in t.colnames else np.full(len(t), "")
    parts = [("", np.ones(len(t), bool))]
    if len(set(survey)) > 1:  # then each survey on its own
        parts += [(s, survey == s) for s in sorted(set(survey))]
    names = np.array(list(tax.classes) + [""])  # the true class per row ("" where the taxonomy has none)
    true_cls_all = names[np.where(y >= 0, y, len(tax.classes))]
    for tag, sel in parts:
        sub = t[sel] if tag else t
        if tag:
            lines += ["", f"### Survey {tag}", ""]
        sec, true_st = _section(sub, tax, y[sel], out, tag)
        lines += sec
        if true_st is None:
            if not tag:
                return lines
            continue
        lines += _redshifts(sub, true_st, out, tag, what, true_cls_all[sel])
        if combined and "IS_QSO" in t.colnames:
            lines += _combined(sub, true_st)
        if combined and "Z_METHOD" in t.colnames:
            lines += _methods(sub, true_st)
        if combined and "DELTACHI2" in t.colnames:
            lines += _degeneracy(sub, true_st, out, tag, overrides.get("label", "simulated held-out"))
    return lines


def _degeneracy(t, true_st, out, tag, label) -> list[str]:
    """The default's ``DELTACHI2`` of its answers against the truth: what ``SMALL_DELTA_CHI2`` flags and what a
    user's ``DELTACHI2`` cut would keep (``deltachi2[_SURVEY].png``)."""
    from ..metrics import right_answers
    from ..zwarning import ZWarningMask
    from .eigen import _deltachi2_plot

    d = np.ma.filled(np.ma.asarray(t["DELTACHI2"], float), np.nan)
    lab = np.asarray(true_st).astype(str) != ""
    if not (np.isfinite(d) & lab).any():
        return []
    wrong = ~right_answers(t["SPECTYPE"], t["Z"], true_st, t["TRUE_Z"])
    small = (np.asarray(t["ZWARN"], np.int64) & int(ZWarningMask.SMALL_DELTA_CHI2)) > 0
    d, wrong, small = d[lab], wrong[lab], small[lab]
    name = f"deltachi2{'_' + tag if tag else ''}.png"
    _deltachi2_plot(d, wrong, os.path.join(out, name), f"{label}{', ' + tag if tag else ''}", signed=True)
    dd = np.nan_to_num(d, nan=-np.inf)
    cut = ", ".join(f"`DELTACHI2 >= {c}` keeps {np.mean(dd >= c):.3f} of the rows, {np.mean(wrong[dd >= c]):.4f} "
                    f"of them wrong" for c in (9, 25))
    return [f"Degeneracy (the answer's `DELTACHI2`, measured for {np.mean(np.isfinite(d)):.3f} of the rows): "
            f"`SMALL_DELTA_CHI2` on {np.mean(small):.4f}, wrong (type, or |dv| over 1,000 / 3,000 km/s) among them "
            f"{np.mean(wrong[small]) if small.any() else float('nan'):.3f}, among the rest {np.mean(wrong[~small]):.4f}; "
            f"{cut}; all rows {np.mean(wrong):.4f} wrong (`{name}`).", ""]
