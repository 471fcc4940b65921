"""Deterministic train/validation/test and k-fold splits that keep each *object* on one side.

An object is identified by ``THING_ID`` when the metadata has a positive one
(SDSS: one object, several observations — e.g. THING_ID 427878017 was observed
as 3655-0228 and 9367-0446), else by ``TARGETID``. Each object id is hashed
with a seeded 64-bit mixer (splitmix64) to a number in [0, 1); the side of the
split depends only on that number, so splits do not depend on row order, are
stable when a dataset grows, and are identical on every machine.

QuasarNET (Busca & Balland 2018, sect. 3) trained on ten random 80/20 splits
of DR12Q: :func:`random_splits` reproduces that scheme; :func:`kfold` gives
disjoint test folds.
"""

from __future__ import annotations

import numpy as np

__all__ = ["object_ids", "hash_unit", "split", "kfold", "random_splits"]

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def object_ids(meta) -> np.ndarray:
    """Object id per row: THING_ID when positive, else TARGETID (int64)."""
    tid = np.asarray(meta["TARGETID"], np.int64)
    if "THING_ID" in meta.colnames:
        thing = np.asarray(meta["THING_ID"], np.int64)
        # keep THING_ID and TARGETID id spaces apart
        return np.where(thing > 0, thing, -np.abs(tid) - 1)
    return tid


def hash_unit(ids, seed: int = 0) -> np.ndarray:
    """splitmix64 of ``ids`` xor a seed-derived key, mapped to [0, 1)."""
    x = np.asarray(ids, np.int64).view(np.uint64) ^ np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split(meta, fractions=(0.8, 0.1, 0.1), names=("train", "val", "test"), seed: int = 0) -> dict:
    """Row indices of each side, by object.

    Parameters
    ----------
    meta : Table with TARGETID (and optionally THING_ID)
    fractions : fractions of objects per side (summing to 1)
    """
    fractions = np.asarray(fractions, float)
    if len(fractions) != len(names) or abs(fractions.sum() - 1) > 1e-9 or np.any(fractions < 0):
        raise ValueError("fractions must be non-negative, one per name, and sum to 1")
    u = hash_unit(object_ids(meta), seed)
    edges = np.concatenate([[0.0], np.cumsum(fractions)])
    edges[-1] = 1.0 + 1e-12
    return {name: np.flatnonzero((u >= lo) & (u < hi)) for name, lo, hi in zip(names, edges[:-1], edges[1:])}


def kfold(meta, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, test) pairs with disjoint test folds that cover every row; objects never straddle."""
    if k < 2:
        raise ValueError("k must be at least 2")
    fold = np.floor(hash_unit(object_ids(meta), seed) * k).astype(int)
    return [(np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(k)]


def random_splits(meta, n_splits: int = 10, test_fraction: float = 0.2, seed: int = 0):
    """QuasarNET's scheme: ``n_splits`` independent random train/test splits by object."""
    out = []
    for s in range(n_splits):
        u = hash_unit(object_ids(meta), seed * 1000 + s + 1)
        out.append((np.flatnonzero(u >= test_fraction), np.flatnonzero(u < test_fraction)))
    return out
