"""redsift: classification and redshifts of astronomical spectra with deep learning.

>>> import redsift
>>> spectra = redsift.read("spec-3655-55240-0054.fits")      # doctest: +SKIP
>>> catalog = redsift.predict("spec-3655-55240-0054.fits")   # doctest: +SKIP
"""

import logging as _logging

from . import predict  # the package is callable: redsift.predict(paths_or_spectra, model=...)
from ._version import __version__
from .grid import LogGrid
from .io.registry import read
from .models.registry import load_model
from .spectra import Spectra
from .zwarning import ZWarningMask

_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = ["__version__", "read", "predict", "load_model", "Spectra", "LogGrid", "ZWarningMask"]
