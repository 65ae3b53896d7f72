"""Input for the JAX backend as NumPy arrays: MNIST-1D and pystdlib_bytes (`kbatch.data.pystdlib_bytes`:
the arrays its TFDS builder stores) without TensorFlow, and the in-memory TFDS
data sets (mnist, cifar10, cifar100) where TensorFlow Datasets and TensorFlow are installed.

MNIST-1D's arrays are the ones the TFDS builder (`kbatch.data.mnist1d`) stores: both call
`make_mnist1d`. They are kept in `$KBATCH_CACHE_DIR` (default `~/.cache/kbatch`), so only the
first run pays for generating them (mnist1d/large: about 30 s here), as TFDS keeps its prepared
copy for the TensorFlow backend. The TFDS data sets are read whole, once per process, from
`config.data_dir` (TFDS's default folder if None), and kept as TFDS stores them (uint8 images);
a batch is preprocessed when it is drawn, as `kbatch.data.preprocessing` does it: mnist scaled
to [0, 1], CIFAR standardized, and CIFAR's training examples padded to 40x40, cropped back to a
random 32x32 window and flipped left-right at random.

Training data is one endless stream of positions, as in `kbatch.data.pipeline`: position p is
example `permutation(seed, epoch)[p mod N]` with epoch = p // N, and its augmentation is drawn
from (seed, p), so the stream is a pure function of (seed, examples seen) and a resumed run
rebuilds it where it stopped. (The permutation is NumPy's, not TensorFlow's `index_shuffle`, and
the crops and flips come from SplitMix64, not TensorFlow's stateless random ops: the two backends
see the same examples per epoch in different orders, augmented alike in distribution but not bit
for bit.) `kbatch.data.sources.builtin.BuiltinSource` serves these arrays to the trainer: the
stream by position, the evaluation batches, the diagnostics' probe.
"""

import functools
import importlib.metadata
import os
import random
import zipfile

import numpy as np

from kbatch.data import pystdlib_bytes
from kbatch.data.facts import FACTS
from kbatch.data.names import CIFAR_MEAN, CIFAR_STD, DatasetInfo, check_prepared, dataset_family, preparing

SEQUENCE_LENGTH = 40
# name -> (examples drawn, the training fraction, the generator's seed): the builder's configs.
MNIST1D_CONFIGS = {"original": (5000, 0.8, 42), "large": (70000, 6 / 7, 42)}


def make_mnist1d(config):
    """{"x", "y", "x_test", "y_test"} of MNIST-1D config `config` (Greydanus 2020), generated here."""
    from mnist1d.data import get_dataset_args, make_dataset

    num_examples, train_fraction, seed = MNIST1D_CONFIGS[config]
    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_examples, train_fraction, seed
    # make_dataset seeds the global `random` and `np.random`; leave the caller's state as it was.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        return make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


SPLITS = ("x", "y", "x_test", "y_test")


def cache_path(config):
    """Where the arrays of MNIST-1D `config` are kept (the generator's version in the name)."""
    root = os.environ.get("KBATCH_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "kbatch")
    return os.path.join(root, f"mnist1d-{config}-{importlib.metadata.version('mnist1d')}.npz")


def cached_mnist1d(config):
    """`make_mnist1d(config)`'s arrays, read from `cache_path(config)`, or generated and written
    there whole (a damaged file is generated again; an unwritable folder only costs the time)."""
    path = cache_path(config)
    try:
        with np.load(path) as saved:
            return {split: saved[split] for split in SPLITS}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        pass
    data = make_mnist1d(config)
    arrays = {split: np.asarray(data[split]) for split in SPLITS}
    partial = f"{path}.partial-{os.getpid()}.npz"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(partial, **arrays)
        os.replace(partial, path)
    except OSError:
        pass
    return arrays


# The in-memory data sets read through TFDS (MNIST-1D is generated here).
TFDS_SETS = tuple(name for name, facts in FACTS.items() if facts.in_memory and not facts.generated)


def _mnist1d_arrays(name):
    """(x, y, x_test, y_test) of an MNIST-1D name, x with a channel axis as the TFDS pipeline."""
    config = name.partition("/")[2] or "original"
    if config not in MNIST1D_CONFIGS:
        raise ValueError(f"config.dataset={name!r}: MNIST-1D has the configs {', '.join(MNIST1D_CONFIGS)}.")
    data = cached_mnist1d(config)
    as_inputs = lambda x: np.asarray(x, np.float32)[..., None]  # noqa: E731
    return (
        as_inputs(data["x"]),
        np.asarray(data["y"], np.int32),
        as_inputs(data["x_test"]),
        np.asarray(data["y_test"], np.int32),
    )


def _pystdlib_arrays(name):
    """(x, y, x_test, y_test) of a pystdlib_bytes name: int32 token windows, as the TFDS builder stores them."""
    config = name.partition("/")[2] or next(iter(pystdlib_bytes.CONFIGS))
    if config not in pystdlib_bytes.CONFIGS:
        raise ValueError(
            f"config.dataset={name!r}: pystdlib_bytes has the configs {', '.join(pystdlib_bytes.CONFIGS)}."
        )
    data = pystdlib_bytes.make_pystdlib_bytes(pystdlib_bytes.CONFIGS[config])
    return data["x"], data["y"], data["x_test"], data["y_test"]


GENERATED = {"mnist1d": _mnist1d_arrays, "pystdlib_bytes": _pystdlib_arrays}


def _import_tfds(name):
    """The `tensorflow_datasets` module, or a one-line ValueError saying how to get it."""
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError:
        raise ValueError(
            f"config.dataset={name!r} is read through TensorFlow Datasets, which is not installed: "
            "pip install tensorflow-datasets tensorflow (without them the JAX backend reads "
            f"{', '.join('mnist1d/' + c for c in MNIST1D_CONFIGS)})."
        ) from None
    try:  # TensorFlow only reads files here: keep it off the GPUs JAX uses.
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow's devices are already set up: leave them.
        pass
    return tfds


def _tfds_split(tfds, name, split, data_dir):
    """One split of a TFDS data set, whole, as NumPy (x as stored, y as int32)."""
    examples = tfds.load(name, split=split, data_dir=data_dir, as_supervised=True, shuffle_files=False)
    x, y = tfds.as_numpy(examples.batch(len(examples)).get_single_element())
    return x, y.astype(np.int32)


@functools.lru_cache(maxsize=2)
def _arrays(name, data_dir=None):
    """(x, y, x_test, y_test) of data set `name` as stored (MNIST-1D: as the model reads it)."""
    family = dataset_family(name)
    if family in GENERATED:
        return GENERATED[family](name)
    if family not in TFDS_SETS:
        raise ValueError(
            f"config.dataset={name!r}: the JAX backend reads {', '.join(GENERATED)}, "
            f"{', '.join(TFDS_SETS)} "
            "(data sets held in memory); use the TensorFlow backend for the others."
        )
    tfds = _import_tfds(name)
    check_prepared(name, data_dir)
    with preparing(name, data_dir):
        eval_split = FACTS[family].eval_split
        return (*_tfds_split(tfds, name, "train", data_dir), *_tfds_split(tfds, name, eval_split, data_dir))


def _standardize_cifar(images):
    return (images.astype(np.float32) / np.float32(255) - np.float32(CIFAR_MEAN)) / np.float32(CIFAR_STD)


def eval_inputs(family, x):
    """Stored examples `x` of `family` as the model reads them: `preprocessing.eval_fn` in NumPy."""
    kind = FACTS[family].preprocessing
    if kind == "unit":
        return x.astype(np.float32) / np.float32(255)
    if kind == "cifar":
        return _standardize_cifar(x)
    return x


def random_bits(seed, positions):
    """64 random bits for each stream position: output `position` of a SplitMix64 generator
    (Steele et al. 2014) started at `seed`, a pure function of (seed, position)."""
    state = np.uint64(seed % 2**64) + (positions.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    state = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    state = (state ^ (state >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state ^ (state >> np.uint64(31))


def _below(bits, n, shift):
    """Integers in [0, n) from the bits of `bits` above `shift`."""
    return ((bits >> np.uint64(shift)) % np.uint64(n)).astype(np.int64)


def augment_cifar(images, positions, seed):
    """CIFAR's training augmentation (He et al. 2016) of uint8 `images` at stream `positions`:
    each zero-padded by 4 pixels to 40x40, cropped to the 32x32 window at a random offset (0 to 8
    each way) and flipped left-right with probability 1/2, drawn from `random_bits(seed, position)`."""
    bits = random_bits(seed, positions)
    top, left, flip = _below(bits, 9, shift=0), _below(bits, 9, shift=8), _below(bits, 2, shift=16)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    crops = np.stack([image[row : row + 32, col : col + 32] for image, row, col in zip(padded, top, left)])
    crops[flip == 1] = crops[flip == 1, :, ::-1]
    return crops


def train_inputs(family, x, positions, seed):
    """Stored examples `x` at stream `positions` as the model trains on them: `preprocessing.train_fn`
    in NumPy (CIFAR augmented, the others as for evaluation)."""
    if FACTS[family].preprocessing == "cifar":
        return _standardize_cifar(augment_cifar(x, positions, seed))
    return eval_inputs(family, x)


def describe(name, data_dir=None):
    x, _, x_test, _ = _arrays(name, data_dir)
    return DatasetInfo(
        name=name,
        num_train_examples=len(x),
        num_eval_examples=len(x_test),
        input_shape=x.shape[1:],
        num_classes=FACTS[dataset_family(name)].num_classes,
    )


def training_split(name, data_dir=None):
    """The whole training split `(x, y)`, preprocessed for evaluation (no augmentation)."""
    x, y, _, _ = _arrays(name, data_dir)
    return eval_inputs(dataset_family(name), x), y
