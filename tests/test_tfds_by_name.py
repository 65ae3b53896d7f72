"""Any TFDS data set by name, on TFDS mock data (random examples of its real features, nothing
downloaded): `imdb_reviews`'s text served as the token ids of its words (a vocabulary of the most
frequent training words, checked against Python's own count), the same ids on JAX; a streamed set
scaled as one in memory; and `kbatch-train` training an image set (`tfds:fashion_mnist`) and a
text set (`configs/imdb_text.py`) by name on TensorFlow and on JAX."""

import collections
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import tensorflow_datasets as tfds

from kbatch.data import sources
from kbatch.data.names import FeatureSpec

HERE = pathlib.Path(__file__).resolve().parent
VOCABULARY, LENGTH, EXAMPLES = 12, 8, 30


def _words(split):
    whole = tfds.as_numpy(tfds.load("imdb_reviews", split=split).batch(10_000).get_single_element())
    return [text.decode().split() for text in whole["text"]]


def _tokens(source, num_examples):
    """Every training example's ids in TFDS's order, and the evaluation ids."""
    order = np.argsort(source.indices(0, num_examples, seed=0))
    train = source.examples_at(0, num_examples, seed=0)[0][order]
    return train, np.concatenate([batch[0] for batch in source.eval_batches(num_examples)])


def _text_source():
    return sources.from_tfds("imdb_reviews", text_vocabulary_size=VOCABULARY, text_sequence_length=LENGTH)


def test_text_is_the_ids_of_its_words_in_a_vocabulary_of_the_most_frequent_training_words():
    with tfds.testing.mock_data(num_examples=EXAMPLES):
        source = _text_source()
        train_words, eval_words = _words("train"), _words("test")
    train, evaluation = _tokens(source, EXAMPLES)
    assert source.describe().input_spec == FeatureSpec((LENGTH,), "int32")
    counts = collections.Counter(word for words in train_words for word in words)
    ids = {}
    for words, row in zip(train_words, train):
        kept = words[:LENGTH]
        assert (row[len(kept) :] == 0).all() and (row[: len(kept)] > 0).all()  # 0: padding only
        for word, token in zip(kept, row):
            assert ids.setdefault(word, token) == token  # one id a word
    known = {word: token for word, token in ids.items() if token > 1}
    assert sorted(known.values()) == list(range(2, 2 + len(known)))  # 1: out of vocabulary
    assert len(known) == min(VOCABULARY - 2, len(counts))
    by_id = [counts[word] for word, _ in sorted(known.items(), key=lambda item: item[1])]
    assert by_id == sorted(by_id, reverse=True)  # the most frequent first
    assert min(by_id) >= max([counts[word] for word in counts if word not in known] or [0])
    for words, row in zip(eval_words, evaluation):
        np.testing.assert_array_equal(row[: len(words[:LENGTH])], [known.get(word, 1) for word in words[:LENGTH]])


def test_the_tokenizer_keeps_the_most_frequent_words_lower_cased_without_punctuation_cut_and_padded():
    from kbatch.data.sources import text

    layer = text.vectorizer(np.array([b"b b b a a c", b"b a d"]), vocabulary_size=4, sequence_length=5)
    ids = text.token_ids(layer, np.array([b"b b b a a c", b"b a d", b"A, B! e"]))
    # b (4 times) is 2, a (3 times) 3; c, d and e are out of the vocabulary (1); 0 pads.
    np.testing.assert_array_equal(ids, [[2, 2, 2, 3, 3], [2, 3, 1, 0, 0], [3, 2, 1, 0, 0]])
    assert ids.dtype == np.int32


def test_the_token_ids_are_the_same_on_jax():
    script = (
        "import json, tensorflow_datasets as tfds, test_tfds_by_name as t\n"
        "with tfds.testing.mock_data(num_examples=t.EXAMPLES):\n"
        "    train, evaluation = t._tokens(t._text_source(), t.EXAMPLES)\n"
        "print(json.dumps([train.tolist(), evaluation.tolist()]))"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    with tfds.testing.mock_data(num_examples=EXAMPLES):
        want = _tokens(_text_source(), EXAMPLES)
    for got, expected in zip(json.loads(run.stdout.strip().splitlines()[-1]), want):
        np.testing.assert_array_equal(got, expected)


def test_a_streamed_image_set_is_scaled_as_one_held_in_memory():
    with tfds.testing.mock_data(num_examples=20):
        streamed = sources.from_tfds("mnist", in_memory=False, shuffle_buffer=8).eval_batches(8)
        held = sources.from_tfds("mnist").eval_batches(8)
    for one, two in zip(streamed, held):
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b)
    assert np.concatenate([batch[0] for batch in held]).max() <= 1.0


def _kbatch_train(model_dir, backend, flags, num_examples=64):
    """`kbatch-train FLAGS` on TFDS mock data, on `backend` (a process of its own)."""
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(HERE.parent), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [
            sys.executable,
            str(HERE / "mock_train.py"),
            str(num_examples),
            *flags,
            f"--config.backend={backend}",
            f"--config.model_dir={model_dir}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _trained(process, model_dir, dataset, steps):
    """The run's model, once `process` ended well after `steps` updates on `dataset`, each evaluation finite."""
    _, err = process.communicate(timeout=900)
    assert process.returncode == 0, err[-3000:]
    result = json.loads((model_dir / "result.json").read_text())
    assert json.loads((model_dir / "config.json").read_text())["dataset"] == dataset
    assert result["steps"] == steps and all(np.isfinite(e["eval_loss"]) for e in result["history"])
    return keras.models.load_model(model_dir / "model.keras")


def test_an_image_set_trains_by_name_on_tensorflow_and_jax(tmp_path):
    flags = [
        "--config.dataset=tfds:fashion_mnist",
        "--config.model=resnet20",
        "--config.batch_size=32",
        "--config.base_batch_size=32",
        "--config.num_epochs=1",
        "--config.warmup_epochs=0",
        "--config.strategy=one_device",
        "--config.steps_per_loop=2",
    ]
    runs = {backend: _kbatch_train(tmp_path / backend, backend, flags) for backend in ("tensorflow", "jax")}
    for backend, process in runs.items():
        model = _trained(process, tmp_path / backend, "tfds:fashion_mnist", steps=2)
        assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)


def test_a_text_set_trains_by_name_with_the_imdb_config_on_tensorflow_and_jax(tmp_path):
    flags = [
        "--config=configs/imdb_text.py",
        f"--config.text_vocabulary_size={VOCABULARY * 4}",
        f"--config.text_sequence_length={LENGTH * 2}",
        "--config.batch_size=32",
        "--config.base_batch_size=32",
        "--config.num_epochs=2",
        "--config.strategy=one_device",
        "--config.steps_per_loop=2",
    ]
    runs = {backend: _kbatch_train(tmp_path / backend, backend, flags) for backend in ("tensorflow", "jax")}
    for backend, process in runs.items():
        model = _trained(process, tmp_path / backend, "tfds:imdb_reviews", steps=4)
        assert model.input_shape == (None, LENGTH * 2) and model.output_shape == (None, 2)
        assert model.get_layer("token_embedding").input_dim == VOCABULARY * 4
