"""Input pipelines over TensorFlow Datasets, and the offline MNIST-1D builder (registered on import)."""

from kbatch.data.mnist1d import Mnist1d
from kbatch.data.names import DATASETS, dataset_family
from kbatch.data.pipeline import (
    DatasetInfo,
    describe,
    distribute,
    eval_dataset_fn,
    train_dataset_fn,
)
