"""Moving a built Keras model and its optimizer to another batch's recipe, in place:
`kbatch.scaling.rescale_model`, and the trainer's batch phases (`apply_recipe`) through the same
functions and the same record.

Each object moved (a norm layer with moving statistics, the optimizer) records the global batch
its values are at (`RECORD`). A value without a record is taken as given at the base batch; one
with a record is moved from the batch it records, so nothing is moved twice.
"""

import dataclasses

import keras

from kbatch import checks, layers, optimizers, scaling

RECORD = "kbatch_recipe_batch_size"  # the attribute that records the batch an object's recipe is at
ADAPTIVE = ("adam", "adamw", "lamb")  # `optimizers.kind`s whose betas and epsilon are rescaled
SGD_LIKE = ("sgd", "lars")  # heavy-ball momentum, unchanged by `scaling.rescale`


def norm_layers(model):
    """The layers of `model` that keep moving statistics: every BatchNormalization (ghost and
    synchronized BN included) and `kbatch.layers.SwitchableNormalization`."""
    kinds = (keras.layers.BatchNormalization, layers.SwitchableNormalization)
    return [layer for layer in model._flatten_layers() if isinstance(layer, kinds)]


def momenta(model, base_batch_size):
    """[(layer, momentum, batch)] for `norm_layers(model)`: each momentum as it is now, at the
    batch its layer records (`RECORD`), else at `base_batch_size`."""
    return [(layer, layer.momentum, getattr(layer, RECORD, base_batch_size)) for layer in norm_layers(model)]


def move_momenta(layer_momenta, batch_size):
    """Set each layer of `layer_momenta` ([(layer, momentum, batch)], `momenta`) to its momentum moved
    from `batch` to `batch_size`, momentum**(batch_size / batch) (Busbridge et al. 2023,
    "How to Scale Your EMA"), and record `batch_size` on it."""
    for layer, momentum, batch in layer_momenta:
        layer.momentum = scaling.rescale_momentum(momentum, batch, batch_size)
        setattr(layer, RECORD, batch_size)


def optimizer_recipe(optimizer, batch_size, learning_rate):
    """The `scaling.Recipe` `optimizer` (inside any LossScaleOptimizer) runs at `batch_size`, with
    `learning_rate`: weight decay, SGD's momentum, Adam's betas and epsilon, the weight EMA's momentum.
    A ValueError for an optimizer whose recipe `scaling.rescale` does not know."""
    inner, kind = optimizers.unwrap(optimizer), optimizers.kind(optimizer)
    if kind not in ADAPTIVE + SGD_LIKE:
        checks.fail(
            "optimizer",
            type(inner).__name__,
            "SGD, LARS, Adam, AdamW or Lamb (the optimizers whose recipe kbatch.scaling.rescale moves)",
        )
    recipe = dict(batch_size=batch_size, learning_rate=learning_rate, num_epochs=1.0)
    recipe["weight_decay"] = inner.weight_decay or 0.0
    recipe["ema_momentum"] = inner.ema_momentum if inner.use_ema else None
    if kind in ADAPTIVE:
        recipe.update(adaptive=True, beta_1=inner.beta_1, beta_2=inner.beta_2, epsilon=inner.epsilon)
    else:
        recipe["momentum"] = inner.momentum
    return scaling.Recipe(**recipe)


def set_optimizer(optimizer, recipe, learning_rate=True):
    """Give `optimizer` (inside any LossScaleOptimizer) `recipe`'s weight decay (where it decays),
    Adam's betas and epsilon (an adaptive recipe), the EMA's momentum (where it averages), and with
    `learning_rate` its rate; record `recipe.batch_size` on it."""
    inner = optimizers.unwrap(optimizer)
    if getattr(inner, "weight_decay", None):
        inner.weight_decay = recipe.weight_decay
    if recipe.adaptive:
        inner.beta_1, inner.beta_2, inner.epsilon = recipe.beta_1, recipe.beta_2, recipe.epsilon
    if recipe.ema_momentum is not None and inner.use_ema:
        inner.ema_momentum = recipe.ema_momentum
    if learning_rate:
        inner.learning_rate = recipe.learning_rate
    setattr(inner, RECORD, recipe.batch_size)


@dataclasses.dataclass(frozen=True)
class Rescaled:
    """What `rescale_model` did: the optimizer's recipe `before` and `after` (`scaling.Recipe`s;
    None without an optimizer; their `num_epochs` and `bn_momentum` are not read from the model),
    and `momenta`, {norm layer's name: (momentum before, after)}. `str()` lists what changed."""

    before: object
    after: object
    momenta: dict

    def changes(self):
        """{name: (before, after)} of every value that changed: the optimizer's fields, and the
        norm layers' momenta as "momentum of LAYER"."""
        found = {}
        if self.before is not None:
            for field in dataclasses.fields(self.before):
                old, new = getattr(self.before, field.name), getattr(self.after, field.name)
                if old != new and field.name not in ("batch_size", "bn_momentum"):
                    found[field.name] = (old, new)
        found.update({f"momentum of {name}": pair for name, pair in self.momenta.items() if pair[0] != pair[1]})
        return found

    def __str__(self):
        lines = [f"{name}: {old:.4g} -> {new:.4g}" for name, (old, new) in self.changes().items()]
        return "\n".join(lines) or "nothing to change: the model's recipe is at this batch already"


def rescale_model(model, base_batch_size, batch_size, rule=None, *, optimizer=None):
    """Move a built `model`'s recipe, in place, from global batch `base_batch_size` to `batch_size`
    by `kbatch.scaling.rescale` (`rule`: its default is "sqrt" for Adam, AdamW and Lamb, else "linear").

    The optimizer (`optimizer`, else the one `model` was compiled with; none: the norms only) gets
    its learning rate (a float), weight decay, Adam's beta_1, beta_2 and epsilon, and its weight
    EMA's momentum moved; SGD's momentum stays (see `rescale`). Every norm layer with moving
    statistics (BatchNormalization, ghost BN, `SwitchableNormalization`) gets momentum**k. Each
    records the batch it is now at, so a second call, or the trainer given this model by a
    `model_fn`, moves it from there: nothing is moved twice. The next `fit` traces its step again.

    A learning-rate schedule is refused: it counts steps, and an epoch at another batch is another
    number of steps. Returns a `Rescaled`; `print` it to see what changed.
    """
    checks.positive_int("base_batch_size", base_batch_size)
    checks.positive_int("batch_size", batch_size)
    if not isinstance(model, keras.Model):
        checks.fail("model", type(model).__name__, "a built keras.Model")
    optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    layer_momenta = momenta(model, base_batch_size)
    before = after = None
    if optimizer is not None:
        at = getattr(optimizers.unwrap(optimizer), RECORD, base_batch_size)
        before = optimizer_recipe(optimizer, at, _float_rate(optimizer, batch_size))
        after = scaling.rescale(before, batch_size, rule)
    elif rule is not None:
        scaling.scaling_exponent(rule)
    move_momenta(layer_momenta, batch_size)
    if optimizer is not None:
        set_optimizer(optimizer, after)
    model.train_function = None  # the step is traced anew with the values set here
    return Rescaled(before, after, {layer.name: (momentum, layer.momentum) for layer, momentum, _ in layer_momenta})


def _float_rate(optimizer, batch_size):
    """The optimizer's learning rate as a float; a ValueError for a schedule."""
    rate = optimizers.unwrap(optimizer)._learning_rate
    if not isinstance(rate, keras.Variable):
        raise ValueError(
            f"optimizer.learning_rate is a {type(rate).__name__}: a schedule counts steps, and an epoch at "
            f"batch {batch_size} is another number of steps, so rescale_model moves a float rate only: compile "
            "with the base rate as a float, call rescale_model, then set optimizer.learning_rate to a schedule "
            "built for the new batch (its peak: the returned after.learning_rate)."
        )
    return float(keras.ops.convert_to_numpy(rate))
