"""`smooth_model`: a user's model for tests that compare weights across strategies."""

import keras


def smooth_model(info):
    """Conv1D -> LayerNormalization -> tanh -> Dense, the `model_fn` path: no batch statistics,
    no ReLU kink.

    Runs on different strategies sum the same numbers in a different order (float32 rounding,
    about 1e-7); a smooth activation keeps such differences at that level, where a ReLU can flip
    a unit on or off and make them grow, so equal weights can be asserted."""
    inputs = keras.Input(info.input_shape)
    x = keras.layers.Conv1D(16, 5, strides=2, padding="same")(inputs)
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.Activation("tanh")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(info.num_classes)(x))


def linear_model(info):
    """Softmax regression (Flatten -> Dense): its per-example gradients have a closed form."""
    inputs = keras.Input(info.input_shape)
    return keras.Model(inputs, keras.layers.Dense(info.num_classes)(keras.layers.Flatten()(inputs)))
