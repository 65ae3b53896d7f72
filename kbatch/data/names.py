"""The data sets kbatch serves, by TFDS name, and what a run needs to know of one (no TensorFlow
needed)."""

import dataclasses

from kbatch import checks

DATASETS = ("mnist1d", "mnist", "cifar10", "cifar100", "imagenet2012")
# Data sets small enough to hold in memory: exact, stateless shuffling.
IN_MEMORY = ("mnist1d", "mnist", "cifar10", "cifar100")
# CIFAR's per-channel mean and standard deviation of pixels in [0, 1], shared by the TensorFlow
# preprocessing and the NumPy source.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer and the models need to know of a data set."""

    name: str
    num_train_examples: int
    num_eval_examples: int
    input_shape: tuple
    num_classes: int


def dataset_family(name):
    """The base name of a TFDS name: "mnist1d/large" -> "mnist1d"; ValueError if not supported."""
    family = name.split("/")[0].split(":")[0] if isinstance(name, str) else None
    if family not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}: choose one of {', '.join(DATASETS)} "
            "(with a TFDS config where it has several, e.g. 'mnist1d/large')."
        )
    return family


def check_dataset(name, value):
    """The config check of `dataset`: `value` if `dataset_family` knows it."""
    family = value.split("/")[0].split(":")[0] if isinstance(value, str) else None
    if family not in DATASETS:
        checks.fail(name, value, f"a TFDS name of {', '.join(DATASETS)} (with its config where it has "
                                 "several, e.g. 'mnist1d/large')")
    return value
