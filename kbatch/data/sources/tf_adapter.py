"""Any source as `tf.data` dataset functions for the TensorFlow backends (imported only there).

Each input pipeline i of n reads the global batches of the source's NumPy stream and yields, in
order, the per-replica shares of its part, rows [i B/n, (i + 1) B/n) of each: under
`strategy.distribute_datasets_from_function` replica r of the run gets rows [r b, (r + 1) b) of
global batch t, so every strategy and worker count sees the source's examples.
"""

import numpy as np
import tensorflow as tf

from kbatch.data.sources import examples


def _tensor_spec(batch, feature):
    dtype = tf.string if np.dtype(feature.dtype).kind in "OSU" else tf.as_dtype(feature.dtype)
    return tf.TensorSpec((batch, *feature.shape), dtype)


def signature(info, batch, weighted=False):
    """The `output_signature` of batches of `batch` examples of a source `info` describes."""
    inputs = examples.map_features(lambda feature: _tensor_spec(batch, feature), info.input_spec)
    parts = (inputs, _tensor_spec(batch, info.label_spec))
    return (*parts, tf.TensorSpec((batch,), tf.float32)) if weighted else parts


def _shares(batches, input_context, global_batch_size):
    """This pipeline's per-replica shares of each global batch, in order."""
    per_replica = input_context.get_per_replica_batch_size(global_batch_size)
    part = global_batch_size // input_context.num_input_pipelines
    first = input_context.input_pipeline_id * part
    for batch in batches:
        for row in range(first, first + part, per_replica):
            yield tuple(examples.take(value, slice(row, row + per_replica)) for value in batch)


def train_dataset_fn(source, global_batch_size, seed, start_example=0):
    """A `dataset_fn(input_context)` of per-replica training batches of `source`, forever."""
    info = source.describe()

    def dataset_fn(input_context):
        per_replica = input_context.get_per_replica_batch_size(global_batch_size)
        return tf.data.Dataset.from_generator(
            lambda: _shares(
                source.train_batches(global_batch_size, seed, start_example), input_context, global_batch_size
            ),
            output_signature=signature(info, per_replica),
        ).prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def eval_dataset_fn(source, global_batch_size):
    """A `dataset_fn(input_context)` of per-replica evaluation batches `(x, y, weight)`, one pass."""
    info = source.describe()

    def dataset_fn(input_context):
        per_replica = input_context.get_per_replica_batch_size(global_batch_size)
        return tf.data.Dataset.from_generator(
            lambda: _shares(source.eval_batches(global_batch_size), input_context, global_batch_size),
            output_signature=signature(info, per_replica, weighted=True),
        )

    return dataset_fn
