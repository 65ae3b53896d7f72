"""Normalization layers and the factory the models use to pick one by name.

Keras's own layers wherever Keras has them; kbatch adds what Keras 3 dropped or never had:
ghost batch norm, switchable norm, RMS norm with a `gamma`, averaging per-replica moving statistics,
and `replace_norms`: an existing model's BatchNormalization layers swapped for another norm.
"""

import keras

from kbatch import checks
from kbatch.layers import registry
from kbatch.layers.ghost_batch_norm import GhostBatchNormalization
from kbatch.layers.group_norm import GroupNormalization
from kbatch.layers.moving_stats import average_moving_statistics
from kbatch.layers.rms_norm import RMSNormalization
from kbatch.layers.surgery import replace_norms
from kbatch.layers.switchable_norm import SwitchableNormalization

__all__ = [
    "GhostBatchNormalization",
    "GroupNormalization",
    "NAMES",
    "RMSNormalization",
    "SwitchableNormalization",
    "average_moving_statistics",
    "get",
    "registry",
    "replace_norms",
]

NAMES = registry.NAMES


def get(name, /, *, momentum=0.99, epsilon=1e-3, groups=8, axis=-1, **kwargs):
    """A new normalization layer by name: one of `kbatch.layers.NAMES`.

    `momentum` is the moving-average momentum of layers that keep moving statistics (use the
    value `kbatch.scaling.rescale` gives for the batch size); layers without moving statistics
    ignore it; it must be in [0, 1] and `epsilon` > 0 for every name (Keras's own layers do not
    check). `groups` is the group count of "group" (it must divide the channels: checked when
    the layer is built). "ghost_batch" needs `virtual_batch_size=`; "switchable" takes `modes=`.
    Extra keyword arguments (`name`, ...) go to the layer's constructor. What each name does
    (moving statistics, a gamma, ...): `kbatch.layers.registry`.
    """
    checks.choice("norm", name, NAMES)
    momentum = checks.real("momentum", momentum, low=0, high=1)
    epsilon = checks.real("epsilon", epsilon, low=0, low_open=True)
    if name == "batch":
        return keras.layers.BatchNormalization(axis=axis, momentum=momentum, epsilon=epsilon, **kwargs)
    if name == "sync_batch":
        # On JAX the jitted step sees the whole global batch (sharded over the devices), so
        # Keras's plain BatchNormalization already reduces over it: that is synchronized BN, and
        # Keras accepts synchronized=True only on TensorFlow.
        synchronized = keras.backend.backend() == "tensorflow"
        return keras.layers.BatchNormalization(
            axis=axis, momentum=momentum, epsilon=epsilon, synchronized=synchronized, **kwargs
        )
    if name == "batch_renorm":
        return keras.layers.BatchNormalization(axis=axis, momentum=momentum, epsilon=epsilon, renorm=True, **kwargs)
    if name == "ghost_batch":
        if "virtual_batch_size" not in kwargs:
            raise ValueError(
                "norm 'ghost_batch' needs virtual_batch_size= (examples per ghost batch, a "
                "positive integer; the per-replica micro-batch size keeps accumulation exact)."
            )
        return GhostBatchNormalization(axis=axis, momentum=momentum, epsilon=epsilon, **kwargs)
    if name == "layer":
        return keras.layers.LayerNormalization(axis=axis, epsilon=epsilon, **kwargs)
    if name == "rms":
        return RMSNormalization(axis=axis, epsilon=epsilon, **kwargs)
    if name == "group":
        return GroupNormalization(groups=groups, axis=axis, epsilon=epsilon, **kwargs)
    if name == "instance":
        return keras.layers.GroupNormalization(groups=-1, axis=axis, epsilon=epsilon, **kwargs)
    if name == "switchable":
        return SwitchableNormalization(axis=axis, momentum=momentum, epsilon=epsilon, **kwargs)
    return keras.layers.Identity(**kwargs)
