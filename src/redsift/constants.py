"""The bottom floor: physical constants and line lists every part of redsift shares.

Nothing here imports from redsift, so any module may import from here (the ZWARN bit names live beside
it in :mod:`redsift.zwarning`).
"""

from __future__ import annotations

__all__ = ["C_KMS", "LYA", "CIV", "QSO_LINES_VACUUM", "QSO_LINES_QUASARNET", "PLOT_LINES"]

#: Speed of light in km/s (CODATA, exact).
C_KMS = 299792.458

#: Lyman-alpha and CIV rest wavelengths, vacuum Angstrom (Vanden Berk et al. 2001, table 2).
LYA = 1215.67
CIV = 1549.06

#: Quasar emission lines found by QuasarNET-like models, vacuum wavelengths of the Vanden Berk et al.
#: (2001) composite, table 2: ``(name, rest wavelength)``.
QSO_LINES_VACUUM = (("LYA", LYA), ("CIV", CIV), ("CIII", 1908.73), ("MGII", 2798.75),
                    ("HBETA", 4862.68), ("HALPHA", 6564.61))

#: QuasarNET's own list (desihub/QuasarNP; H-alpha 6562.8 is an air value), used by imported models.
QSO_LINES_QUASARNET = (("LYA", 1215.67), ("CIV", 1548.2049), ("CIII", 1908.734), ("MGII", 2796.3511),
                       ("HBETA", 4862.68), ("HALPHA", 6562.8))

#: Labels used on plots for the lines above.
PLOT_LINES = {"Lya": LYA, "CIV": CIV, "CIII]": 1908.73, "MgII": 2798.75, "Hb": 4862.68, "Ha": 6564.61}
