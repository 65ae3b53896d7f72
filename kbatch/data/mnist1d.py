"""MNIST-1D (Greydanus 2020) as a TensorFlow Datasets builder, generated locally.

The `mnist1d` package's `make_dataset` draws the examples from ten 1-D templates with a fixed
seed (`kbatch.data.numpy_source.make_mnist1d`, which the NumPy source uses too), so the data set
is made on this machine and nothing is downloaded. Importing `kbatch.data`
registers the builder: `tfds.load("mnist1d/large")`.

Configs:
  original  5,000 examples, 4,000 train / 1,000 test: the published benchmark.
  large     70,000 examples, 60,000 train / 10,000 test: for batch-size studies, where a batch
            of 4,096 must still be a small part of an epoch.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from kbatch.data.numpy_source import MNIST1D_CONFIGS, SEQUENCE_LENGTH, make_mnist1d


@dataclasses.dataclass
class Mnist1dConfig(tfds.core.BuilderConfig):
    """How many examples are drawn, which fraction is for training, and the generator's seed."""

    num_examples: int = 5000
    train_fraction: float = 0.8
    seed: int = 42


class Mnist1d(tfds.core.GeneratorBasedBuilder):
    """MNIST-1D: 40-sample 1-D signals of the ten digits' templates, shifted, scaled, sheared, noisy."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Generated with mnist1d.data.make_dataset (Greydanus 2020)."}
    BUILDER_CONFIGS = [
        Mnist1dConfig(
            name=name,
            description=description,
            num_examples=MNIST1D_CONFIGS[name][0],
            train_fraction=MNIST1D_CONFIGS[name][1],
            seed=MNIST1D_CONFIGS[name][2],
        )
        for name, description in (
            ("original", "The published benchmark: 4,000 train / 1,000 test."),
            ("large", "70,000 examples (60,000 train / 10,000 test) for batch-size studies."),
        )
    ]

    def _info(self):
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "signal": tfds.features.Tensor(shape=(SEQUENCE_LENGTH,), dtype=np.float32),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("signal", "label"),
            homepage="https://github.com/greydanus/mnist1d",
            citation="Greydanus, S. Scaling down deep learning. arXiv:2011.14439, 2020.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # generated locally: nothing to download
        data = make_mnist1d(self.builder_config.name)
        return {
            "train": self._generate_examples(data["x"], data["y"]),
            "test": self._generate_examples(data["x_test"], data["y_test"]),
        }

    def _generate_examples(self, signals, labels):
        for index, (signal, label) in enumerate(zip(signals, labels)):
            yield index, {"signal": signal.astype(np.float32), "label": int(label)}
