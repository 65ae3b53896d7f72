"""Moving a live model and optimizer to a phase's recipe, when the batch size changes.

The values set here are Python numbers read when the step is traced, and each phase is traced
anew, so a phase's step uses its own recipe.
"""

from kbatch import model_scaling


def moving_average_momenta(model, base_batch_size):
    """[(layer, momentum, batch)] for the model's layers that keep moving statistics, as built: the
    momenta `apply_phase` rescales, each taken as given at the batch `kbatch.scaling.rescale_model`
    recorded on its layer (a `model_fn` that moved its model), else at `base_batch_size`."""
    return model_scaling.momenta(model, base_batch_size)


def apply_phase(recipe, batch_size, momenta, optimizer):
    """With `rescale_recipe`, move the run's `recipe` (a `recipe.RunRecipe`) to global batch
    `batch_size` as `kbatch.scaling.rescale_model` does: each layer of `momenta` gets its momentum
    rescaled from its batch (Busbridge et al. 2023), and `optimizer` the phase's weight decay
    (where it decays) and Adam settings (its rate is the run's schedule)."""
    if not recipe.settings.rescale_recipe:
        return
    model_scaling.move_momenta(momenta, batch_size)
    model_scaling.set_optimizer(optimizer, recipe.phase(batch_size), learning_rate=False)
