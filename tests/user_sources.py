"""A user's data module, named on the command line as `--config.dataset=python:user_sources:FUNCTION`
(tests/test_user_source_cli.py): tiny signals shaped for kbatch's `mnist1d_cnn` (40 x 1, 4
classes), and functions that are not sources."""

import numpy as np

NUM_TRAIN, NUM_EVAL = 256, 64


def signals():
    """`kbatch.data.from_arrays` of Gaussian signals [n, 40, 1] labelled by a random linear teacher."""
    import kbatch

    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(40, 4))
    x = rng.normal(size=(NUM_TRAIN + NUM_EVAL, 40, 1)).astype(np.float32)
    y = (x[:, :, 0] @ teacher).argmax(1)
    return kbatch.data.from_arrays(x[:NUM_TRAIN], y[:NUM_TRAIN], eval=(x[NUM_TRAIN:], y[NUM_TRAIN:]), name="signals")


def arrays_not_a_source():
    return np.zeros((4, 40, 1)), np.zeros(4)


NOT_A_FUNCTION = 3
