"""A PyTorch view of a :class:`~redsift.data.store.Dataset` (torch is imported only here)."""

from __future__ import annotations

import numpy as np
import torch


class TorchView(torch.utils.data.Dataset):
    """Rows of a dataset as tensors.

    Whole batches are read at once (sorted reads per shard), either through
    ``__getitems__`` (``DataLoader(view, batch_size=B, collate_fn=identity)``) or by
    indexing with a list (``DataLoader(view, sampler=BatchSampler(...), batch_size=None,
    collate_fn=identity)``).
    """

    def __init__(self, dataset, indices, columns=()):
        self.dataset = dataset
        self.indices = np.asarray(indices, np.int64)
        self.columns = tuple(columns)
        meta = dataset.meta if self.columns else None
        self._cols = {c: np.asarray(meta[c])[self.indices] for c in self.columns}

    def __len__(self):
        return self.indices.size

    def _items(self, pos):
        pos = np.asarray(pos, np.int64)
        flux, ivar, mask = self.dataset.read(self.indices[pos])
        out = {"flux": torch.from_numpy(flux), "ivar": torch.from_numpy(ivar), "mask": torch.from_numpy(mask),
               "row": torch.from_numpy(self.indices[pos])}
        for c, arr in self._cols.items():
            v = arr[pos]
            out[c] = torch.from_numpy(v) if v.dtype.kind in "biuf" else list(v)
        return out

    def __getitem__(self, i):
        if not np.isscalar(i):  # a list of positions (BatchSampler with batch_size=None): one batch
            return self._items(i)
        item = self._items([i])
        return {k: (v[0] if not isinstance(v, list) else v[0]) for k, v in item.items()}

    def __getitems__(self, indices):
        # returns one already-collated batch; pair with collate_fn=redsift.data.torchview.identity
        return self._items(indices)


def identity(batch):
    """``collate_fn`` for batches fetched whole by ``__getitems__``."""
    return batch
