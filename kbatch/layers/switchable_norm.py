"""Switchable normalization (Luo, Ren, Peng, Zhang & Li 2018, "Differentiable Learning-to-Normalize
via Switchable Normalization", eq. 3 and section 3.1): a learned mixture of batch, layer and
instance statistics."""

import keras
from keras import constraints, initializers, ops, regularizers

from kbatch import checks

MODES = ("batch", "layer", "instance")


@keras.saving.register_keras_serializable(package="kbatch")
class SwitchableNormalization(keras.layers.Layer):
    """Normalizes with a softmax-weighted mixture of the statistics of several normalizers.

    `y = gamma * (x - sum_k w_k mu_k) / sqrt(sum_k v_k var_k + epsilon) + beta`, where
    `w = softmax(mean_logits)` and `v = softmax(variance_logits)` are learned separately for the
    mean and the variance (Luo et al. 2018, eq. 3), and `k` runs over `modes`:

    - "batch": per channel, over the batch and every non-channel axis (BatchNormalization);
    - "layer": per example, over every axis but the batch (the paper's LN: for (N, H, W, C)
      over H, W and C, i.e. `LayerNormalization(axis=[1, 2, 3])`, not Keras's default axis=-1);
    - "instance": per example and channel, over the spatial axes (`GroupNormalization(groups=-1)`):
      (N, L, C) over L, (N, H, W, C) over H and W. A rank-2 input (N, C) has no spatial axis,
      so "instance" is rejected there with an error.

    `modes=("batch", "layer")` is the learnable BN/LN mix. The logits start at zero (equal
    weights). In training the "batch" statistics come from the batch and update
    `moving_mean`/`moving_variance` like BatchNormalization; in inference (`training=False` or
    `trainable=False`) they come from those moving averages, so an example's output never depends
    on the other examples. `gamma` and `beta` are per channel. `importance()` returns the current
    mixture weights.
    """

    def __init__(
        self,
        axis=-1,
        modes=MODES,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        modes = (modes,) if isinstance(modes, str) else tuple(modes)
        unknown = [mode for mode in modes if mode not in MODES]
        if not modes or unknown or len(set(modes)) != len(modes):
            checks.fail(
                "modes", modes, "a non-empty sequence of distinct names from " + ", ".join(repr(m) for m in MODES)
            )
        self.axis = int(axis)
        self.modes = modes
        self.momentum = checks.real("momentum", momentum, low=0, high=1)
        self.epsilon = checks.real("epsilon", epsilon, low=0, low_open=True)
        self.center = center
        self.scale = scale
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)

    def build(self, input_shape):
        rank, channel = len(input_shape), self.axis % len(input_shape)
        channels = self._check_input(input_shape, channel)
        self._axes = {
            "batch": [a for a in range(rank) if a != channel],
            "layer": list(range(1, rank)),
            "instance": [a for a in range(1, rank) if a != channel],
        }
        self._broadcast = [1] * rank
        self._broadcast[channel] = channels

        def weight(name, initializer, trainable=True, **extra):
            return self.add_weight(
                shape=(channels,), name=name, initializer=initializer, trainable=trainable, autocast=False, **extra
            )

        self.gamma = self.beta = self.moving_mean = self.moving_variance = None
        if self.scale:
            self.gamma = weight(
                "gamma", self.gamma_initializer, regularizer=self.gamma_regularizer, constraint=self.gamma_constraint
            )
        if self.center:
            self.beta = weight(
                "beta", self.beta_initializer, regularizer=self.beta_regularizer, constraint=self.beta_constraint
            )
        if "batch" in self.modes:
            self.moving_mean = weight("moving_mean", self.moving_mean_initializer, trainable=False)
            self.moving_variance = weight("moving_variance", self.moving_variance_initializer, trainable=False)
        self.mean_logits = self.add_weight(
            shape=(len(self.modes),), name="mean_logits", initializer="zeros", autocast=False
        )
        self.variance_logits = self.add_weight(
            shape=(len(self.modes),), name="variance_logits", initializer="zeros", autocast=False
        )

    def _check_input(self, input_shape, channel):
        """The channel count of `input_shape`; a one-line ValueError for an axis or modes it cannot take."""
        if channel == 0:
            checks.fail("axis", self.axis, f"a feature axis, not the batch axis 0 (input shape {input_shape})")
        if "instance" in self.modes and len(input_shape) < 3:
            checks.fail(
                "modes",
                self.modes,
                f"without 'instance' for input shape {input_shape}: it has "
                f"no spatial axis to normalize an instance over; use modes=('batch', 'layer')",
            )
        if input_shape[channel] is None:
            checks.fail("axis", self.axis, f"an axis of defined size (input shape {input_shape})")
        return input_shape[channel]

    def call(self, inputs, training=None):
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        use_batch = bool(training and self.trainable)
        means, variances = [], []
        for mode in self.modes:
            if mode == "batch" and not use_batch:
                mean = ops.reshape(ops.cast(self.moving_mean, x.dtype), self._broadcast)
                variance = ops.reshape(ops.cast(self.moving_variance, x.dtype), self._broadcast)
            else:
                mean, variance = ops.moments(x, axes=self._axes[mode], keepdims=True)
            if mode == "batch" and use_batch:
                self._update_moving_statistics(mean, variance)
            means.append(mean)
            variances.append(variance)
        mean = _mix(means, self.mean_logits)
        variance = _mix(variances, self.variance_logits)

        outputs = (x - mean) * ops.rsqrt(variance + self.epsilon)
        if self.scale:
            outputs = outputs * ops.reshape(ops.cast(self.gamma, x.dtype), self._broadcast)
        if self.center:
            outputs = outputs + ops.reshape(ops.cast(self.beta, x.dtype), self._broadcast)
        return ops.cast(outputs, self.compute_dtype)

    def _update_moving_statistics(self, mean, variance):
        momentum = self.momentum
        for moving, value in ((self.moving_mean, mean), (self.moving_variance, variance)):
            value = ops.reshape(value, (-1,))
            moving.assign(ops.cast(moving, value.dtype) * momentum + value * (1.0 - momentum))

    def importance(self):
        """The current mixture weights: {"mean": {mode: weight}, "variance": {mode: weight}}."""
        weights = {}
        for key, logits in (("mean", self.mean_logits), ("variance", self.variance_logits)):
            values = ops.convert_to_numpy(ops.softmax(ops.convert_to_tensor(logits)))
            weights[key] = {mode: float(value) for mode, value in zip(self.modes, values)}
        return weights

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "modes": list(self.modes),
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
        }


def _mix(statistics, logits):
    """sum_k softmax(logits)_k * statistics[k] (statistics broadcast against each other)."""
    weights = ops.softmax(ops.cast(logits, statistics[0].dtype))
    return sum(weights[k] * statistic for k, statistic in enumerate(statistics))
