"""The built-in data sets held in memory (mnist1d, mnist, cifar10, cifar100, pystdlib_bytes: the `kbatch.data.facts`
rows with `in_memory`) as sources: the NumPy form is `kbatch.data.numpy_source`'s stream, the
tf.data form `kbatch.data.pipeline`'s. Both are pure functions of (seed, position), so a resume is
exact and strategies agree; the two forms see the same examples per epoch in different orders
(NumPy's permutation and TensorFlow's `index_shuffle`), so the backends do not agree bit for bit.
The others (imagenet2012) are `StreamedBuiltinSource`s.
"""

import dataclasses

import numpy as np

from kbatch.data import numpy_source
from kbatch.data.facts import FACTS
from kbatch.data.names import FeatureSpec, dataset_family
from kbatch.data.sources import examples
from kbatch.data.sources.arrays import ArraySource
from kbatch.data.sources.base import Guarantees, Source


class PipelineForms:
    """The tf.data forms of a built-in data set: `kbatch.data.pipeline`'s dataset functions."""

    def tf_prepare(self):
        from kbatch.data import pipeline

        pipeline.describe(self.name, self.data_dir)  # prepares TFDS's copy; a data_dir it cannot write is one line

    def tf_train_dataset_fn(self, global_batch_size, seed, start_example=0):
        from kbatch.data import pipeline

        return pipeline.train_dataset_fn(self.name, global_batch_size, seed, self.data_dir, start_example)

    def tf_eval_dataset_fn(self, global_batch_size):
        from kbatch.data import pipeline

        return pipeline.eval_dataset_fn(self.name, global_batch_size, self.data_dir)

    def tf_probe_examples(self, size):
        from kbatch.data import pipeline

        return pipeline.first_eval_examples(self.name, size, self.data_dir)


class BuiltinSource(PipelineForms, ArraySource):
    """Built-in data set `name` (e.g. "mnist1d/large"), read from `data_dir` (TFDS's default if None)."""

    def __init__(self, name, data_dir=None):
        self.family, self.data_dir = dataset_family(name), data_dir
        x, y, x_eval, y_eval = numpy_source._arrays(name, data_dir)
        super().__init__(
            x, y, numpy_source.eval_inputs(self.family, x_eval), y_eval, FACTS[self.family].num_classes, name
        )

    def describe(self):
        x, _ = self.examples_at(0, 1, seed=0)  # as the model reads it (stored CIFAR images are uint8)
        return dataclasses.replace(super().describe(), input_spec=examples.spec(x), input_shape=x.shape[1:])

    def guarantees(self):
        return Guarantees(exact_resume=True, same_across_strategies=True, same_across_backends=False)

    def examples_at(self, start, stop, seed):
        index = self.indices(start, stop, seed)
        return numpy_source.train_inputs(self.family, self.x[index], np.arange(start, stop), seed), self.y[index]


class StreamedBuiltinSource(PipelineForms, Source):
    """A built-in data set too large for memory (imagenet2012): `kbatch.data.pipeline`'s stream,
    shuffled through a buffer. A resumed run keeps its step but draws a fresh shuffle, and the
    NumPy form reads the tf.data one: no guarantee is kept."""

    def __init__(self, name, data_dir=None):
        self.name, self.data_dir = name, data_dir
        dataset_family(name)

    def describe(self):
        from kbatch.data import pipeline

        info = pipeline.describe(self.name, self.data_dir)
        return dataclasses.replace(
            info, input_spec=FeatureSpec(tuple(info.input_shape), "float32"), label_spec=FeatureSpec((), "int64")
        )

    def guarantees(self):
        return Guarantees(exact_resume=False, same_across_strategies=False, same_across_backends=False)

    def train_batches(self, global_batch_size, seed, start_example=0):
        import tensorflow as tf

        dataset = self.tf_train_dataset_fn(global_batch_size, seed, start_example)(tf.distribute.InputContext())
        return dataset.as_numpy_iterator()

    def eval_chunks(self):
        import tensorflow as tf

        for x, y, weight in self.tf_eval_dataset_fn(1)(tf.distribute.InputContext()).as_numpy_iterator():
            yield x[weight == 1], y[weight == 1]


def builtin_source(name, data_dir=None):
    """The source of built-in data set `name`: held in memory where its facts say so, else streamed."""
    held = FACTS[dataset_family(name)].in_memory
    return BuiltinSource(name, data_dir) if held else StreamedBuiltinSource(name, data_dir)
