"""RMS normalization (Zhang & Sennrich 2019): LayerNorm without the mean, the norm of most
recent language models."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kbatch")
class RMSNormalization(keras.layers.Layer):
    """y = x / sqrt(mean(x^2 over the last axis) + epsilon) * gamma.

    `keras.layers.RMSNormalization` computes the same, but names its scale `scale` and takes no
    initializer for it; this one names it `gamma`, as the other norms do, so the weight-decay
    exclusions and a residual block's zero-initialized last scale treat every norm alike.
    """

    def __init__(self, axis=-1, epsilon=1e-6, gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.axis, self.epsilon = axis, epsilon
        self.gamma_initializer = keras.initializers.get(gamma_initializer)

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[self.axis],), initializer=self.gamma_initializer)

    def call(self, inputs):
        mean_square = ops.mean(ops.square(inputs), axis=self.axis, keepdims=True)
        return inputs * ops.rsqrt(mean_square + self.epsilon) * ops.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "epsilon": self.epsilon,
            "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
        }
