"""The spectrum simulator: realistic labelled spectra for training and testing.

Template mode (``--templates DIR``): quasars from the BOSS mean quasar made
individual (continuum slope, Baldwin effect, line widths, CIV blueshift, Fe II,
host light, reddening), the fluctuating Lyman-alpha forest, Lyman-limit
systems, DLAs and BAL troughs; real stellar spectra (BOSS archetypes and
individual redrock stars, CVs, M+WD pairs); real galaxy archetypes with
broad-line AGN among them. Parametric mode (no files): the same physics on
continua with published line lists. Both are observed through a survey
instrument model (grid, resolution, sky, throughput, noise, calibration,
masks): :mod:`redsift.simulate.instrument`.
"""

from .library import REST_GRID, TemplateLibrary, load_library  # noqa: F401
from .run import CLASSES, DEFAULT_MIX, simulate, simulate_block  # noqa: F401
