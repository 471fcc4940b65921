"""Reading and writing spectra and catalogs.

``redsift.io.read`` detects the format of each file through the reader
registry (:mod:`redsift.io.registry`); survey formats live in their own
modules (:mod:`.sdss`, :mod:`.desi`, :mod:`.lamost`, :mod:`.generic`).
"""

from .registry import identify_format, iter_read, read, read_file, readers  # noqa: F401
