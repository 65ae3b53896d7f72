"""The optimizer inside Keras's `LossScaleOptimizer`, which mixed precision wraps around the one
that does the update (its slots, its learning rate, LARS's trust ratios live there)."""

import keras


def unwrap(optimizer):
    """The innermost optimizer: `optimizer` itself unless it is a (nested) LossScaleOptimizer."""
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer
