"""Input pipelines over TensorFlow Datasets, and the offline MNIST-1D builder (registered on import)."""

from kbatch.data.mnist1d import Mnist1d
from kbatch.data.pipeline import (
    DATASETS,
    DatasetInfo,
    dataset_family,
    describe,
    distribute,
    eval_dataset_fn,
    train_dataset_fn,
)
