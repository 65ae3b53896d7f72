"""The data-source contract: what the trainer asks of any data, on both backends.

Training data is one endless stream of positions 0, 1, 2, ...; global batch t holds positions
[tB, (t + 1)B). A source that can say which example each position holds (`PositionalSource`)
gives the same examples for the same positions to every strategy, worker count and backend, and
a resumed run continues at the position it stopped. Evaluation is one pass, padded with weight-0
examples to whole global batches, so every example counts once whatever the replica count.
"""

import abc
import dataclasses

import numpy as np

from kbatch.data.sources import examples


@dataclasses.dataclass(frozen=True)
class Guarantees:
    """What a source keeps; the tests check each one a source claims.

    exact_resume: the stream from position p of a new source object is the uninterrupted stream's.
    same_across_strategies: global batch t holds the same examples under every strategy, worker
      count and replica count (the trainer splits a global batch, never draws its own).
    same_across_backends: the NumPy form (JAX) and the tf.data form (TensorFlow) give the same
      examples in the same order, bit for bit.
    """

    exact_resume: bool
    same_across_strategies: bool
    same_across_backends: bool


class Source(abc.ABC):
    """Training and evaluation data for `kbatch.training`: NumPy batches (JAX backend) and, where
    TensorFlow is installed, `tf.data` dataset functions (TensorFlow backends). `name` is what a
    run records (config.json's dataset "data:NAME"), known without reading the data."""

    name = "source"

    @abc.abstractmethod
    def describe(self):
        """A `kbatch.data.DatasetInfo`: example counts, input and label specs, classes."""

    @abc.abstractmethod
    def guarantees(self):
        """The `Guarantees` this source keeps."""

    @abc.abstractmethod
    def train_batches(self, global_batch_size, seed, start_example=0):
        """Global training batches `(x, y)` forever: batch t holds stream positions
        [start_example + t B, start_example + (t + 1) B)."""

    @abc.abstractmethod
    def eval_chunks(self):
        """One pass over the evaluation examples as `(x, y)` chunks of any size."""

    def eval_batches(self, global_batch_size):
        """One pass of evaluation batches `(x, y, weight)` of exactly `global_batch_size` examples:
        each example once with weight 1, the last batch padded with weight-0 copies of the first."""
        return list(weighted_batches(self.eval_chunks(), global_batch_size))

    def probe_examples(self, size):
        """The first `size` evaluation examples (all, if there are fewer) as NumPy `(x, y)`: the fixed
        batch the diagnostics (sharpness) measure on."""
        x, y, weight = next(weighted_batches(self.eval_chunks(), size))
        return examples.take(x, weight > 0), y[weight > 0]

    def tf_probe_examples(self, size):
        """`probe_examples` as the TensorFlow backends read them (the same, unless a source's
        tf.data form preprocesses otherwise)."""
        return self.probe_examples(size)

    def tf_prepare(self):
        """Make the tf.data form ready to read (a TFDS copy prepared), so that what cannot be read
        is said before training starts; nothing to do for a source held in memory."""

    def tf_train_dataset_fn(self, global_batch_size, seed, start_example=0):
        """A `dataset_fn(input_context)` of per-replica training batches for
        `strategy.distribute_datasets_from_function` (imports TensorFlow)."""
        from kbatch.data.sources import tf_adapter

        return tf_adapter.train_dataset_fn(self, global_batch_size, seed, start_example)

    def tf_eval_dataset_fn(self, global_batch_size):
        """A `dataset_fn(input_context)` of per-replica evaluation batches `(x, y, weight)`."""
        from kbatch.data.sources import tf_adapter

        return tf_adapter.eval_dataset_fn(self, global_batch_size)


class PositionalSource(Source):
    """A source that says which example each stream position holds: its stream is a pure function
    of (seed, position)."""

    @abc.abstractmethod
    def examples_at(self, start, stop, seed):
        """The training examples `(x, y)` at stream positions [start, stop)."""

    def train_batches(self, global_batch_size, seed, start_example=0):
        position = start_example
        while True:
            yield self.examples_at(position, position + global_batch_size, seed)
            position += global_batch_size


def weighted_batches(chunks, batch_size):
    """`(x, y)` chunks of any size re-cut into `(x, y, weight)` batches of `batch_size`, the last
    one padded with weight-0 copies of the first example."""
    first = None
    for x, y in examples.recut(chunks, batch_size):
        first = first or (examples.take(x, slice(0, 1)), y[:1])
        padding = batch_size - len(y)
        weights = np.concatenate([np.ones(len(y), np.float32), np.zeros(padding, np.float32)])
        if padding:
            x = examples.join([x, examples.map_features(lambda feature: np.repeat(feature, padding, 0), first[0])])
            y = np.concatenate([y, np.repeat(first[1], padding, 0)])
        yield x, y, weights
    if first is None:
        raise ValueError("the evaluation data is empty: give at least one evaluation example.")
