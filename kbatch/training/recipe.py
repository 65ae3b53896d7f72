"""From config fields to the numbers of a run: batch phases, the learning-rate schedule, and the
recipe (BN momentum, weight decay, Adam's betas) rescaled to each phase's batch.

The config gives the recipe at `base_batch_size`. The run's global batch is `batch_size`, or
changes by phase (`batch_boundaries` / `batch_sizes`, or `anneal_batch`). Each phase's peak rate
is the base rate moved to its batch by `lr_scaling`; the shape of the schedule (warmup, then
`decay`) is a function of epochs, so runs at different batch sizes follow the same curve against
examples seen. With `rescale_recipe` (the default) the rest of the recipe follows the batch too
(`kbatch.scaling.rescale`).
"""

import keras

from kbatch import layers, optimizers, scaling, schedules

DECAYS = ("cosine", "linear", "polynomial", "step", "constant")
ADAPTIVE = ("adam", "adamw", "lamb")  # optimizers whose betas and epsilon `rescale` moves
KERAS_EPSILON = {"adam": 1e-7, "adamw": 1e-7, "lamb": 1e-6}  # Keras's defaults


def peak_learning_rate(config):
    """The base learning rate moved to the run's (first) global batch by `config.lr_scaling`."""
    return scaling.scale_learning_rate(
        config.base_learning_rate, config.base_batch_size, config.batch_size, config.lr_scaling
    )


def batch_schedule(config, multiple_of=1):
    """The run's `BatchSizeSchedule`, with each phase's peak learning rate.

    - `decay="step"`: the rate is divided by `decay_factor` at each of `decay_boundaries`; with
      `anneal_batch` the batch is multiplied instead (Smith et al. 2018), rounded to a multiple of
      `multiple_of` (replicas x accumulation steps), up to `max_batch_size`.
    - `batch_boundaries` / `batch_sizes`: phase i > 0 trains at `batch_sizes[i - 1]`, its rate
      moved from the base batch by `lr_scaling`.
    - otherwise one phase at `batch_size`.
    """
    first = config.batch_size
    if config.decay == "step":
        peak = peak_learning_rate(config)
        if config.get("anneal_batch", False):
            return schedules.BatchSizeSchedule.from_step_decay(
                peak, first, config.decay_boundaries, config.decay_factor,
                max_batch_size=config.get("max_batch_size"), rule=config.lr_scaling, multiple_of=multiple_of)
        return schedules.BatchSizeSchedule.step_decay(peak, first, config.decay_boundaries, config.decay_factor)
    return schedules.BatchSizeSchedule.scaled(
        config.base_learning_rate, config.base_batch_size, [first, *config.get("batch_sizes", ())],
        config.get("batch_boundaries", ()), rule=config.lr_scaling)


def epoch_schedule(config):
    """The shape of the rate over (fractional) epochs, peak 1: warmup for `warmup_epochs`, then
    `decay`. Cosine and polynomial decays span the epochs after warmup and end at 0; "step" is
    in the batch schedule's per-phase rates, so here it is flat after warmup."""
    warmup, num_epochs = config.warmup_epochs, config.num_epochs
    decay_epochs = num_epochs - warmup
    if config.decay == "cosine":
        after = keras.optimizers.schedules.CosineDecay(1.0, decay_epochs)
    elif config.decay in ("linear", "polynomial"):
        power = 1.0 if config.decay == "linear" else config.decay_power
        after = keras.optimizers.schedules.PolynomialDecay(1.0, decay_epochs, end_learning_rate=0.0, power=power)
    else:
        after = 1.0
    return schedules.Warmup(after, warmup, offset=config.decay != "step")


def learning_rate_schedule(config, num_examples, batches=None):
    """The optimizer's schedule: `PhasedSchedule` over optimizer updates (one per global batch,
    accumulated micro-batches included) of `epoch_schedule` times each phase's peak rate."""
    return schedules.PhasedSchedule(batches or batch_schedule(config), num_examples, epoch_schedule(config))


def base_recipe(config):
    """The config's recipe at `base_batch_size` (see `kbatch.scaling.Recipe`)."""
    _, settings = optimizers.resolve(config)
    adaptive = config.optimizer in ADAPTIVE
    return scaling.Recipe(
        batch_size=config.base_batch_size, learning_rate=config.base_learning_rate,
        num_epochs=config.num_epochs, warmup_epochs=config.warmup_epochs,
        weight_decay=settings["weight_decay"], momentum=settings["momentum"], adaptive=adaptive,
        beta_1=settings["beta_1"], beta_2=settings["beta_2"],
        epsilon=settings["epsilon"] or KERAS_EPSILON.get(config.optimizer, 1e-7),
        bn_momentum=config.get("bn_momentum", 0.99))


def phase_recipe(config, batch_size):
    """The recipe at global batch `batch_size`: rescaled from the base batch when
    `config.rescale_recipe`, else the config's values as they are."""
    recipe = base_recipe(config)
    if config.get("rescale_recipe", True):
        return scaling.rescale(recipe, batch_size, rule=config.lr_scaling)
    return recipe


def optimizer_settings(recipe):
    """Keyword arguments for `kbatch.optimizers.build` that the recipe sets."""
    settings = {"weight_decay": recipe.weight_decay}
    if recipe.adaptive:
        settings.update(beta_1=recipe.beta_1, beta_2=recipe.beta_2, epsilon=recipe.epsilon)
    return settings


def moving_average_momenta(model):
    """[(layer, momentum)] for the model's layers that keep moving statistics, as built: the
    momenta `apply` rescales."""
    kinds = (keras.layers.BatchNormalization, layers.SwitchableNormalization)
    return [(layer, layer.momentum) for layer in model._flatten_layers() if isinstance(layer, kinds)]


def apply(config, batch_size, momenta, optimizer):
    """With `config.rescale_recipe`, move the recipe to global batch `batch_size` (a new phase):
    each layer of `momenta` gets momentum**(B / base_batch_size) (its own, taken as given at the
    base batch), and `optimizer` the rescaled weight decay (where it decays) and Adam settings.
    They are Python numbers read when the step is traced, and each phase is traced anew."""
    if not config.get("rescale_recipe", True):
        return
    k = batch_size / config.base_batch_size
    for layer, momentum in momenta:
        layer.momentum = momentum**k
    recipe = phase_recipe(config, batch_size)
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    if getattr(optimizer, "weight_decay", None):
        optimizer.weight_decay = recipe.weight_decay
    if recipe.adaptive:
        optimizer.beta_1, optimizer.beta_2, optimizer.epsilon = recipe.beta_1, recipe.beta_2, recipe.epsilon


def norm_kwargs(config):
    """Arguments for `kbatch.layers.get(config.norm, ...)`, BN momentum at the base batch."""
    kwargs = {"momentum": config.get("bn_momentum", 0.99), "groups": config.get("norm_groups", 8)}
    if config.norm == "ghost_batch":
        kwargs["virtual_batch_size"] = config.virtual_batch_size
    return kwargs
