"""Input without TensorFlow: MNIST-1D as NumPy arrays, for the JAX backend (a TPU VM or a GPU
machine with Keras and JAX and no TensorFlow).

The arrays are the ones the TFDS builder (`kbatch.data.mnist1d`) stores: both call
`make_mnist1d`. Training data is one endless stream of positions, as in `kbatch.data.pipeline`:
position p is example `permutation(seed, epoch)[p mod N]` with epoch = p // N, so the stream is a
pure function of (seed, examples seen) and a resumed run rebuilds it where it stopped. (The
permutation is NumPy's, not TensorFlow's `index_shuffle`: the two backends see the same examples
per epoch in different orders.) Evaluation batches are padded to whole global batches with
weight-0 examples, so every example counts once. The generated arrays are kept in
`$KBATCH_CACHE_DIR` (default `~/.cache/kbatch`), so only the first run pays for generating them
(mnist1d/large: about 30 s here), as TFDS keeps its prepared copy for the TensorFlow backend.
"""

import functools
import importlib.metadata
import os
import random
import zipfile

import numpy as np

from kbatch.data.names import DatasetInfo, dataset_family

SEQUENCE_LENGTH = 40
# name -> (examples drawn, the training fraction, the generator's seed): the builder's configs.
MNIST1D_CONFIGS = {"original": (5000, 0.8, 42), "large": (70000, 6 / 7, 42)}


def make_mnist1d(config):
    """{"x", "y", "x_test", "y_test"} of MNIST-1D config `config` (Greydanus 2020), generated here."""
    from mnist1d.data import get_dataset_args, make_dataset

    num_examples, train_fraction, seed = MNIST1D_CONFIGS[config]
    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_examples, train_fraction, seed
    # make_dataset seeds the global `random` and `np.random`; leave the caller's state as it was.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        return make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


SPLITS = ("x", "y", "x_test", "y_test")


def cache_path(config):
    """Where the arrays of MNIST-1D `config` are kept (the generator's version in the name)."""
    root = os.environ.get("KBATCH_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "kbatch")
    return os.path.join(root, f"mnist1d-{config}-{importlib.metadata.version('mnist1d')}.npz")


def cached_mnist1d(config):
    """`make_mnist1d(config)`'s arrays, read from `cache_path(config)`, or generated and written
    there whole (a damaged file is generated again; an unwritable folder only costs the time)."""
    path = cache_path(config)
    try:
        with np.load(path) as saved:
            return {split: saved[split] for split in SPLITS}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        pass
    data = make_mnist1d(config)
    arrays = {split: np.asarray(data[split]) for split in SPLITS}
    partial = f"{path}.partial-{os.getpid()}.npz"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(partial, **arrays)
        os.replace(partial, path)
    except OSError:
        pass
    return arrays


@functools.lru_cache(maxsize=2)
def _arrays(name):
    family = dataset_family(name)
    config = name.partition("/")[2] or "original"
    if family != "mnist1d" or config not in MNIST1D_CONFIGS:
        raise ValueError(f"config.dataset={name!r}: without TensorFlow only "
                         f"{', '.join('mnist1d/' + c for c in MNIST1D_CONFIGS)} can be read (TFDS serves the others).")
    data = cached_mnist1d(config)
    as_inputs = lambda x: np.asarray(x, np.float32)[..., None]  # noqa: E731  (one channel, as the TFDS pipeline)
    return (as_inputs(data["x"]), np.asarray(data["y"], np.int32),
            as_inputs(data["x_test"]), np.asarray(data["y_test"], np.int32))


def describe(name):
    x, _, x_test, _ = _arrays(name)
    return DatasetInfo(name=name, num_train_examples=len(x), num_eval_examples=len(x_test),
                       input_shape=x.shape[1:], num_classes=10)


class TrainStream:
    """Global batches of the stream from `start_example` on: `next_batch()` -> (x, y)."""

    def __init__(self, name, global_batch_size, seed, start_example=0):
        self.x, self.y, _, _ = _arrays(name)
        self.batch, self.seed, self.position = global_batch_size, seed, start_example
        self._permutations = {}

    def _permutation(self, epoch):
        if epoch not in self._permutations:
            self._permutations = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.x))}
        return self._permutations[epoch]

    def next_batch(self):
        positions = np.arange(self.position, self.position + self.batch)
        size = len(self.x)
        index = np.concatenate([self._permutation(e)[positions[positions // size == e] % size]
                                for e in np.unique(positions // size)])
        self.position += self.batch
        return self.x[index], self.y[index]


def eval_batches(name, global_batch_size):
    """[(x, y, weight)] over the evaluation split, padded with weight-0 copies of its first
    example to whole global batches."""
    _, _, x, y = _arrays(name)
    padding = -len(x) % global_batch_size
    weights = np.concatenate([np.ones(len(x), np.float32), np.zeros(padding, np.float32)])
    x = np.concatenate([x, np.repeat(x[:1], padding, 0)])
    y = np.concatenate([y, np.repeat(y[:1], padding, 0)])
    return [(x[i:i + global_batch_size], y[i:i + global_batch_size], weights[i:i + global_batch_size])
            for i in range(0, len(x), global_batch_size)]
