"""Data sources: the contract (`Source`) and the sources a user builds. TensorFlow is imported only
by `from_tf_dataset`, `from_tfds` and the `tf_*_dataset_fn` forms, when first used."""

from kbatch.data import names
from kbatch.data.sources.arrays import ArraySource, from_arrays
from kbatch.data.sources.base import Guarantees, PositionalSource, Source, weighted_batches
from kbatch.data.sources.iterable import IterableSource, from_iterable
from kbatch.data.sources.views import two_views


def from_tf_dataset(*args, **kwargs):
    """`kbatch.data.sources.tf_dataset.from_tf_dataset` (imports TensorFlow)."""
    from kbatch.data.sources import tf_dataset

    return tf_dataset.from_tf_dataset(*args, **kwargs)


def from_tfds(*args, **kwargs):
    """`kbatch.data.sources.tfds_source.from_tfds` (imports TensorFlow Datasets)."""
    from kbatch.data.sources import tfds_source

    return tfds_source.from_tfds(*args, **kwargs)


def get(dataset, data_dir=None, **text_options):
    """The source `config.dataset` names: "tfds:NAME" for any TFDS data set (`text_options`:
    `text_vocabulary_size`, `text_sequence_length` of `from_tfds`), "python:MODULE:FUNCTION" for the
    source FUNCTION() returns, or a built-in one ("data:NAME" is a user's source, given to the run itself)."""
    if dataset.startswith(names.USER_PREFIX):
        raise ValueError(
            f"config.dataset={dataset!r} names a source of your own: pass it to the run, "
            "kbatch.training.train(config, data=source); on the command line name it "
            "'python:MODULE:FUNCTION', a built-in or a 'tfds:NAME' data set."
        )
    if dataset.startswith(names.PYTHON_PREFIX):
        from kbatch.data.sources import python_source

        return python_source.source(dataset)
    if dataset.startswith(names.TFDS_PREFIX):
        return from_tfds(dataset[len(names.TFDS_PREFIX) :], data_dir=data_dir, **text_options)
    from kbatch.data.sources.builtin import builtin_source

    return builtin_source(dataset, data_dir)


__all__ = [
    "ArraySource",
    "Guarantees",
    "IterableSource",
    "PositionalSource",
    "Source",
    "from_arrays",
    "from_iterable",
    "from_tf_dataset",
    "from_tfds",
    "get",
    "two_views",
    "weighted_batches",
]
