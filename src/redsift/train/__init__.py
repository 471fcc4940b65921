"""Training: one loop for every trainable family (``redsift train FAMILY``)."""

from .loop import TrainConfig, learning_rate, load_train_config, train, validate  # noqa: F401
