"""The language-model config (configs/lm_bytes.py) through kbatch's runner, shrunk to a few
updates, on TensorFlow and on JAX: the loss falls from the uniform guess's ln(257); each backend's
evaluation (tf.data, NumPy) is the one the *other* backend computes of the saved model in NumPy
(the built-in's two forms promise the same examples, not the same training order, so the runs
themselves are not compared); perplexity and token accuracy reach TensorBoard and result.json."""

import glob
import json
import math
import os
import pathlib
import subprocess
import sys

import lm_run
import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent


def _scalars(model_dir, group, name):
    """The values of TensorBoard scalar `name` in `model_dir/group`, by step, read with TensorBoard's
    loader (which reads both backends' writers: `tf.summary`'s tensors and the JAX backend's simple values)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    points = {}
    for path in glob.glob(os.path.join(model_dir, group, "events.out.tfevents.*")):
        for event in EventFileLoader(path).Load():
            points.update({event.step: float(make_ndarray(v.tensor)) for v in event.summary.value if v.tag == name})
    return [points[step] for step in sorted(points)]


def _script(*args):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}"}
    process = subprocess.run(
        [sys.executable, str(HERE / "lm_run.py"), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    tensorflow = lm_run.summarized(lm_run.train(str(folder / "tensorflow"), "tensorflow"))
    jax = _script("train", str(folder / "jax"), "jax")
    return folder, {"tensorflow": tensorflow, "jax": jax}


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_the_loss_falls_from_the_uniform_guess(runs, backend):
    result = runs[1][backend]
    losses = result["eval_losses"]
    assert len(losses) == lm_run.EVALUATIONS
    assert losses[-1] < losses[0] < lm_run.UNIFORM_LOSS
    assert result["final_eval_loss"] < lm_run.UNIFORM_LOSS - 1.0, result["final_eval_loss"]


@pytest.mark.parametrize("backend, other", [("tensorflow", "jax"), ("jax", "tensorflow")])
def test_each_backends_evaluation_is_the_numpy_one_of_its_model_on_the_other_backend(runs, backend, other):
    folder, results = runs
    model_dir = str(folder / backend)
    reference = _script("evaluate", model_dir) if other == "jax" else lm_run.numpy_evaluation(model_dir)
    for name in ("loss", "perplexity"):
        np.testing.assert_allclose(results[backend][f"final_eval_{name}"], reference[name], rtol=2e-5, err_msg=name)
    # a count of argmax hits: float rounding on the other backend may flip a near-tie token (one of
    # ~87,000 flipped in one CI run: 1.2e-5), so two tokens' worth is allowed, no more
    np.testing.assert_allclose(results[backend]["final_eval_token_accuracy"], reference["token_accuracy"], atol=2.5e-5)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_tokens_perplexity_and_token_accuracy_are_reported(runs, backend):
    folder, results = runs
    result = results[backend]
    batch = lm_run.SHRUNK["batch_size"]
    assert result["tokens_per_batch"] == batch * lm_run.SEQUENCE_LENGTH
    assert result["tokens_seen"] == result["steps"] * batch * lm_run.SEQUENCE_LENGTH
    assert result["final_eval_perplexity"] == pytest.approx(
        math.exp(result["final_eval_token_loss"] / result["final_eval_tokens"]), rel=1e-9
    )
    assert 1.0 < result["final_train_perplexity"] < lm_run.VOCAB_SIZE
    model_dir = str(folder / backend)
    assert _scalars(model_dir, "eval", "perplexity")[-1] == pytest.approx(result["final_eval_perplexity"], rel=1e-5)
    assert _scalars(model_dir, "eval", "token_accuracy")[-1] == pytest.approx(
        result["final_eval_token_accuracy"], rel=1e-5
    )
    train_perplexities = _scalars(model_dir, "train", "perplexity")
    tokens = np.array(_scalars(model_dir, "train", "tokens"))
    assert len(train_perplexities) == result["steps"]
    token_losses = np.array(_scalars(model_dir, "train", "token_loss"))
    np.testing.assert_allclose(train_perplexities, np.exp(token_losses / tokens), rtol=1e-5)
    batch_tokens = np.array(_scalars(model_dir, "train", "tokens_per_batch"))
    np.testing.assert_allclose(batch_tokens, tokens * batch, rtol=1e-6)  # "tokens": the mean per sequence
    full = batch * lm_run.SEQUENCE_LENGTH  # a batch holds at most one padded window, a split's last
    assert np.all((batch_tokens > full - lm_run.SEQUENCE_LENGTH) & (batch_tokens <= full))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(dataset="pystdlib_bytes/seq64"),
            r"^config.dataset='pystdlib_bytes/seq64': must be a pystdlib_bytes config: "
            r"'pystdlib_bytes/seq128', 'pystdlib_bytes/seq256'\.$",
        ),
        (
            dict(dataset="mnist1d/large", model="mnist1d_cnn", model_width=None, model_layers=None, model_heads=None),
            r"^config.task='next_token' predicts each next token of a sequence, and config.dataset='mnist1d/large' has "
            r"one class per example: .*\.$",
        ),
        (
            dict(task="classification"),
            r"^config.task='classification': config.dataset='pystdlib_bytes/seq128' labels "
            r"every position of a sequence; set config.task='next_token'\.$",
        ),
        (
            dict(model="resnet20"),
            r"^config.model_width=64: sizes config.model='transformer_lm', not 'resnet20': leave it "
            r"None\.$",
        ),
        (
            dict(model="mnist1d_cnn", model_width=None, model_layers=None, model_heads=None),
            r"^config.task='next_token' needs a prediction per position, and config.model='mnist1d_cnn' gives one per "
            r"example: use transformer_lm \(or a model_fn of your own\)\.$",
        ),
        (dict(model_heads=3), r"^config.model_heads=3: must be a divisor of width=64 \(config.model_width\)\.$"),
    ],
)
def test_a_config_that_does_not_fit_a_language_model_is_one_line_before_anything_is_written(
    tmp_path, overrides, message
):
    from kbatch.configs import lm_bytes
    from kbatch.training import train

    config = lm_bytes.get_config()
    config.update({**overrides, "model_dir": str(tmp_path / "run")})
    with pytest.raises(ValueError, match=message):
        train(config, verbose=False)
    assert not (tmp_path / "run").exists() or not set(os.listdir(tmp_path / "run")) - {".kbatch.lock"}


def test_a_model_without_a_prediction_per_position_is_refused_in_one_line(tmp_path):
    import keras

    from kbatch.configs import lm_bytes
    from kbatch.training import train

    def classifier(info):
        inputs = keras.Input(info.input_shape, dtype="int32")
        pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(info.num_classes, 8)(inputs))
        return keras.Model(inputs, keras.layers.Dense(info.num_classes)(pooled))

    config = lm_bytes.get_config()
    config.model_dir = str(tmp_path / "run")
    with pytest.raises(
        ValueError,
        match=r"^model_fn's model gives outputs of shape \[batch, 257\]; predicting the "
        r"next tokens of pystdlib_bytes/seq128 takes \[batch, 128, 257\]: logits "
        r"over the tokens at each position\.$",
    ):
        train(config, model_fn=classifier, verbose=False)
    assert not (tmp_path / "run").exists()


def test_both_backends_read_the_same_examples_of_the_built_in_in_their_own_order():
    """What `BuiltinSource.guarantees()` promises of pystdlib_bytes: exact resume and the same
    examples across strategies, not the same order across backends; its tf.data form holds the
    NumPy arrays, each epoch a permutation of them."""
    import tensorflow as tf

    from kbatch.data import sources
    from kbatch.data.pystdlib_bytes import make_pystdlib_bytes

    source = sources.get("pystdlib_bytes/seq128")
    assert source.guarantees().exact_resume and not source.guarantees().same_across_backends
    data, size = make_pystdlib_bytes(128), source.describe().num_train_examples
    x, y = source.examples_at(0, size, seed=3)
    stream = source.tf_train_dataset_fn(size, seed=3)(tf.distribute.InputContext())
    tf_x, tf_y = next(iter(stream))
    for inputs, targets in ((x, y), (tf_x.numpy(), tf_y.numpy())):
        order = np.lexsort(inputs.T[::-1])
        np.testing.assert_array_equal(inputs[order], data["x"][np.lexsort(data["x"].T[::-1])])
        np.testing.assert_array_equal(targets[:, :-1], inputs[:, 1:])  # each target is the next input byte
    resumed_x, _ = source.examples_at(size // 2, size, seed=3)
    np.testing.assert_array_equal(resumed_x, x[size // 2 :])


def test_the_config_check_takes_each_builder_config_of_pystdlib_bytes():
    from kbatch.data import names, pystdlib_bytes

    for value in ["pystdlib_bytes", *(f"pystdlib_bytes/{config}" for config in pystdlib_bytes.CONFIGS)]:
        assert names.check_dataset("config.dataset", value) == value
    assert names.pad_id("pystdlib_bytes/seq256") == pystdlib_bytes.PAD and names.pad_id("mnist1d/large") is None
