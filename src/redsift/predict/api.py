"""The Python API: ``redsift.predict(paths_or_spectra, model=...) -> Table``."""

from __future__ import annotations

__all__ = ["predict"]


def predict(inputs, model="default", device: str = "cpu", batch_rows: int | None = None, backend: str = "auto",
            progress: bool = False):
    """Classify spectra and measure their redshifts: one catalog row per input spectrum.

    Parameters
    ----------
    inputs : path, glob, directory, dataset, Spectra, or a list of them
        Survey files in any format :func:`redsift.read` knows. A missing path or a glob matching
        nothing raises :class:`~redsift.errors.RedsiftError` before any work; unreadable files get a
        row flagged ``NODATA | BAD_INPUT`` with the reason in ``ERROR``.
    model : str or model
        A released model name (``redsift models``), a model directory, ``"default"``, or a model
        loaded with :func:`redsift.load_model`.

    Returns
    -------
    astropy.table.Table
        The catalog contract's columns (``docs/catalog.md``); ``meta`` holds the provenance.

    Examples
    --------
    >>> import redsift
    >>> cat = redsift.predict("spectra/", model="quasarnet-boss-sim")  # doctest: +SKIP
    >>> good = cat[cat["ZWARN"] == 0]                                   # doctest: +SKIP
    """
    from ..models.registry import load_model, resolve_model_name
    from .pipeline import BATCH_ROWS, catalog_provenance, predict_catalog

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        name = resolve_model_name(str(model))
        model = load_model(name, device=device)
    from ..io.output import provenance_cards

    prov = catalog_provenance(model, getattr(model, "source", ""), "redsift.predict (Python)")
    return predict_catalog(model, inputs, batch_rows=batch_rows or BATCH_ROWS, progress=progress, backend=backend,
                           meta=provenance_cards(prov))
