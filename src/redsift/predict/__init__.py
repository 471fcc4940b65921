"""Prediction: catalogs from spectra files, directories, datasets or in-memory spectra.

The package is also callable, as the Python API's ``redsift.predict``::

    >>> import redsift
    >>> cat = redsift.predict(["spec-3655-55240-0054.fits"], model="default")  # doctest: +SKIP

See :func:`redsift.predict.api.predict`.
"""

import sys as _sys
import types as _types

from .api import predict  # noqa: F401
from .backend import infer, onnx_session  # noqa: F401
from .pipeline import (  # noqa: F401
    EXIT_PARTIAL,
    catalog_provenance,
    catalog_summary,
    predict_catalog,
    predict_spectra,
    predict_to_file,
    resolve_inputs,
)


class _CallablePackage(_types.ModuleType):
    """``redsift.predict(...)`` calls :func:`redsift.predict.api.predict`; the package stays a package."""

    def __call__(self, *args, **kwargs):
        return predict(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
