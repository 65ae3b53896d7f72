"""LARS: layer-wise adaptive rate scaling (You, Gitman and Ginsburg 2017, arXiv:1708.03888).

The classic-momentum form of TF Model Garden and the MLPerf ResNet-50 TPU reference. For each
variable w with gradient g:

  1. g <- g + weight_decay * w                         (unless w is excluded from weight decay)
  2. trust = trust_coefficient * ||w|| / (||g|| + epsilon) if ||w|| > 0 and ||g|| > 0, else 1
                                                       (1 also when w is excluded from adaptation)
  3. v <- momentum * v + learning_rate * trust * g
  4. w <- w - v,  or with nesterov  w <- w - (momentum * v + learning_rate * trust * g)

Norms are L2 over the whole variable, and g in step 2 already holds the decay term.
"""

import numbers

import keras
import numpy as np
from keras import ops

from kbatch import checks
from kbatch.optimizers import exclusions


def _sum_of_squares(x):
    """sum(x ** 2). On TensorFlow one fused op with no squared copy of x (`tf.nn.l2_loss`): that
    copy was a quarter of LARS's update time on CPU without XLA (benchmarks/bench_lars.py)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return 2.0 * tf.nn.l2_loss(x)
    return ops.sum(ops.square(x))


@keras.saving.register_keras_serializable(package="kbatch")
class LARS(keras.optimizers.Optimizer):
    """LARS with classic momentum; a Keras 3 optimizer (clipping, EMA, loss scaling all apply).

    Args:
        learning_rate: float >= 0, a `LearningRateSchedule`, or a callable.
        momentum: float in [0, 1).
        nesterov: use the Nesterov form of step 4.
        weight_decay: L2 coefficient added to the gradient *before* the trust ratio (step 1);
            Keras's own decoupled decay does not run.
        trust_coefficient: eta of the paper, >= 0.
        epsilon: added to ||g|| in the trust ratio, >= 0.
        exclude_from_weight_decay: substrings or regular expressions matched against each
            variable's path and its '/'-suffixes (`sequential/dense_1/bias`, `dense_1/bias`,
            `bias`), so they select the same variables after `keras.models.load_model`; see
            `kbatch.optimizers.exclusions`. The default (also None) is `DEFAULT_EXCLUDE`: biases
            and normalization parameters. `()` decays every variable.
        exclude_from_layer_adaptation: the same for step 2; None: the variables excluded from
            weight decay (including those excluded by Keras's `exclude_from_weight_decay()`).
        **kwargs: Keras's optimizer arguments (`global_clipnorm`, `use_ema`, `name`, ...).

    After a step, `trust_ratios()` gives {variable path: last trust ratio} (1.0 where adaptation is
    off), and `trust_ratio_stats()` their min, median and max over the adapted variables.
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        trust_coefficient=0.001,
        epsilon=0.0,
        exclude_from_weight_decay=exclusions.DEFAULT_EXCLUDE,
        exclude_from_layer_adaptation=None,
        name="lars",
        **kwargs,
    ):
        if isinstance(learning_rate, numbers.Real):
            learning_rate = checks.real("learning_rate", learning_rate, low=0)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = checks.real("momentum", momentum, low=0, high=1, high_open=True)
        self.nesterov = checks.boolean("nesterov", nesterov)
        self.weight_decay = checks.real("weight_decay", weight_decay, low=0)
        self.trust_coefficient = checks.real("trust_coefficient", trust_coefficient, low=0)
        self.epsilon = checks.real("epsilon", epsilon, low=0)
        if exclude_from_weight_decay is None:
            exclude_from_weight_decay = exclusions.DEFAULT_EXCLUDE
        self._decay_patterns = exclusions.check_patterns(exclude_from_weight_decay, "exclude_from_weight_decay")
        self._adaptation_patterns = None
        if exclude_from_layer_adaptation is not None:
            self._adaptation_patterns = exclusions.check_patterns(
                exclude_from_layer_adaptation, "exclude_from_layer_adaptation"
            )

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = []
        if self.momentum:
            self.momentums = self.add_optimizer_variables(variables, "momentum")
        self.trust_ratio_variables = [
            self.add_variable(
                shape=(),
                initializer="ones",
                name=exclusions.variable_path(variable).replace("/", "_") + "_trust_ratio",
            )
            for variable in variables
        ]

    def weight_decay_excluded(self, variable):
        """Whether step 1 skips `variable`: it matches `exclude_from_weight_decay`, or Keras's
        `exclude_from_weight_decay(var_list=..., var_names=...)` was told to skip it."""
        return exclusions.matches(self._decay_patterns, variable) or not self._use_weight_decay(variable)

    def layer_adaptation_excluded(self, variable):
        """Whether step 2 uses trust = 1 for `variable`."""
        if self._adaptation_patterns is None:
            return self.weight_decay_excluded(variable)
        return exclusions.matches(self._adaptation_patterns, variable)

    def _trust_ratio(self, weights, gradient):
        """Step 2 (a scalar): trust_coefficient * ||w|| / (||g|| + epsilon), or 1 if a norm is 0."""
        w_norm = ops.sqrt(_sum_of_squares(weights))
        g_norm = ops.sqrt(_sum_of_squares(gradient))
        ratio = self.trust_coefficient * w_norm / (g_norm + self.epsilon)
        return ops.where(w_norm * g_norm > 0, ratio, 1.0)

    def update_step(self, gradient, variable, learning_rate):
        """Steps 1-4 for one variable. On TensorFlow `variable` is the `tf.Variable` under the
        Keras one, so the exclusions are looked up on the Keras variable (it has the path)."""
        index = self._get_variable_index(variable)
        model_variable = self._trainable_variables[index]
        dtype = variable.dtype
        gradient = ops.cast(gradient, dtype)
        if self.weight_decay and not self.weight_decay_excluded(model_variable):
            gradient = gradient + ops.cast(self.weight_decay, dtype) * variable
        scale = ops.cast(learning_rate, dtype)  # learning_rate * trust, a scalar
        if not self.layer_adaptation_excluded(model_variable):
            trust = self._trust_ratio(variable, gradient)
            self.assign(self.trust_ratio_variables[index], ops.cast(trust, "float32"))
            scale = scale * trust
        step = scale * gradient
        if not self.momentum:
            self.assign_sub(variable, step)
            return
        momentum = ops.cast(self.momentum, dtype)
        velocity = momentum * self.momentums[index] + step
        self.assign(self.momentums[index], velocity)
        self.assign_sub(variable, momentum * velocity + step if self.nesterov else velocity)

    def _apply_weight_decay(self, variables):
        """Keras's decoupled decay (w -= lr * wd * w) must not run: LARS adds weight_decay * w
        to the gradient inside the trust ratio, in `update_step`."""

    def trust_ratios(self):
        """{variable path: the trust ratio of its last update}, 1.0 where adaptation is off now (a
        ratio restored from a checkpoint whose exclusions differed is not reported)."""
        return {
            exclusions.variable_path(variable): (
                1.0 if self.layer_adaptation_excluded(variable) else float(ops.convert_to_numpy(ratio))
            )
            for variable, ratio in zip(self._trainable_variables, self.trust_ratio_variables)
        }

    def trust_ratio_stats(self):
        """{"min", "median", "max"} of the last trust ratios of the variables LARS adapts (not
        excluded from layer adaptation), for a trainer's logs; {} if it adapts none."""
        ratios = self.trust_ratios()
        adapted = [
            ratios[exclusions.variable_path(v)]
            for v in self._trainable_variables
            if not self.layer_adaptation_excluded(v)
        ]
        if not adapted:
            return {}
        adapted = np.array(adapted)
        return {"min": float(adapted.min()), "median": float(np.median(adapted)), "max": float(adapted.max())}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "nesterov": self.nesterov,
                "weight_decay": self.weight_decay,
                "trust_coefficient": self.trust_coefficient,
                "epsilon": self.epsilon,
                "exclude_from_weight_decay": list(self._decay_patterns),
                "exclude_from_layer_adaptation": (
                    None if self._adaptation_patterns is None else list(self._adaptation_patterns)
                ),
            }
        )
        return config
