"""The byte-level language-model data set `pystdlib_bytes` as a TensorFlow Datasets builder,
generated here from the standard library's text (`kbatch.data.pystdlib_bytes`: the corpus, the
pin, the split and the packing). Importing `kbatch.data` registers it:
`tfds.load("pystdlib_bytes/seq128", as_supervised=True)` gives (inputs, targets) int32 windows.

Configs: seq128 and seq256, the sequence length (inputs and targets each; the windows overlap by
one byte). The corpus's SHA-256 is in the data set's metadata (`info.metadata["corpus_sha256"]`).
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from kbatch.data.pystdlib_bytes import CONFIGS, CORPUS_SHA256, MODULES, PAD, VOCAB_SIZE, make_pystdlib_bytes


@dataclasses.dataclass
class PystdlibBytesConfig(tfds.core.BuilderConfig):
    """How many bytes each example's inputs (and targets) hold."""

    sequence_length: int = 128


class PystdlibBytes(tfds.core.GeneratorBasedBuilder):
    """Bytes of 71 CPython 3.11 standard-library modules, packed into next-byte windows."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": f"CPython 3.11's {len(MODULES)} modules, sha256 {CORPUS_SHA256}."}
    BUILDER_CONFIGS = [
        PystdlibBytesConfig(name=name, description=f"{length}-byte windows", sequence_length=length)
        for name, length in CONFIGS.items()
    ]

    def _info(self):
        length = self.builder_config.sequence_length
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "inputs": tfds.features.Tensor(shape=(length,), dtype=np.int32),
                    "targets": tfds.features.Tensor(shape=(length,), dtype=np.int32),
                }
            ),
            supervised_keys=("inputs", "targets"),
            metadata=tfds.core.MetadataDict(corpus_sha256=CORPUS_SHA256, vocab_size=VOCAB_SIZE, pad_id=PAD),
            homepage="https://github.com/python/cpython/tree/3.11/Lib",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # generated locally: nothing to download
        data = make_pystdlib_bytes(self.builder_config.sequence_length)
        return {
            "train": self._generate_examples(data["x"], data["y"]),
            "test": self._generate_examples(data["x_test"], data["y_test"]),
        }

    def _generate_examples(self, inputs, targets):
        for index, (window, shifted) in enumerate(zip(inputs, targets)):
            yield index, {"inputs": window, "targets": shifted}
