"""Models: a registry and factory (like timm's), one model family per module.

Released models are directories holding ``model.safetensors`` and
``config.json``; :func:`load_model` loads them without pickle.
"""

from .registry import available_models, create_model, load_model, register_model, save_model  # noqa: F401
