"""Stateless shuffling by epoch: stream position p holds example `permutation(seed, epoch)[p mod N]`,
epoch = p // N, a fresh NumPy permutation each epoch, so the stream is a pure function of
(seed, position). Shared by the in-memory sources and `kbatch.data.numpy_source`."""

import numpy as np


class EpochShuffle:
    """The example numbers of stream positions over `size` examples; keeps the last epochs' permutations."""

    def __init__(self, size):
        self.size = size
        self._permutations = {}

    def _permutation(self, seed, epoch):
        if (seed, epoch) not in self._permutations:
            recent = {key: value for key, value in self._permutations.items() if key[1] >= epoch - 1}
            recent[seed, epoch] = np.random.default_rng([seed, epoch]).permutation(self.size)
            self._permutations = recent
        return self._permutations[seed, epoch]

    def indices(self, start, stop, seed):
        """The example numbers at stream positions [start, stop)."""
        positions = np.arange(start, stop)
        epochs = positions // self.size
        return np.concatenate(
            [self._permutation(seed, int(epoch))[positions[epochs == epoch] % self.size] for epoch in np.unique(epochs)]
        )
