"""Wavelength grids.

A :class:`LogGrid` is a set of pixels equally spaced in ``log10(wavelength)``,
the native sampling of SDSS/BOSS and LAMOST spectra and the input grid of the
QuasarNET (Busca & Balland 2018) and SDSS 12-class networks.

Each grid says what its pixel wavelengths mean: ``reference="center"`` (the
wavelength is the pixel centre, as in SDSS ``LOGLAM``) or ``reference="left"``
(the wavelength is the left edge of the pixel, as in QuasarNET's grid, where
``wave[i] = 10**(log10(3600) + 1e-3 i)`` and a native pixel goes to bin
``floor((loglam - log10(3600)) / 1e-3)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["LogGrid", "air_to_vacuum", "vacuum_to_air", "pixel_edges"]


@dataclass(frozen=True)
class LogGrid:
    """Pixels equally spaced in log10 wavelength (vacuum Angstrom).

    Parameters
    ----------
    loglam0 : float
        log10 of the reference wavelength of pixel 0.
    dloglam : float
        Pixel width in log10 wavelength.
    npix : int
        Number of pixels.
    reference : {"center", "left"}
        Whether ``wave`` gives pixel centres or left edges.
    name : str
        Free-form name stored in catalog headers and model configs.
    """

    loglam0: float
    dloglam: float
    npix: int
    reference: str = "center"
    name: str = ""

    def __post_init__(self):
        if self.npix <= 0 or self.dloglam <= 0:
            raise ValueError(f"LogGrid needs npix > 0 and dloglam > 0, got {self.npix}, {self.dloglam}")
        if self.reference not in ("center", "left"):
            raise ValueError(f"LogGrid reference must be 'center' or 'left', not {self.reference!r}")

    # --- constructors ---------------------------------------------------
    @classmethod
    def quasarnet(cls) -> "LogGrid":
        """QuasarNET's input grid: 443 bins from 3600 A, 1e-3 in log10, left edges."""
        return cls(np.log10(3600.0), 1e-3, 443, "left", "quasarnet")

    @classmethod
    def boss(cls) -> "LogGrid":
        """The BOSS/eBOSS native grid, 3600-10400 A at 1e-4 in log10 (pixel centres)."""
        lo = 3.5563  # log10(3600) rounded onto the SDSS 1e-4 lattice
        return cls(lo, 1e-4, int(round((4.0170 - lo) / 1e-4)) + 1, "center", "boss")

    @classmethod
    def classifier(cls) -> "LogGrid":
        """The classifier's input grid: 3600-10400 A at 2.5e-4 in log10 (pixel centres, 1,844 pixels): every
        survey's coverage on one grid (LAMOST and DESI leave their missing ends at zero weight), a pixel of
        5.8e-4 in dz/(1+z)."""
        lo = 3.5563
        return cls(lo, 2.5e-4, int(round((4.0170 - lo) / 2.5e-4)) + 1, "center", "classifier")

    @classmethod
    def sdss12(cls) -> "LogGrid":
        """The SDSS 12-class CNN's grid: 433 pixels from log10 3.56 to 4.01 (pixel centres)."""
        return cls(3.56, 0.45 / 432, 433, "center", "sdss12")

    @classmethod
    def named(cls, name: str) -> tuple["LogGrid", str]:
        """``(grid, binning)`` of a named model grid: quasarnet, boss, classifier, sdss12."""
        table = {"quasarnet": (cls.quasarnet, "quasarnet"), "boss": (cls.boss, "flux_conserving"),
                 "classifier": (cls.classifier, "flux_conserving"), "sdss12": (cls.sdss12, "flux_conserving")}
        if name not in table:
            raise ValueError(f"unknown grid {name!r}; choose from {', '.join(table)} (or native)")
        make, binning = table[name]
        return make(), binning

    @classmethod
    def from_range(cls, wmin: float, wmax: float, dloglam: float, reference: str = "center",
                   name: str = "") -> "LogGrid":
        """Grid from ``wmin`` up to and including ``wmax`` (Angstrom) at step ``dloglam``."""
        lo = np.log10(wmin)
        npix = int(np.floor((np.log10(wmax) - lo) / dloglam + 1e-9)) + 1
        return cls(float(lo), float(dloglam), npix, reference, name)

    @classmethod
    def from_dict(cls, d: dict) -> "LogGrid":
        return cls(float(d["loglam0"]), float(d["dloglam"]), int(d["npix"]),
                   str(d.get("reference", "center")), str(d.get("name", "")))

    def to_dict(self) -> dict:
        return asdict(self)

    # --- derived arrays -------------------------------------------------
    @property
    def loglam(self) -> np.ndarray:
        """log10 of the reference wavelength of every pixel."""
        return self.loglam0 + self.dloglam * np.arange(self.npix)

    @property
    def wave(self) -> np.ndarray:
        """Reference wavelength of every pixel (centre or left edge), Angstrom."""
        return 10.0 ** self.loglam

    @property
    def log_edges(self) -> np.ndarray:
        """log10 of the ``npix + 1`` pixel edges."""
        shift = 0.0 if self.reference == "left" else -0.5 * self.dloglam
        return self.loglam0 + shift + self.dloglam * np.arange(self.npix + 1)

    @property
    def edges(self) -> np.ndarray:
        """The ``npix + 1`` pixel edges in Angstrom."""
        return 10.0 ** self.log_edges

    @property
    def centers(self) -> np.ndarray:
        """Pixel centres (geometric mean of the edges) in Angstrom."""
        e = self.log_edges
        return 10.0 ** (0.5 * (e[1:] + e[:-1]))

    @property
    def wmin(self) -> float:
        return float(self.edges[0])

    @property
    def wmax(self) -> float:
        return float(self.edges[-1])

    def describe(self) -> str:
        """One line for FITS headers and logs."""
        return (f"{self.name or 'loggrid'}: {self.npix} px, log10 step {self.dloglam:g}, "
                f"{self.wmin:.2f}-{self.wmax:.2f} A ({self.reference} reference)")


def pixel_edges(wave: np.ndarray) -> np.ndarray:
    """Edges of pixels given their centres, along the last axis.

    Edges are the midpoints between neighbouring centres; the outer edges are
    placed half a pixel beyond the first and last centres (as ``spectres``).
    Works on ``(npix,)`` or ``(nspec, npix)`` arrays.
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.shape[-1] < 2:
        raise ValueError("at least two pixels are needed to define pixel edges")
    mid = 0.5 * (wave[..., 1:] + wave[..., :-1])
    first = wave[..., :1] - (mid[..., :1] - wave[..., :1])
    last = wave[..., -1:] + (wave[..., -1:] - mid[..., -1:])
    return np.concatenate([first, mid, last], axis=-1)


def air_to_vacuum(wave_air: np.ndarray) -> np.ndarray:
    """Convert air wavelengths (Angstrom) to vacuum.

    Uses the refractive index of Ciddor (1996) in the form adopted by the IAU
    and by SDSS idlutils ``airtovac``; wavelengths below 2000 A are returned
    unchanged (they are vacuum by convention).
    """
    wave_air = np.asarray(wave_air, dtype=np.float64)
    sigma2 = (1e4 / np.where(wave_air > 0, wave_air, 1.0)) ** 2
    fact = 1.0 + 5.792105e-2 / (238.0185 - sigma2) + 1.67917e-3 / (57.362 - sigma2)
    return np.where(wave_air >= 2000.0, wave_air * fact, wave_air)


def vacuum_to_air(wave_vac: np.ndarray) -> np.ndarray:
    """Inverse of :func:`air_to_vacuum` (three fixed-point iterations, < 1e-8 A)."""
    wave_vac = np.asarray(wave_vac, dtype=np.float64)
    air = wave_vac.copy()
    for _ in range(3):
        air = air * wave_vac / air_to_vacuum(air)
    return np.where(wave_vac >= 2000.0, air, wave_vac)
