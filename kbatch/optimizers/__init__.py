"""Optimizers for large batches, and a factory that builds one from a config or a name."""

import keras

NAMES = ("sgd", "momentum", "nesterov", "adam", "adamw")


def build(config_or_name, learning_rate, *, momentum=0.9, weight_decay=0.0, **kwargs):
    """A new Keras optimizer by name (one of `kbatch.optimizers.NAMES`) or from a config.

    A config (anything with an `optimizer` attribute, e.g. an `ml_collections.ConfigDict`)
    supplies `optimizer`, and `momentum` and `weight_decay` where it has them.
    `learning_rate` is a float or a Keras schedule.
    """
    if isinstance(config_or_name, str):
        name = config_or_name
    else:
        config = config_or_name
        name = config.optimizer
        momentum = config.get("momentum", momentum)
        weight_decay = config.get("weight_decay", weight_decay)
    decay = weight_decay or None
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, weight_decay=decay, **kwargs)
    if name == "momentum":
        return keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=decay, **kwargs)
    if name == "nesterov":
        return keras.optimizers.SGD(
            learning_rate, momentum=momentum, nesterov=True, weight_decay=decay, **kwargs
        )
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, weight_decay=decay, **kwargs)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay, **kwargs)
    raise ValueError(f"Unknown optimizer {name!r}: choose one of {', '.join(NAMES)}.")
