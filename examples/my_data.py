"""A data module of your own, as `config.dataset="python:MODULE:FUNCTION"` names it (docs/data.md):
from the repository root,

  kbatch-train --config.dataset=python:examples.my_data:sine_waves --config.num_epochs=4

`sine_waves()` returns a `kbatch.data.Source` of noisy sine waves, 40 samples each (the input of
kbatch's `mnist1d_cnn`), labelled by their frequency (4 classes): any function that returns a
Source does, reading your files or building arrays as this one does.
"""

import numpy as np

import kbatch

LENGTH, FREQUENCIES = 40, (1.0, 2.0, 3.0, 4.0)


def _waves(count, rng, noise=0.3):
    labels = rng.integers(0, len(FREQUENCIES), count)
    t = np.linspace(0, 1, LENGTH, endpoint=False)
    phase = rng.uniform(0, 2 * np.pi, (count, 1))
    waves = np.sin(2 * np.pi * np.asarray(FREQUENCIES)[labels][:, None] * t + phase)
    noisy = waves + rng.normal(scale=noise, size=waves.shape)
    return noisy[..., None].astype(np.float32), labels


def sine_wave_arrays(num_train=4000, num_eval=1000, seed=0, noise=0.3):
    """((x, y), (x_eval, y_eval)): sine waves [n, 40, 1] with Gaussian noise of scale `noise`, and
    their frequency's index."""
    rng = np.random.default_rng(seed)
    return _waves(num_train, rng, noise), _waves(num_eval, rng, noise)


def sine_waves(num_train=4000, num_eval=1000, seed=0):
    """Noisy sine waves [n, 40, 1], labelled by their frequency: 4 classes."""
    (x, y), evaluation = sine_wave_arrays(num_train, num_eval, seed)
    return kbatch.data.from_arrays(x, y, eval=evaluation, num_classes=len(FREQUENCIES), name="sine_waves")
