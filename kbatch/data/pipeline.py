"""TFDS input pipelines for classification, distributed with `strategy.distribute_datasets_from_function`.

One dataset function runs per input pipeline (one per worker). Training data is cached (small
data sets), shuffled with the run's seed, repeated, numbered, sharded by input pipeline, mapped
(augmentation draws stateless random numbers seeded by the example's number, so every strategy
sees the same augmented example), batched per replica with `drop_remainder=True` (static shapes
for TPU) and prefetched. Because the shuffle happens before the shard, global batch t holds the
same examples under every strategy and worker count: runs at the same global batch match.
"""

import dataclasses

import tensorflow as tf
import tensorflow_datasets as tfds

from kbatch.data import preprocessing

DATASETS = ("mnist1d", "mnist", "cifar10", "cifar100", "imagenet2012")
# Data sets small enough to cache in memory and shuffle whole.
IN_MEMORY = ("mnist1d", "mnist", "cifar10", "cifar100")
SHUFFLE_BUFFER = 16384


def dataset_family(name):
    """The base name of a TFDS name: "mnist1d/large" -> "mnist1d"; ValueError if not supported."""
    family = name.split("/")[0].split(":")[0] if isinstance(name, str) else None
    if family not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}: choose one of {', '.join(DATASETS)} "
            "(with a TFDS config where it has several, e.g. 'mnist1d/large')."
        )
    return family


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer and the models need to know of a data set."""

    name: str
    num_train_examples: int
    num_eval_examples: int
    input_shape: tuple
    num_classes: int


def describe(name, data_dir=None):
    """Sizes, input shape and class count of a data set (prepares it on first use)."""
    family = dataset_family(name)
    builder = tfds.builder(name, data_dir=data_dir)
    if family == "mnist1d":
        builder.download_and_prepare()  # generated locally; a no-op once it exists
    splits = builder.info.splits
    eval_split = "validation" if family == "imagenet2012" else "test"
    return DatasetInfo(
        name=name,
        num_train_examples=splits["train"].num_examples,
        num_eval_examples=splits[eval_split].num_examples,
        input_shape=preprocessing.input_shape(family),
        num_classes=builder.info.features["label"].num_classes,
    )


def _load(name, split, data_dir):
    return tfds.load(name, split=split, data_dir=data_dir, as_supervised=True, shuffle_files=False)


def train_dataset_fn(name, global_batch_size, seed, data_dir=None):
    """A `dataset_fn(input_context)` yielding per-replica training batches, forever.

    Each batch is the per-replica share of one optimizer update (micro-batch x accumulation
    steps): `input_context.get_per_replica_batch_size(global_batch_size)` examples.
    """
    family = dataset_family(name)

    def dataset_fn(input_context):
        per_replica = input_context.get_per_replica_batch_size(global_batch_size)
        dataset = _load(name, "train", data_dir)
        if family in IN_MEMORY:
            dataset = dataset.cache()
        buffer = dataset.cardinality() if family == "mnist1d" else SHUFFLE_BUFFER
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True).repeat()
        dataset = dataset.enumerate()
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        augment = preprocessing.train_fn(family, seed)
        dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = dataset.batch(per_replica, drop_remainder=True)
        return dataset.prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def eval_dataset_fn(name, global_batch_size, data_dir=None):
    """A `dataset_fn(input_context)` yielding per-replica eval batches, one pass, nothing dropped."""
    family = dataset_family(name)
    split = "validation" if family == "imagenet2012" else "test"

    def dataset_fn(input_context):
        per_replica = input_context.get_per_replica_batch_size(global_batch_size)
        dataset = _load(name, split, data_dir)
        if family in IN_MEMORY:
            dataset = dataset.cache()
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        dataset = dataset.map(preprocessing.eval_fn(family), num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.batch(per_replica, drop_remainder=False).prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def distribute(strategy, dataset_fn):
    """The distributed dataset of `dataset_fn`, one input pipeline per worker."""
    return strategy.distribute_datasets_from_function(dataset_fn)
