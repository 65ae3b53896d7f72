"""A user's own data and model, as a test brings them: NumPy arrays (`arrays`), a model whose
initial weights are NumPy constants (`seeded_mlp`: the same on every backend), and a config.

  python tests/user_data.py MODEL_DIR JSON_OVERRIDES    # trains them, for a killed run or JAX
"""

import json
import sys

import keras
import numpy as np

CONFIG = {
    "batch_size": 64,
    "base_batch_size": 64,
    "num_epochs": 6,
    "base_learning_rate": 0.05,
    "warmup_epochs": 0.5,
    "steps_per_loop": 4,
    "checkpoint_every": 4,
    "evals_per_epoch": 1,
}


def arrays(num_train=512, num_eval=96, features=12, classes=4, seed=0):
    """(x, y, x_eval, y_eval): Gaussian inputs labelled by a random linear teacher."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(features, classes))
    x, x_eval = (rng.normal(size=(n, features)).astype(np.float32) for n in (num_train, num_eval))
    return x, (x @ teacher).argmax(1), x_eval, (x_eval @ teacher).argmax(1)


def source():
    import kbatch

    x, y, x_eval, y_eval = arrays()
    return kbatch.data.from_arrays(x, y, eval=(x_eval, y_eval))


def seeded_mlp(info):
    """Dense(16, tanh) -> Dense(classes), its weights drawn by NumPy: the same start on TensorFlow
    and JAX (Keras's initializers draw differently on each), and smooth (see smooth_model)."""
    rng = np.random.default_rng(1)
    width = int(np.prod(info.input_shape))

    def constant(*shape):
        return keras.initializers.Constant(rng.normal(scale=0.5 / np.sqrt(shape[0]), size=shape).astype(np.float32))

    inputs = keras.Input(info.input_shape)
    hidden = keras.layers.Dense(16, "tanh", kernel_initializer=constant(width, 16))(inputs)
    return keras.Model(
        inputs, keras.layers.Dense(info.num_classes, kernel_initializer=constant(16, info.num_classes))(hidden)
    )


def main(model_dir, overrides):
    from kbatch.training import train

    config = {**CONFIG, "model_dir": model_dir, **json.loads(overrides)}
    result = train(config, data=source(), model_fn=seeded_mlp, verbose=False)
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))


if __name__ == "__main__":
    main(*sys.argv[1:])
