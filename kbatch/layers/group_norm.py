"""Group normalization (Wu & He 2018) that says which argument is wrong when groups don't fit."""

import keras

from kbatch import checks


@keras.saving.register_keras_serializable(package="kbatch")
class GroupNormalization(keras.layers.GroupNormalization):
    """`keras.layers.GroupNormalization`, whose build error names `groups` and the channel count.

    Keras's own message for 8 groups over 12 channels reads "Number of groups (8) must be a
    multiple of the number of channels (12)"; this one names the argument and its valid values.
    """

    def build(self, input_shape):
        channels = input_shape[self.axis]
        if self.groups != -1 and channels is not None and channels % self.groups:
            divisors = [d for d in range(1, channels + 1) if channels % d == 0]
            checks.fail(
                "groups",
                self.groups,
                f"a divisor of the number of channels ({channels}, axis "
                f"{self.axis} of input shape {input_shape}): one of {divisors}",
            )
        super().build(input_shape)
