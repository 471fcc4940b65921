"""Prediction: catalogs from spectra files or datasets."""

from .quasarnet import catalog_provenance, predict_arrays, predict_catalog, predict_spectra  # noqa: F401
