"""Any TensorFlow Datasets data set by name (`config.dataset="tfds:NAME"`), images and text alike,
read whole into memory and served as `from_arrays` serves arrays (so every guarantee holds), in
the form a model takes: uint8 images as float32 in [0, 1] (`scale_images`), text as int32 token
ids (`kbatch.data.sources.text`: a `TextVectorization` adapted on the training split).

The input and label features are the builder's `supervised_keys` unless given (`input_key` may
name several features: the input is then a dict); the evaluation split is the first of "test",
"validation" the builder has (once prepared; "test" before) unless given. A name TFDS does not
know is one line, checked against its registry offline; an unprepared data set is downloaded by
`tfds.load` as usual. With `in_memory=False` the training split is streamed through a shuffle
buffer with a fixed seed (each epoch another order, the same in every run): deterministic, so a
resume replays the stream to its position (`skip`, exact but reading the skipped examples).
"""

import difflib

import numpy as np

from kbatch.data.sources import text
from kbatch.data.sources.arrays import from_arrays

EVAL_SPLITS = ("test", "validation")


def check_name(name):
    """A one-line ValueError unless TFDS knows data set `name` (offline: its registry), naming the
    close TFDS names; also where TensorFlow Datasets is not installed."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ValueError(
            f"config.dataset='tfds:{name}': reading a TFDS data set needs tensorflow-datasets "
            "(pip install tensorflow-datasets); without it, pass your arrays as "
            "kbatch.training.train(config, data=kbatch.data.from_arrays(...))."
        ) from None
    family = name.split("/")[0].split(":")[0]
    try:
        tfds.builder_cls(family)
    except tfds.core.registered.DatasetNotFoundError:
        known = tfds.list_builders(with_community_datasets=False)
        close = difflib.get_close_matches(family, known, n=3) or known[:3]
        raise ValueError(
            f"config.dataset='tfds:{name}': TFDS has no data set {family!r}; close names: "
            f"{', '.join(close)} (tfds.list_builders() lists all {len(known)})."
        ) from None


def _builder(name, data_dir):
    """The TFDS builder of `name`, or a one-line ValueError naming the close TFDS names."""
    import tensorflow_datasets as tfds

    check_name(name)
    return tfds.builder(name, data_dir=data_dir)


def _keys(name, info, input_key, label_key):
    """(input key(s), label key): given, else the builder's supervised keys; each checked against its features."""
    if input_key is None or label_key is None:
        if not info.supervised_keys:
            raise ValueError(
                f"config.dataset='tfds:{name}': the builder names no supervised keys: give input_key "
                f"and label_key, from its features {sorted(info.features)}."
            )
        input_key, label_key = input_key or info.supervised_keys[0], label_key or info.supervised_keys[1]
    wanted = [*(input_key if isinstance(input_key, (list, tuple)) else [input_key]), label_key]
    missing = [key for key in wanted if key not in info.features]
    if missing:
        raise ValueError(
            f"config.dataset='tfds:{name}': no feature {', '.join(map(repr, missing))}: "
            f"its features are {sorted(info.features)}."
        )
    return input_key, label_key


def _eval_split(name, info, eval_split):
    known = list(info.splits) or list(EVAL_SPLITS)  # a builder not yet prepared lists no splits
    if eval_split is None:
        eval_split = next((split for split in EVAL_SPLITS if split in known), None)
    if eval_split is None:
        raise ValueError(
            f"config.dataset='tfds:{name}': no evaluation split among {known}: "
            f"give eval_split (a TFDS split, e.g. 'train[90%:]')."
        )
    return eval_split


def _split_arrays(name, split, data_dir, input_key, label_key):
    """The whole `split` as NumPy `(x, y)`; x a dict where `input_key` names several features."""
    import tensorflow_datasets as tfds

    examples = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    whole = tfds.as_numpy(examples.batch(len(examples)).get_single_element())
    x = {key: whole[key] for key in input_key} if isinstance(input_key, (list, tuple)) else whole[input_key]
    return x, whole[label_key]


def _streamed(name, split, data_dir, input_key, label_key):
    """The `split` as a `tf.data.Dataset` of `(x, y)` examples, read in TFDS's order."""
    import tensorflow_datasets as tfds

    def pick(example):
        x = {key: example[key] for key in input_key} if isinstance(input_key, (list, tuple)) else example[input_key]
        return x, example[label_key]

    return tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False).map(pick)


def _is_image(array):
    """Whether a NumPy feature (examples first) holds uint8 images: [examples, height, width(, channels)]."""
    return array.dtype == np.uint8 and array.ndim >= 3


def _prepared(train, evaluation, scale_images, text_options):
    """(train x, eval x) in the form a model takes: text as token ids (adapted on `train`), uint8
    images as float32 in [0, 1] with `scale_images`, other features as stored; a dict feature by feature.
    `text_options`: (vocabulary_size, sequence_length), or None to keep text as stored."""
    if isinstance(train, dict):
        pairs = {key: _prepared(train[key], evaluation[key], scale_images, text_options) for key in train}
        return {key: pair[0] for key, pair in pairs.items()}, {key: pair[1] for key, pair in pairs.items()}
    if text_options and text.is_text(train):
        layer = text.vectorizer(train, *text_options)
        return text.token_ids(layer, train), text.token_ids(layer, evaluation)
    if scale_images and _is_image(train):
        return train / np.float32(255), evaluation / np.float32(255)
    return train, evaluation


def _streamed_source(name, data_dir, input_key, label_key, splits, num_classes, scale_images, shuffle):
    """`from_tfds(..., in_memory=False)`: the training split through a seeded shuffle buffer
    (`shuffle`: (buffer, seed)), uint8 images scaled as `_prepared` scales them; text is refused."""
    import tensorflow as tf

    from kbatch.data.sources.tf_dataset import from_tf_dataset

    train, evaluation = (_streamed(name, split, data_dir, input_key, label_key) for split in splits)
    spec = train.element_spec[0]
    if any(feature.dtype == tf.string for feature in (spec.values() if isinstance(spec, dict) else [spec])):
        raise ValueError(
            f"config.dataset='tfds:{name}': text is tokenized in memory (the tokenizer is adapted on "
            "the whole training split): use in_memory=True."
        )
    if scale_images:

        def scaled(x, y):
            return tf.nest.map_structure(
                lambda f: tf.cast(f, tf.float32) / 255 if f.dtype == tf.uint8 and f.shape.rank >= 2 else f, x
            ), y

        train, evaluation = train.map(scaled), evaluation.map(scaled)
    return from_tf_dataset(
        train.shuffle(shuffle[0], seed=shuffle[1]),
        evaluation,
        num_classes=num_classes,
        deterministic=True,
        name=f"tfds:{name}",
    )


def from_tfds(
    name,
    data_dir=None,
    input_key=None,
    label_key=None,
    train_split="train",
    eval_split=None,
    in_memory=True,
    shuffle_buffer=16384,
    shuffle_seed=0,
    scale_images=True,
    tokenize_text=True,
    text_vocabulary_size=20000,
    text_sequence_length=256,
):
    """A `Source` of TFDS data set `name` (e.g. "mnist", "imdb_reviews"), held in memory; with
    `in_memory=False` (a set too large for memory) streamed through a seeded shuffle buffer.
    uint8 images are served as float32 in [0, 1] (`scale_images=False`: as stored); text as
    `text_sequence_length` int32 token ids of a `text_vocabulary_size` vocabulary (`kbatch.data.sources.text`;
    `tokenize_text=False`: byte strings, as stored)."""
    info = _builder(name, data_dir).info
    input_key, label_key = _keys(name, info, input_key, label_key)
    eval_split = _eval_split(name, info, eval_split)
    num_classes = getattr(info.features[label_key], "num_classes", None)
    if not in_memory:
        return _streamed_source(
            name,
            data_dir,
            input_key,
            label_key,
            (train_split, eval_split),
            num_classes,
            scale_images,
            (shuffle_buffer, shuffle_seed),
        )
    x, y = _split_arrays(name, train_split, data_dir, input_key, label_key)
    x_eval, y_eval = _split_arrays(name, eval_split, data_dir, input_key, label_key)
    text_options = (text_vocabulary_size, text_sequence_length) if tokenize_text else None
    x, x_eval = _prepared(x, x_eval, scale_images, text_options)
    return from_arrays(x, y, eval=(x_eval, y_eval), num_classes=num_classes or 0, name=f"tfds:{name}")
