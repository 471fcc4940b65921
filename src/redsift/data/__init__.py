"""Datasets: the sharded HDF5 store, deterministic splits, and ingestion of labelled survey data."""

from .splits import kfold, object_ids, random_splits, split  # noqa: F401
from .store import Dataset, DatasetWriter  # noqa: F401
