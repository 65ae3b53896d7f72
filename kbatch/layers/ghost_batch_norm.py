"""Ghost batch normalization (Hoffer, Hubara & Soudry 2017, "Train longer, generalize better",
section 4.1, Algorithm 1): batch norm whose training statistics come from small virtual batches.

Keras 3 dropped `BatchNormalization(virtual_batch_size=...)`; this layer brings it back as a
subclass of `keras.layers.BatchNormalization`, so inference, weights, checkpoints and
`get_config()` are Keras's own.
"""

import keras
from keras import ops

from kbatch import checks


@keras.saving.register_keras_serializable(package="kbatch")
class GhostBatchNormalization(keras.layers.BatchNormalization):
    """Batch normalization over consecutive virtual ("ghost") batches of `virtual_batch_size`.

    Training: the batch is cut into consecutive groups of `virtual_batch_size` examples and
    each group is normalized with its own mean and (biased) variance, exactly as
    `keras.layers.BatchNormalization` would normalize that group alone. When the batch does not
    divide by `virtual_batch_size`, the last ghost batch is the smaller remainder and is
    normalized with its own statistics (no error, no padding leaks into the statistics).

    Moving statistics: one update per call, as in BatchNormalization, with the statistics the
    layer normalized by: `moving_mean` tracks the mean of the ghost means and
    `moving_variance` the mean of the ghost variances, each ghost weighted by its element
    count (so `moving_mean` tracks the batch mean). With `virtual_batch_size` equal to the
    batch this is exactly BatchNormalization, outputs and moving statistics. Inference
    (`training=False`, or `trainable=False`) uses the moving statistics: Keras's own code path.

    Gradient accumulation: accumulating the gradients of k micro-batches of size m through
    BatchNormalization does *not* give the gradient of the full batch of k*m through
    BatchNormalization (each micro-batch is normalized with its own statistics). It *does*
    give exactly the full-batch gradient through GhostBatchNormalization with
    `virtual_batch_size=m`. Train with ghost batches of the micro-batch size and accumulation
    becomes an exact reorganisation of one large-batch step.

    Args:
        virtual_batch_size: positive int, examples per ghost batch (per replica: each replica
            cuts its own batch).
        momentum: in [0, 1]; epsilon: > 0.
        axis; center, scale, *_initializer, *_regularizer, *_constraint (keywords):
            as `keras.layers.BatchNormalization`. `synchronized` and `renorm` are not
            supported (a ghost batch lives on one replica).
        mask: as BatchNormalization, masked positions do not count in the statistics.
    """

    def __init__(self, virtual_batch_size, axis=-1, momentum=0.99, epsilon=1e-3, **kwargs):
        virtual_batch_size = checks.positive_int("virtual_batch_size", virtual_batch_size)
        momentum = checks.real("momentum", momentum, low=0, high=1)
        epsilon = checks.real("epsilon", epsilon, low=0, low_open=True)
        if kwargs.get("synchronized") or kwargs.get("renorm"):
            raise ValueError(
                "GhostBatchNormalization supports neither synchronized=True nor renorm=True: "
                "each ghost batch is normalized on its own replica with its own statistics."
            )
        # center, scale and the initializers, regularizers and constraints are
        # BatchNormalization's own arguments, checked and serialized by it.
        super().__init__(axis=axis, momentum=momentum, epsilon=epsilon, **kwargs)
        self.virtual_batch_size = virtual_batch_size

    def build(self, input_shape):
        if self.axis % len(input_shape) == 0:
            checks.fail("axis", self.axis, f"a feature axis, not the batch axis 0 (input shape {input_shape})")
        super().build(input_shape)

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable):
            return super().call(inputs, training=False, mask=mask)
        if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
            raise ValueError(
                "The mask must have one dimension less than the inputs; got "
                f"mask.shape={mask.shape}, inputs.shape={inputs.shape}."
            )
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        rank = len(x.shape)
        channel = self.axis % rank
        ghosts, weights = self._ghost_batches(x, mask)

        # Ghost layout (G, V, ...features): statistics over V and the non-channel feature axes.
        axes = [1] + [a + 1 for a in range(1, rank) if a != channel]
        count = ops.sum(weights, axis=axes, keepdims=True)
        mean, variance = self._ghost_moments(ghosts, weights, axes, count)

        outputs = self._normalize(ghosts, mean, variance, channel)
        outputs = ops.reshape(outputs, [-1] + list(ops.shape(x)[1:]))[: ops.shape(x)[0]]
        self._update_moving_statistics(mean, variance, count, channel)
        return ops.cast(outputs, self.compute_dtype)

    def _ghost_batches(self, x, mask):
        """`x` and its weights in the ghost layout (G, V, ...features), the last ghost batch padded.

        Weight 1 for every real (unmasked) element, 0 for the padding that completes the last
        ghost batch; statistics are weighted sums, so the padding never counts."""
        rank = len(x.shape)
        batch = ops.shape(x)[0]
        ghost_shape = [-1, self.virtual_batch_size] + list(ops.shape(x)[1:])
        if mask is None:
            weights = ops.ones([batch] + [1] * (rank - 1), dtype=x.dtype)
        else:
            weights = ops.expand_dims(ops.cast(mask, x.dtype), -1)
        padding = [[0, (-batch) % self.virtual_batch_size]] + [[0, 0]] * (rank - 1)
        ghosts = ops.reshape(ops.pad(x, padding), ghost_shape)
        weights = ops.reshape(ops.pad(ops.broadcast_to(weights, ops.shape(x)), padding), ghost_shape)
        return ghosts, weights

    def _ghost_moments(self, ghosts, weights, axes, count):
        """Each ghost batch's mean and (biased) variance over `axes`, its padding left out
        (`kbatch.diagnostics.bn_coupling` holds them fixed through this method)."""
        safe_count = ops.maximum(count, 1.0)
        mean = ops.sum(ghosts * weights, axis=axes, keepdims=True) / safe_count
        variance = ops.sum(weights * ops.square(ghosts - mean), axis=axes, keepdims=True) / safe_count
        return mean, variance

    def _normalize(self, ghosts, mean, variance, channel):
        """Each ghost batch normalized by its own statistics, then scaled and centered."""
        outputs = (ghosts - mean) * ops.rsqrt(variance + self.epsilon)
        broadcast = [1] * len(ghosts.shape)
        broadcast[channel + 1] = -1
        if self.scale:
            outputs = outputs * ops.reshape(ops.cast(self.gamma, ghosts.dtype), broadcast)
        if self.center:
            outputs = outputs + ops.reshape(ops.cast(self.beta, ghosts.dtype), broadcast)
        return outputs

    def _update_moving_statistics(self, mean, variance, count, channel):
        """One moving-average update with the count-weighted mean of the ghost statistics."""
        ghost_axes = [a for a in range(len(mean.shape)) if a != channel + 1]
        total = ops.maximum(ops.sum(count, axis=ghost_axes), 1.0)
        batch_mean = ops.sum(mean * count, axis=ghost_axes) / total
        batch_variance = ops.sum(variance * count, axis=ghost_axes) / total
        momentum = self.momentum
        self.moving_mean.assign(ops.cast(self.moving_mean, mean.dtype) * momentum + batch_mean * (1.0 - momentum))
        self.moving_variance.assign(
            ops.cast(self.moving_variance, mean.dtype) * momentum + batch_variance * (1.0 - momentum)
        )

    def get_config(self):
        return {**super().get_config(), "virtual_batch_size": self.virtual_batch_size}
