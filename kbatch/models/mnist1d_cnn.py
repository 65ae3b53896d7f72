"""A small 1-D CNN for MNIST-1D, with the normalization layer chosen by name."""

import keras

from kbatch import layers
from kbatch.layers import registry


def mnist1d_cnn(num_classes=10, input_shape=(40, 1), norm="batch", norm_kwargs=None, width=32):
    """Three convolutions (width, 2 width, 4 width channels; the last two stride 2), each
    followed by the norm and a ReLU, then a linear classifier on the flattened features.

    Position matters in MNIST-1D (Greydanus 2020), so the classifier sees the flattened
    feature map rather than a global average.
    """
    norm_kwargs = dict(norm_kwargs or {})
    # A norm that subtracts a per-channel mean makes a convolution's bias redundant. Layer and
    # group norm normalize across channels: they keep the bias (without it, the constant stretches
    # of an MNIST-1D signal give exactly-zero normalized outputs sitting on the ReLU's kink).
    use_bias = not registry.facts(norm).per_channel_mean
    inputs = keras.Input(input_shape)
    x = inputs
    for index, (channels, stride) in enumerate([(width, 1), (2 * width, 2), (4 * width, 2)]):
        x = keras.layers.Conv1D(
            channels,
            5 if index == 0 else 3,
            strides=stride,
            padding="same",
            use_bias=use_bias,
            name=f"conv{index + 1}",
        )(x)
        x = layers.get(norm, name=f"norm{index + 1}", **norm_kwargs)(x)
        x = keras.layers.ReLU(name=f"relu{index + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mnist1d_cnn")
