"""Input pipelines over TensorFlow Datasets and the offline MNIST-1D and `pystdlib_bytes` builders
(registered on import, where TensorFlow is installed and Keras does not run on JAX; under JAX on
first use); `numpy_source` serves the JAX backend (MNIST-1D without TensorFlow), and
`pystdlib_bytes` makes the text data set's arrays without TensorFlow."""

from kbatch import frameworks
from kbatch.data.names import DATASETS, DatasetInfo, FeatureSpec, dataset_family
from kbatch.data.sources import Source, from_arrays, from_iterable, from_tf_dataset, from_tfds, two_views

if frameworks.uses_tensorflow():
    from kbatch.data.mnist1d import Mnist1d
    from kbatch.data.pipeline import (
        describe,
        distribute,
        eval_dataset_fn,
        first_eval_examples,
        train_dataset_fn,
        train_examples_at,
        train_table_fn,
    )
    from kbatch.data.pystdlib_bytes_builder import PystdlibBytes


def __getattr__(name):
    """Under Keras on JAX, the TFDS pipeline and the MNIST-1D builder (and TensorFlow, quietly) are
    imported when first asked for (`kbatch.data.describe`, ...), where TensorFlow is installed."""
    if frameworks.HAS_TENSORFLOW and name in (
        "Mnist1d",
        "PystdlibBytes",
        "describe",
        "distribute",
        "eval_dataset_fn",
        "first_eval_examples",
        "train_dataset_fn",
        "train_examples_at",
        "train_table_fn",
    ):
        frameworks.import_tensorflow()
        from kbatch.data import mnist1d, pipeline, pystdlib_bytes_builder

        builders = {"Mnist1d": mnist1d.Mnist1d, "PystdlibBytes": pystdlib_bytes_builder.PystdlibBytes}
        return builders[name] if name in builders else getattr(pipeline, name)
    raise AttributeError(f"module 'kbatch.data' has no attribute {name!r}")
