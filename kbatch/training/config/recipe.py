"""A run's recipe, resolved once from its `Settings`: the base recipe, the batch rule, each
phase's recipe, the optimizer and norm settings they give, and the LR schedule.

The config gives the recipe at `base_batch_size`; with `rescale_recipe` (the default) each
phase's recipe is that one moved to the phase's global batch (`kbatch.scaling.rescale`):
BN momentum, weight decay, Adam's betas and epsilon follow the batch, as the LR does.
`build_run` builds one `RunRecipe`; everything below it reads that, never the config again.
"""

import dataclasses

from kbatch import optimizers, scaling
from kbatch.training.config import lr_schedules

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
    return {"optimizer": settings.optimizer, **{field: getattr(settings, field) for field in optimizers.DEFAULTS}}


def base_recipe(settings, optimizer):
    """The recipe at `base_batch_size` (see `kbatch.scaling.Recipe`); `optimizer` is
    `optimizer_config(settings)`, resolved here (once per run)."""
    s = settings
    _, resolved = optimizers.resolve(optimizer)
    return scaling.Recipe(
        batch_size=s.base_batch_size,
        learning_rate=s.base_learning_rate,
        num_epochs=s.num_epochs,
        warmup_epochs=s.warmup_epochs,
        weight_decay=resolved["weight_decay"],
        momentum=resolved["momentum"],
        adaptive=s.optimizer in ADAPTIVE,
        beta_1=resolved["beta_1"],
        beta_2=resolved["beta_2"],
        epsilon=resolved["epsilon"] or KERAS_EPSILON.get(s.optimizer, 1e-7),
        bn_momentum=s.bn_momentum,
    )


@dataclasses.dataclass(frozen=True)
class RunRecipe:
    """The run's recipe, resolved once (`from_settings`).

    Attributes:
      settings: the run's `Settings` (the schedule's shape and phases are read from them).
      base: the `scaling.Recipe` at `base_batch_size`.
      rule: the rule that moves the rate across batch sizes (`batch_rule`).
      base_learning_rate: the rate `rule` moves (lowered once for staleness).
      optimizer: the optimizer's config (`optimizer_config`), for `kbatch.optimizers.build`.
    """

    settings: object
    base: scaling.Recipe
    rule: object
    base_learning_rate: float
    optimizer: dict

    @classmethod
    def from_settings(cls, settings):
        rule, base_learning_rate = batch_rule(settings)
        optimizer = optimizer_config(settings)
        return cls(settings, base_recipe(settings, optimizer), rule, base_learning_rate, optimizer)

    def phase(self, batch_size):
        """The recipe at global batch `batch_size`: rescaled from the base batch when
        `rescale_recipe`, else the base recipe as it is."""
        if self.settings.rescale_recipe:
            # The staleness rule moves the rest of the recipe as the linear rule does.
            return scaling.rescale(self.base, batch_size, rule=self.rule)
        return self.base

    def optimizer_settings(self, batch_size):
        """Keyword arguments for `kbatch.optimizers.build` that the recipe sets at global batch `batch_size`."""
        phase = self.phase(batch_size)
        settings = {"weight_decay": phase.weight_decay}
        if phase.adaptive:
            settings.update(beta_1=phase.beta_1, beta_2=phase.beta_2, epsilon=phase.epsilon)
        return settings

    def norm_kwargs(self):
        """Arguments for `kbatch.layers.get(settings.norm, ...)`, BN momentum at the base batch."""
        s = self.settings
        kwargs = {"momentum": s.bn_momentum, "groups": s.norm_groups}
        if s.norm == "ghost_batch":
            kwargs["virtual_batch_size"] = s.virtual_batch_size
        return kwargs

    def peak_learning_rate(self):
        """The base learning rate moved to the run's (first) global batch by the rule; with
        AdaScale's gain, which sets the rate itself whatever `lr_scaling` says, its bound: the scale
        S = batch / base batch times the base rate (the gain r is at most S)."""
        s = self.settings
        if s.lr_gain == "adascale":
            return self.base_learning_rate * s.batch_size / s.base_batch_size
        return lr_schedules.peak_learning_rate(s, self.rule, self.base_learning_rate)

    def batch_schedule(self, multiple_of=1, decisions=None):
        """The run's `BatchSizeSchedule` (`lr_schedules.batch_schedule`); with the adaptive batch's
        `decisions` ([{"epoch", "batch", ...}]), phase i + 1 trains at decisions[i]'s batch from
        its epoch on."""
        s = self.settings
        if decisions is not None:
            s = dataclasses.replace(
                s,
                batch_boundaries=tuple(float(d["epoch"]) for d in decisions),
                batch_sizes=tuple(int(d["batch"]) for d in decisions),
            )
        return lr_schedules.batch_schedule(s, self.rule, self.base_learning_rate, multiple_of)

    def learning_rate_schedule(self, num_examples, batches=None):
        """The optimizer's schedule over `num_examples` training examples (see
        `lr_schedules.learning_rate_schedule`), over `batches` (default: `batch_schedule()`)."""
        return lr_schedules.learning_rate_schedule(self.settings, num_examples, batches or self.batch_schedule())
