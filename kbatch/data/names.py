"""The data sets kbatch serves, by TFDS name, and what a run needs to know of one (no TensorFlow
needed)."""

import contextlib
import dataclasses
import logging
import socket

from kbatch import checks
from kbatch.data.facts import FACTS

DATASETS = tuple(FACTS)
# Where TFDS downloads each data set from (imagenet2012: by hand, from image-net.org).
DOWNLOAD_HOSTS = {name: facts.download_host for name, facts in FACTS.items() if facts.download_host}
# Data sets small enough to hold in memory: exact, stateless shuffling.
IN_MEMORY = tuple(name for name, facts in FACTS.items() if facts.in_memory)
# CIFAR's per-channel mean and standard deviation of pixels in [0, 1], shared by the TensorFlow
# preprocessing and the NumPy source.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The shape of one example of a feature (no batch axis) and its NumPy dtype name."""

    shape: tuple
    dtype: str


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer and the models need to know of a data set. A data source also gives
    `input_spec` (a `FeatureSpec`, or a dict of them for named features; `input_shape` is then the
    dict of their shapes) and `label_spec`; `num_classes` is None where the labels are not classes."""

    name: str
    num_train_examples: int
    num_eval_examples: int
    input_shape: tuple
    num_classes: int
    input_spec: object = None
    label_spec: FeatureSpec = None


def dataset_family(name):
    """The base name of a TFDS name: "mnist1d/large" -> "mnist1d"; ValueError if not supported."""
    family = name.split("/")[0].split(":")[0] if isinstance(name, str) else None
    if family not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}: choose one of {', '.join(DATASETS)} "
            "(with a TFDS config where it has several, e.g. 'mnist1d/large')."
        )
    return family


TFDS_PREFIX, USER_PREFIX, PYTHON_PREFIX = "tfds:", "data:", "python:"
# Built-in data sets of token sequences (labels: the next token at each position).
SEQUENCES = tuple(name for name, facts in FACTS.items() if facts.labels == "sequence")


def is_builtin(name):
    """Whether `config.dataset` names a built-in data set (not "tfds:NAME", "python:MODULE:FUNCTION"
    nor a user's "data:NAME")."""
    return not name.startswith((TFDS_PREFIX, USER_PREFIX, PYTHON_PREFIX))


def pad_id(dataset):
    """The padding label of `config.dataset` if it is a built-in data set that has one, else None."""
    return FACTS[dataset_family(dataset)].pad_id if is_builtin(dataset) else None


def check_dataset(name, value):
    """The config check of `dataset`: a built-in data set `dataset_family` knows (and, for the ones
    generated here, MNIST-1D and pystdlib_bytes, its config); "tfds:NAME", a data set TFDS knows
    (checked offline); "python:MODULE:FUNCTION", a function MODULE has (imported, not called); or
    "data:NAME", the name a run gives a user's source (`kbatch.training.train(config, data=source)`)."""
    if isinstance(value, str) and value.startswith(PYTHON_PREFIX):
        from kbatch.data.sources import python_source

        python_source.function(value)
        return value
    if isinstance(value, str) and value.startswith(TFDS_PREFIX):
        from kbatch.data.sources import tfds_source

        tfds_source.check_name(value[len(TFDS_PREFIX) :])
        return value
    if isinstance(value, str) and value.startswith(USER_PREFIX) and len(value) > len(USER_PREFIX):
        return value
    family = value.split("/")[0].split(":")[0] if isinstance(value, str) else None
    if family not in DATASETS:
        checks.fail(
            name,
            value,
            f"a TFDS name of {', '.join(DATASETS)} (with its config where it has "
            "several, e.g. 'mnist1d/large'), 'tfds:NAME' for any TFDS data set, or "
            "'python:MODULE:FUNCTION' for the source FUNCTION() returns",
        )
    configs = generated_configs(family)
    if configs and "/" in value and value.split("/")[1].split(":")[0] not in configs:
        what = "an MNIST-1D config" if family == "mnist1d" else f"a {family} config"
        checks.fail(name, value, f"{what}: " + ", ".join(f"'{family}/{c}'" for c in configs))
    return value


def generated_configs(family):
    """The TFDS configs of a data set kbatch generates (the first is the default), else None."""
    if family == "mnist1d":
        from kbatch.data.numpy_source import MNIST1D_CONFIGS

        return tuple(MNIST1D_CONFIGS)
    if family == "pystdlib_bytes":
        from kbatch.data.pystdlib_bytes import CONFIGS

        return tuple(CONFIGS)
    return None


def check_prepared(name, data_dir=None):
    """A one-line ValueError when data set `name`, which TFDS downloads (all but MNIST-1D, which
    is generated here), is not prepared in `data_dir` and cannot be downloaded now (its host does
    not answer, or it is downloaded by hand): said at once, where TFDS would retry the network for
    minutes and leave an `incomplete.*` folder. With network, TFDS downloads it as before. Under
    `tfds.testing.mock_data` nothing is read from disk, so nothing is checked."""
    import tensorflow_datasets as tfds

    family = dataset_family(name)
    if FACTS[family].generated or tfds.core.DatasetBuilder.download_and_prepare.__module__.startswith(
        "tensorflow_datasets.testing"
    ):
        return
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # TFDS warns of a half-made folder ("no dataset_info.json"): said below
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = builder.is_prepared()
    except Exception as error:  # TFDS raises several kinds here, each with a page of text
        configs = [c.name for c in tfds.builder_cls(family).BUILDER_CONFIGS] or ["none"]
        raise ValueError(
            f"config.dataset={name!r}: TFDS knows no such config or version of {family} "
            f"({type(error).__name__}); its configs: {', '.join(configs)}."
        ) from None
    finally:
        absl.setLevel(level)
    host = DOWNLOAD_HOSTS.get(family)
    if not prepared and not (host and reachable(host)):
        why = f"{host} cannot be reached" if host else "by hand (TFDS's manual download instructions)"
        raise ValueError(
            f"config.dataset={name!r} needs a download, {why}, and no prepared copy is in {builder.data_dir} "
            f"(config.data_dir={data_dir!r}): prepare it once where there is network, `tfds build {name}"
            f"{' --data_dir=' + data_dir if data_dir else ''}`, or set config.data_dir to a folder that holds it."
        )


@contextlib.contextmanager
def preparing(name, data_dir):
    """Turn a data folder that cannot be written while data set `name` is prepared there (a
    read-only mount, a full disk) into one ValueError line naming `config.data_dir`."""
    try:
        yield
    except OSError as error:
        where = data_dir or "TFDS's default folder (~/tensorflow_datasets)"
        raise ValueError(
            f"config.data_dir={data_dir!r}: preparing {name} in {where} failed "
            f"({error.strerror or error}); choose a writable data_dir, or one that holds it "
            "prepared."
        ) from None


def reachable(host, timeout=5.0):
    """Whether a TCP connection to `host`:443 opens within `timeout` seconds (name lookup included)."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
