"""Normalization layers and the factory the models use to pick one by name.

Keras's own layers wherever Keras has them; kbatch adds what Keras 3 dropped or never had.
"""

import keras

NAMES = ("batch", "sync_batch", "batch_renorm", "layer", "group", "instance", "none")


def get(name, /, *, momentum=0.99, epsilon=1e-3, groups=8, axis=-1, **kwargs):
    """A new normalization layer by name: one of `kbatch.layers.NAMES`.

    `momentum` is the moving-average momentum of layers that keep moving statistics (use the
    value `kbatch.scaling.rescale` gives for the batch size); layers without moving statistics
    ignore it. `groups` is the group count of "group". Extra keyword arguments (the layer's
    `name`, initializers, ...)
    go to the layer's constructor.
    """
    if name == "batch":
        return keras.layers.BatchNormalization(axis=axis, momentum=momentum, epsilon=epsilon, **kwargs)
    if name == "sync_batch":
        return keras.layers.BatchNormalization(
            axis=axis, momentum=momentum, epsilon=epsilon, synchronized=True, **kwargs
        )
    if name == "batch_renorm":
        return keras.layers.BatchNormalization(
            axis=axis, momentum=momentum, epsilon=epsilon, renorm=True, **kwargs
        )
    if name == "layer":
        return keras.layers.LayerNormalization(axis=axis, epsilon=epsilon, **kwargs)
    if name == "group":
        return keras.layers.GroupNormalization(groups=groups, axis=axis, epsilon=epsilon, **kwargs)
    if name == "instance":
        return keras.layers.GroupNormalization(groups=-1, axis=axis, epsilon=epsilon, **kwargs)
    if name == "none":
        return keras.layers.Identity(**kwargs)
    raise ValueError(f"Unknown norm {name!r}: choose one of {', '.join(NAMES)}.")
