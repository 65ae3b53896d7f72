"""A run's recipe at each batch size, and the optimizer and norm settings it gives.

The config gives the recipe at `base_batch_size`; with `rescale_recipe` (the default) each
phase's recipe is that one moved to the phase's global batch (`kbatch.scaling.rescale`):
BN momentum, weight decay, Adam's betas and epsilon follow the batch, as the LR does.
"""

from kbatch import optimizers, scaling

ADAPTIVE = ("adam", "adamw", "lamb")  # optimizers whose betas and epsilon `rescale` moves
KERAS_EPSILON = {"adam": 1e-7, "adamw": 1e-7, "lamb": 1e-6}  # Keras's defaults


def batch_rule(settings):
    """The rule that moves the rate across batch sizes, and the base rate it moves: `lr_scaling`
    and `base_learning_rate`, except that the staleness rule (`kbatch.scaling`) is the linear rule
    from a base rate lowered once by `staleness_factor(staleness, momentum)`, with the momentum
    the optimizer uses (beta_1 for the adaptive ones, none for plain SGD)."""
    s = settings
    if s.lr_scaling != "staleness":
        return s.lr_scaling, s.base_learning_rate
    momentum = s.beta_1 if s.optimizer in ADAPTIVE else (0.0 if s.optimizer == "sgd" else s.momentum)
    return "linear", s.base_learning_rate * scaling.staleness_factor(s.staleness, momentum)


def optimizer_config(settings):
    """The fields `kbatch.optimizers.build` reads, as a dict."""
    return {"optimizer": settings.optimizer,
            **{field: getattr(settings, field) for field in optimizers.DEFAULTS}}


def base_recipe(settings):
    """The recipe at `base_batch_size` (see `kbatch.scaling.Recipe`)."""
    s = settings
    _, resolved = optimizers.resolve(optimizer_config(s))
    return scaling.Recipe(
        batch_size=s.base_batch_size, learning_rate=s.base_learning_rate,
        num_epochs=s.num_epochs, warmup_epochs=s.warmup_epochs,
        weight_decay=resolved["weight_decay"], momentum=resolved["momentum"], adaptive=s.optimizer in ADAPTIVE,
        beta_1=resolved["beta_1"], beta_2=resolved["beta_2"],
        epsilon=resolved["epsilon"] or KERAS_EPSILON.get(s.optimizer, 1e-7), bn_momentum=s.bn_momentum)


def phase_recipe(settings, batch_size):
    """The recipe at global batch `batch_size`: rescaled from the base batch when
    `rescale_recipe`, else the base recipe as it is."""
    recipe = base_recipe(settings)
    if settings.rescale_recipe:
        # The staleness rule moves the rest of the recipe as the linear rule does.
        return scaling.rescale(recipe, batch_size, rule=batch_rule(settings)[0])
    return recipe


def optimizer_settings(recipe):
    """Keyword arguments for `kbatch.optimizers.build` that the recipe sets."""
    settings = {"weight_decay": recipe.weight_decay}
    if recipe.adaptive:
        settings.update(beta_1=recipe.beta_1, beta_2=recipe.beta_2, epsilon=recipe.epsilon)
    return settings


def norm_kwargs(settings):
    """Arguments for `kbatch.layers.get(settings.norm, ...)`, BN momentum at the base batch."""
    kwargs = {"momentum": settings.bn_momentum, "groups": settings.norm_groups}
    if settings.norm == "ghost_batch":
        kwargs["virtual_batch_size"] = settings.virtual_batch_size
    return kwargs
