"""The contrastive runs of tests/test_contrastive.py and tests/contrastive_worker.py: two noisy views
of random examples, a linear projection, SGD."""

import keras
import numpy as np

import kbatch

N, FEATURES, DIM, BATCH, TEMPERATURE = 256, 6, 4, 32, 0.5


def contrastive_config(strategy, updates):
    """The config fields of a run of N / BATCH updates on `strategy`, `updates` to a loop."""
    return dict(
        strategy=strategy,
        batch_size=BATCH,
        base_batch_size=BATCH,
        base_learning_rate=0.5,
        warmup_epochs=0.0,
        decay="constant",
        optimizer="sgd",
        weight_decay=0.0,
        steps_per_loop=updates,
        num_epochs=1,
        norm="none",
    )


def two_view_data():
    """N examples as two noisy views each, [N, 2, FEATURES]; labels unused (zeros)."""
    rng = np.random.default_rng(1)
    examples = rng.normal(size=(N, 1, FEATURES))
    views = (examples + 0.3 * rng.normal(size=(N, 2, FEATURES))).astype(np.float32)  # two noisy views
    return kbatch.data.from_arrays(views, np.zeros(N, np.int32), eval=(views[:64], np.zeros(64, np.int32)))


def projection(info):
    """A linear projection of each view, the same weights for every run."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input(info.input_shape)
    return keras.Model(inputs, keras.layers.Dense(DIM)(inputs))  # each view projected alike: [n, 2, DIM]
