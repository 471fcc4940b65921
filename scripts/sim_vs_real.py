"""Figures comparing simulated and real spectra (docs/simulation.md).

    python scripts/sim_vs_real.py --data ../shared/data -o docs/figures

Real spectra are used here only to *look at* the simulator's realism (validation);
nothing is fitted or tuned to them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from astropy.table import Table

import redsift
from redsift.evaluate.plots import new_axes, plot_spectrum
from redsift.preprocess import prepare, snr_median
from redsift.simulate import simulate_block


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("-o", "--output", default="docs/figures")
    p.add_argument("-n", type=int, default=4000)
    args = p.parse_args(argv)
    data, out = Path(args.data), Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    tpl = str(data / "templates")
    mix = {"QSO": 0.6, "STAR": 0.25, "GALAXY": 0.15}
    sims = [simulate_block(b, 1000, b * 1000, "boss", mix, seed=2024, templates=tpl) for b in range(args.n // 1000)]
    sim = redsift.Spectra.concatenate(sims)
    labels = Table.read(data / "real" / "boss" / "labels.csv")
    real = redsift.read([data / "real" / "boss" / f for f in labels["file"]])

    # --- S/N distributions --------------------------------------------------------
    fig, ax = new_axes(figsize=(7, 4))
    bins = np.linspace(-1.5, 2, 36)
    for cls, color in (("QSO", "tab:blue"), ("STAR", "tab:orange"), ("GALAXY", "tab:green")):
        sel = sim.meta["CLASS"] == cls
        snr = np.asarray(sim.meta["SNR"])[sel]
        ax.hist(np.log10(np.clip(snr, 1e-2, None)), bins, histtype="step", density=True, color=color,
                label=f"simulated BOSS {cls} targets (median {np.median(snr):.2f})")
    rsnr = snr_median(real.flux, real.weights)
    ax.hist(np.log10(rsnr), bins, density=True, alpha=0.35, color="k",
            label=f"real BOSS fixtures, 22 (median {np.median(rsnr):.2f}; bright, not a survey sample)")
    ax.set_xlabel("log10 median S/N per pixel")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.savefig(out / "sim_snr.png", dpi=110)

    # --- normalised flux statistics on the QuasarNET grid ---------------------------------
    Xs, ivs, _ = prepare(sim)
    Xr, ivr, _ = prepare(real)
    fig, axes = new_axes(figsize=(10, 4))
    fig.clear()
    a1, a2 = fig.subplots(1, 2)
    b = np.linspace(-5, 8, 80)
    q_sim = (np.asarray(sim.meta["CLASS"]) == "QSO")
    bright = q_sim & (np.asarray(sim.meta["SNR"]) > 3)
    q_real = np.asarray(labels["cls"]) == "QSO"
    for X, iv, sel, lab, kw in ((Xs, ivs, q_sim, "simulated QSO, all", {"histtype": "step"}),
                                (Xs, ivs, bright, "simulated QSO, S/N > 3", {"histtype": "step"}),
                                (Xr, ivr, q_real, "real BOSS QSO fixtures", {"alpha": 0.35, "color": "k"})):
        a1.hist(X[sel][iv[sel] > 0], b, density=True, label=lab, **kw)
    a1.set_yscale("log")
    a1.set_xlabel("QuasarNET-normalised flux")
    a1.legend(fontsize=7)
    # mean normalised spectrum in the quasar rest frame
    rest = np.linspace(900, 5000, 300)
    for X, iv, sel, z, lab, kw in ((Xs, ivs, bright, np.asarray(sim.meta["Z"]), "simulated QSO, S/N > 3", {}),
                                   (Xr, ivr, q_real, np.asarray(labels["z"]), "real BOSS QSO fixtures", {"color": "k"})):
        wave = redsift.LogGrid.quasarnet().wave
        stack = np.full((sel.sum(), rest.size), np.nan)
        for k, i in enumerate(np.flatnonzero(sel)):
            w = wave / (1 + z[i])
            good = iv[i] > 0
            stack[k] = np.interp(rest, w[good], X[i][good], left=np.nan, right=np.nan)
        a2.plot(rest, np.nanmedian(stack, axis=0), label=lab, **kw)
    a2.set_xlabel("rest wavelength [A]")
    a2.set_ylabel("median normalised flux")
    a2.legend(fontsize=7)
    fig.savefig(out / "sim_flux_stats.png", dpi=110)

    # --- one figure per class: real vs simulated, side by side -------------------------------
    pairs = {
        "QSO": [("spec-3655-55240-0054.fits", None), ("spec-10656-58163-0366.fits", None),
                ("spec-3655-55240-0332.fits", None)],
        "GALAXY": [(labels["file"][np.asarray(labels["cls"]) == "GALAXY"][0], None)],
        "STAR": [(labels["file"][np.asarray(labels["cls"]) == "STAR"][0], "CV")],
    }
    msim = sim.meta
    for cls, items in pairs.items():
        fig, _ = new_axes(figsize=(12, 3.2 * len(items)))
        fig.clear()
        axes = np.atleast_2d(fig.subplots(len(items), 2))
        for row, (fname, sub) in enumerate(items):
            k = int(np.flatnonzero(labels["file"] == fname)[0])
            zr = float(labels["z"][k])
            ridx = list(real.meta["SOURCE"]).index(str(data / "real" / "boss" / fname))
            plot_spectrum(real, ridx, ax=axes[row, 0], z=zr if cls == "QSO" else None,
                          title=f"real {fname}: {labels['cls'][k]} {labels['subclass'][k]} z={zr:.3f}")
            cand = (np.asarray(msim["CLASS"]) == cls) & (np.asarray(msim["SNR"]) > 2)
            if sub:
                cand &= np.asarray(msim["SUBCLASS"]) == sub
            if not cand.any():
                cand = np.asarray(msim["CLASS"]) == cls
            i = int(np.flatnonzero(cand)[np.argmin(np.abs(np.asarray(msim["Z"])[cand] - zr))])
            r = msim[i]
            plot_spectrum(sim, i, ax=axes[row, 1], z=r["Z"] if cls == "QSO" else None,
                          title=f"simulated {r['CLASS']} {r['SUBCLASS']} z={r['Z']:.3f} S/N={r['SNR']:.1f}")
        fig.savefig(out / f"sim_vs_real_{cls.lower()}.png", dpi=80)
    print(f"wrote figures to {out}")


if __name__ == "__main__":
    main()
