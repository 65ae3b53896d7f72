"""Moving a live model and optimizer to a phase's recipe, when the batch size changes.

The values set here are Python numbers read when the step is traced, and each phase is traced
anew, so a phase's step uses its own recipe.
"""

import keras

from kbatch import layers, optimizers, scaling


def moving_average_momenta(model):
    """[(layer, momentum)] for the model's layers that keep moving statistics, as built: the
    momenta `apply_phase` rescales (each taken as given at the base batch)."""
    kinds = (keras.layers.BatchNormalization, layers.SwitchableNormalization)
    return [(layer, layer.momentum) for layer in model._flatten_layers() if isinstance(layer, kinds)]


def apply_phase(recipe, batch_size, momenta, optimizer):
    """With `rescale_recipe`, move the run's `recipe` (a `recipe.RunRecipe`) to global batch
    `batch_size`: each layer of `momenta` gets its momentum rescaled from the base batch (Busbridge et al. 2023), and
    `optimizer` the rescaled weight decay (where it decays) and Adam settings."""
    if not recipe.settings.rescale_recipe:
        return
    for layer, momentum in momenta:
        layer.momentum = scaling.rescale_momentum(momentum, recipe.base.batch_size, batch_size)
    phase = recipe.phase(batch_size)
    inner = optimizers.unwrap(optimizer)
    if getattr(inner, "weight_decay", None):
        inner.weight_decay = phase.weight_decay
    if phase.adaptive:
        inner.beta_1, inner.beta_2, inner.epsilon = phase.beta_1, phase.beta_2, phase.epsilon
