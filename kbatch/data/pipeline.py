"""TFDS input pipelines for classification and token sequences, distributed with
`strategy.distribute_datasets_from_function`.

One dataset function runs per input pipeline (one per worker). Training data is one endless
stream of positions 0, 1, 2, ...; position p is example `index_shuffle(p mod N, seed=(run seed,
epoch))` of the N training examples, a fresh stateless permutation each epoch. The positions are
sharded by input pipeline, mapped to their (augmented: the position seeds the stateless random
ops) examples, batched per replica with `drop_remainder=True` (static shapes for TPU) and
prefetched.

Two properties follow, and the trainer relies on both:
- global batch t holds positions [t B, (t + 1) B) under every strategy and worker count: runs at
  the same global batch see the same examples and match;
- the stream is a pure function of (seed, position), so a resumed run rebuilds it at the number of
  examples already seen (`start_example`) instead of checkpointing the iterator (TF's distributed
  iterators are not checkpointable).
Data sets too large for memory (ImageNet) use a buffered `shuffle` instead: a resumed run keeps
its step, but its stream restarts with a fresh shuffle.
"""

import tensorflow as tf
import tensorflow_datasets as tfds

from kbatch.data import preprocessing
from kbatch.data.facts import FACTS
from kbatch.data.names import DatasetInfo, check_prepared, dataset_family, preparing

SHUFFLE_BUFFER = 16384


def describe(name, data_dir=None):
    """Sizes, input shape and class count of a data set (MNIST-1D is generated on first use)."""
    family = dataset_family(name)
    check_prepared(name, data_dir)
    eval_split = FACTS[family].eval_split
    with preparing(name, data_dir):
        train = _load(name, "train", data_dir)
        return DatasetInfo(
            name=name,
            num_train_examples=int(train.cardinality()),
            num_eval_examples=int(_load(name, eval_split, data_dir).cardinality()),
            input_shape=preprocessing.input_shape(family) or tuple(train.element_spec[0].shape),
            num_classes=FACTS[family].num_classes,
        )


def _load(name, split, data_dir):
    return tfds.load(name, split=split, data_dir=data_dir, as_supervised=True, shuffle_files=False)


def _in_memory_examples(name, data_dir, start_example, seed):
    """(position, example) pairs from `start_example` on, each epoch a stateless permutation."""
    examples = _load(name, "train", data_dir)
    size = int(examples.cardinality())
    x, y = examples.batch(size).get_single_element()

    def example_at(position):
        index = _shuffled(position, size, seed, position // size)
        return position, (tf.gather(x, index), tf.gather(y, index))

    return tf.data.Dataset.range(start_example, 2**62), example_at


def _shuffled(positions, size, seed, epoch):
    """The training example each stream position holds, for positions of one `epoch`."""
    return tf.random.experimental.index_shuffle(
        positions % size, seed=tf.stack([tf.cast(seed, tf.int64), epoch]), max_index=size - 1
    )


def train_table_fn(name, data_dir=None):
    """A `dataset_fn()` each of whose elements is the whole training split `(x, y)` of a data set
    held in memory: a parameter-server worker reads its batches from it by stream position
    (`train_examples_at`), so the coordinator decides which examples each update takes."""
    dataset_family(name)
    size = int(_load(name, "train", data_dir).cardinality())

    @tf.autograph.experimental.do_not_convert  # traced for the workers: tfds.load is plain Python
    def dataset_fn():
        return _load(name, "train", data_dir).batch(size).cache().repeat()

    return dataset_fn


def train_examples_at(name, table, positions, seed):
    """The (augmented) training examples at the stream `positions` (a vector of consecutive ones)
    of `table` (an element of `train_table_fn`): global batch t of `train_dataset_fn`'s stream is
    `train_examples_at(name, table, t B + range(B), seed)`, whichever process reads it."""
    x, y = table
    size = tf.shape(y, out_type=tf.int64)[0]
    epoch = positions // size
    first = epoch[0]  # a batch is at most one epoch long: it spans this epoch and maybe the next
    this_epoch, next_epoch = _shuffled(positions, size, seed, first), _shuffled(positions, size, seed, first + 1)
    index = tf.where(epoch == first, this_epoch, next_epoch)
    augment = preprocessing.train_fn(dataset_family(name), seed)
    return tf.vectorized_map(
        lambda e: augment(e[0], (e[1], e[2])), (positions, tf.gather(x, index), tf.gather(y, index))
    )


def train_dataset_fn(name, global_batch_size, seed, data_dir=None, start_example=0):
    """A `dataset_fn(input_context)` yielding per-replica training batches, forever.

    Each batch is the per-replica share of one optimizer update (micro-batch x accumulation
    steps): `input_context.get_per_replica_batch_size(global_batch_size)` examples. The stream
    starts after the first `start_example` examples of the run (a multiple of the global batch).
    """
    family = dataset_family(name)

    def dataset_fn(input_context):
        per_replica = input_context.get_per_replica_batch_size(global_batch_size)
        shard = (input_context.num_input_pipelines, input_context.input_pipeline_id)
        augment = preprocessing.train_fn(family, seed)
        if FACTS[family].in_memory:
            positions, example_at = _in_memory_examples(name, data_dir, start_example, seed)
            dataset = positions.shard(*shard).map(
                lambda p: augment(*example_at(p)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
            )
        else:
            examples = _load(name, "train", data_dir).shuffle(SHUFFLE_BUFFER, seed=seed).repeat()
            dataset = (
                examples.enumerate(start_example)
                .shard(*shard)
                .map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            )
        dataset = dataset.batch(per_replica, drop_remainder=True)
        return dataset.prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def eval_dataset_fn(name, global_batch_size, data_dir=None):
    """A `dataset_fn(input_context)` yielding per-replica eval batches `(x, y, weight)`, one pass.

    Every example is evaluated exactly once with weight 1, whatever the replica count: the split
    is padded with weight-0 copies of its first example up to a multiple of the global batch, so
    every replica gets a full batch at every step (static shapes, as TPUs need, and no replica
    with an empty batch), and weighted sums over the padded set are the sums over the split.
    """
    family = dataset_family(name)
    split = FACTS[family].eval_split

    def dataset_fn(input_context):
        per_replica = input_context.get_per_replica_batch_size(global_batch_size)
        examples = _load(name, split, data_dir).map(preprocessing.eval_fn(family), num_parallel_calls=tf.data.AUTOTUNE)
        weighted = examples.map(lambda x, y: (x, y, tf.constant(1.0)))
        padding = -int(examples.cardinality()) % global_batch_size
        blank = examples.take(1).map(lambda x, y: (x, y, tf.constant(0.0))).repeat(padding)
        dataset = weighted.concatenate(blank)
        if FACTS[family].in_memory:
            dataset = dataset.cache()
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        return dataset.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def first_eval_examples(name, count, data_dir=None):
    """The first `count` examples of the evaluation split, preprocessed for evaluation, as NumPy
    `(x, y)` (fewer if the split has fewer): a fixed batch for the diagnostics."""
    family = dataset_family(name)
    split = FACTS[family].eval_split
    examples = _load(name, split, data_dir).map(preprocessing.eval_fn(family)).take(count).batch(count)
    x, y = next(iter(examples))
    return x.numpy(), y.numpy()


def distribute(strategy, dataset_fn):
    """The distributed dataset of `dataset_fn`, one input pipeline per worker."""
    return strategy.distribute_datasets_from_function(dataset_fn)
