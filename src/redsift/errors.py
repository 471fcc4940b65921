"""Exceptions raised by redsift.

Every error that reaches a user carries a one-line message that names the file
(when there is one) and the cause, e.g.::

    spec-3655-55240-0054.fits: truncated FITS file (HDU 1 data ends early)

The command-line interface prints ``str(exc)`` and exits non-zero; the
traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import os

__all__ = ["oneline", "RedsiftError", "SpectrumFileError", "UnknownFormatError", "CatalogError"]


def oneline(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line (whitespace collapsed, at most ``limit`` characters)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < limit else text[: limit - 3] + "..."


class RedsiftError(Exception):
    """Base class of every error redsift raises on purpose."""


class SpectrumFileError(RedsiftError):
    """A spectrum file could not be read.

    Parameters
    ----------
    path : str or os.PathLike
        The offending file.
    cause : str
        One line saying what is wrong with it.
    """

    def __init__(self, path, cause: str):
        self.path = os.fspath(path) if path is not None else None
        self.cause = " ".join(str(cause).split())  # always a single line
        super().__init__(f"{self.path}: {self.cause}" if self.path else self.cause)


class UnknownFormatError(SpectrumFileError):
    """No registered reader recognises the file."""


class CatalogError(SpectrumFileError):
    """A catalog file could not be read or lacks the columns it needs."""
