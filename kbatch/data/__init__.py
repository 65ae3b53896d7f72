"""Input pipelines over TensorFlow Datasets and the offline MNIST-1D builder (registered on import,
where TensorFlow is installed and Keras does not run on JAX); `numpy_source` serves the JAX backend
(MNIST-1D without TensorFlow)."""

from kbatch.data.names import DATASETS, DatasetInfo, dataset_family
from kbatch import frameworks

if frameworks.uses_tensorflow():
    from kbatch.data.mnist1d import Mnist1d
    from kbatch.data.pipeline import (describe, distribute, eval_dataset_fn, first_eval_examples, train_dataset_fn,
                                      train_examples_at, train_table_fn)
