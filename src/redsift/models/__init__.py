"""Models: a family registry and factory (like timm's), one model family per module.

Released models are directories holding ``model.safetensors`` and ``config.json``; :func:`load_model`
loads them without pickle. A family plugs in with :func:`register_family` (see
:mod:`redsift.models.family` and ``docs/architecture.md``).
"""

from .family import Family, Prepared  # noqa: F401
from .registry import (  # noqa: F401
                       available_models,
                       create_model,
                       families,
                       get_family,
                       load_model,
                       register_family,
                       resolve_model_name,
                       save_model,
)
