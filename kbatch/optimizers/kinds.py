"""Which algorithm an optimizer runs, the one place the trainer asks (through a `LossScaleOptimizer`)."""

import keras

from kbatch.optimizers.lars import LARS
from kbatch.optimizers.loss_scale import unwrap

# Subclasses before their bases: Keras's AdamW is an Adam.
_KINDS = (
    (LARS, "lars"),
    (keras.optimizers.SGD, "sgd"),
    (keras.optimizers.Lamb, "lamb"),
    (keras.optimizers.AdamW, "adamw"),
    (keras.optimizers.Adam, "adam"),
)


def kind(optimizer):
    """ "sgd" (Keras's SGD, with or without momentum), "lars", "lamb", "adamw" or "adam" for the
    optimizer inside any `LossScaleOptimizer`, or None for another one (a subclass counts as its base)."""
    inner = unwrap(optimizer)
    return next((name for cls, name in _KINDS if isinstance(inner, cls)), None)
