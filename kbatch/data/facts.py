"""One table of the facts of each built-in data set, read by the tf.data pipeline, the NumPy source
and the config checks alike (no TensorFlow needed): to add a data set, add its row here."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
    """What kbatch needs to know of a built-in data set, by TFDS family name.

    input_shape: one example as the model reads it (after preprocessing); None: as stored, which
      the TFDS config decides (pystdlib_bytes/seqN: (N,) tokens);
    num_classes: the classes, or the vocabulary of a data set of token sequences;
    preprocessing: the name of its scaling and augmentation in `kbatch.data.preprocessing`
      ("channel": add a channel axis, "unit": scale uint8 to [0, 1], "cifar": standardize, pad-4
      crop and flip, "imagenet": resize, crop and flip, "none": as stored);
    in_memory: small enough to hold whole (exact, stateless shuffling by epoch; exact resume);
    eval_split: the TFDS split evaluated on;
    download_host: where TFDS downloads it from (None: generated here, or downloaded by hand);
    generated: made on this machine by kbatch's own builder (nothing to download or prepare);
    labels: "class", one class per example, or "sequence", one token per input position (the
      next-token task's);
    pad_id: the label of padding in a data set of token sequences, masked by the next-token task
      (None: labels are classes, or no padding).
    """

    input_shape: tuple
    num_classes: int
    preprocessing: str
    in_memory: bool
    eval_split: str = "test"
    download_host: str | None = None
    generated: bool = False
    labels: str = "class"
    pad_id: int | None = None


FACTS = {
    "mnist1d": DatasetFacts((40, 1), 10, "channel", in_memory=True, generated=True),
    "mnist": DatasetFacts((28, 28, 1), 10, "unit", in_memory=True, download_host="storage.googleapis.com"),
    "cifar10": DatasetFacts((32, 32, 3), 10, "cifar", in_memory=True, download_host="www.cs.toronto.edu"),
    "cifar100": DatasetFacts((32, 32, 3), 100, "cifar", in_memory=True, download_host="www.cs.toronto.edu"),
    "pystdlib_bytes": DatasetFacts(None, 257, "none", in_memory=True, generated=True, labels="sequence", pad_id=256),
    "imagenet2012": DatasetFacts((224, 224, 3), 1000, "imagenet", in_memory=False, eval_split="validation"),
}
