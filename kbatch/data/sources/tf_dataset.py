"""A source over a user's own `tf.data.Dataset` of unbatched `(x, y)` examples (TensorFlow backend;
its NumPy form reads it through TensorFlow too).

The stream is the training dataset repeated; global batch t is its examples [tB, (t + 1)B), and a
resumed run skips the examples already seen. The source cannot see whether the user's dataset
gives the same examples in the same order each time it is iterated (an unseeded `shuffle`, a
`shuffle(reshuffle_each_iteration=True)`, a non-deterministic `map` do not): it claims its
guarantees only when told `deterministic=True`.
"""

import numpy as np
import tensorflow as tf

from kbatch.data.names import DatasetInfo, FeatureSpec
from kbatch.data.sources import checks, examples
from kbatch.data.sources.base import Guarantees, Source

WHO = "kbatch.data.from_tf_dataset"
EVAL_CHUNK = 1024


def _spec(tensor_spec):
    dtype = "object" if tensor_spec.dtype == tf.string else np.dtype(tensor_spec.dtype.as_numpy_dtype).name
    return FeatureSpec(tuple(tensor_spec.shape), dtype)


def from_tf_dataset(
    train,
    eval,
    num_train_examples=None,
    num_classes=None,
    deterministic=False,  # noqa: A002
    name="tf.data",
):
    """A `Source` of the `tf.data.Dataset` `train` of `(x, y)` examples (x a tensor or a dict),
    evaluated on `eval` (one of the same kind); `num_train_examples` is needed where `train`'s
    cardinality is unknown."""
    checks.eval_given(WHO, eval)
    for what, dataset in (("train", train), ("eval", eval)):
        if (
            not isinstance(dataset, tf.data.Dataset)
            or not isinstance(dataset.element_spec, tuple)
            or len(dataset.element_spec) != 2
        ):
            raise ValueError(f"{WHO}: {what} must be a tf.data.Dataset of unbatched (x, y) examples; got {dataset!r}.")
    size = int(train.cardinality())
    num_train_examples = num_train_examples or (size if size > 0 else None)
    if num_train_examples is None:
        raise ValueError(
            f"{WHO}: the training dataset's size is unknown (cardinality {size}): give "
            "num_train_examples, the examples of one epoch."
        )
    return TFDatasetSource(train, eval, num_train_examples, num_classes, deterministic, name)


class TFDatasetSource(Source):
    """A user's `tf.data.Dataset` as the training stream (see the module's docstring)."""

    def __init__(self, train, eval_data, num_train_examples, num_classes, deterministic, name):
        self.train, self.eval = train, eval_data
        self.num_train_examples, self.num_classes = num_train_examples, num_classes
        self.deterministic, self.name = deterministic, name

    def describe(self):
        x_spec, y_spec = self.train.element_spec
        input_spec = tf.nest.map_structure(_spec, x_spec)
        return DatasetInfo(
            name=self.name,
            num_train_examples=self.num_train_examples,
            num_eval_examples=int(self.eval.reduce(0, lambda count, _: count + 1)),
            input_shape=examples.shapes(input_spec),
            num_classes=self.num_classes,
            input_spec=input_spec,
            label_spec=_spec(y_spec),
        )

    def guarantees(self):
        return Guarantees(
            exact_resume=self.deterministic,
            same_across_strategies=self.deterministic,
            same_across_backends=self.deterministic,
        )

    def global_batches(self, global_batch_size, start_example=0):
        """The training stream as a `tf.data.Dataset` of global batches from `start_example` on."""
        return self.train.repeat().skip(start_example).batch(global_batch_size, drop_remainder=True)

    def train_batches(self, global_batch_size, seed, start_example=0):
        del seed  # the user's dataset shuffles
        for x, y in self.global_batches(global_batch_size, start_example).as_numpy_iterator():
            if self.num_classes:
                checks.labels_in_range(WHO, y, self.num_classes)
            yield x, y

    def tf_train_dataset_fn(self, global_batch_size, seed, start_example=0):
        def dataset_fn(input_context):
            per_replica = input_context.get_per_replica_batch_size(global_batch_size)
            part = global_batch_size // input_context.num_input_pipelines
            first = input_context.input_pipeline_id * part
            mine = self.global_batches(global_batch_size, start_example).map(
                lambda *batch: tf.nest.map_structure(lambda value: value[first : first + part], batch)
            )
            return mine.unbatch().batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

        return dataset_fn

    def eval_chunks(self):
        yield from self.eval.batch(EVAL_CHUNK).as_numpy_iterator()
