"""The Transformer language model: causal (a token never sees the ones after it, except through
BatchNorm's statistics in training), the tied head is the token embedding transposed, every norm
by name, and a `.keras` file gives the same predictions on TensorFlow and on JAX."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from kbatch import models
from kbatch.models.transformer_lm import transformer_lm

pytestmark = pytest.mark.fast

HERE = pathlib.Path(__file__).resolve().parent
TINY = dict(num_classes=257, input_shape=(64,), num_layers=2, width=32, num_heads=4)


def _tokens(seed=0, batch=4):
    return np.random.default_rng(seed).integers(0, 257, size=(batch, 64)).astype("int32")


def _changed_at(tokens, position):
    changed = tokens.copy()
    changed[:, position] = (changed[:, position] + 1) % 257
    return changed


@pytest.mark.parametrize("norm", ["layer", "rms", "batch"])
@pytest.mark.parametrize("pre_norm", [True, False])
def test_a_position_never_sees_later_tokens_in_inference(norm, pre_norm):
    model = transformer_lm(**TINY, norm=norm, pre_norm=pre_norm)
    tokens = _tokens()
    before, after = (np.asarray(model(t, training=False)) for t in (tokens, _changed_at(tokens, 40)))
    np.testing.assert_array_equal(before[:, :40], after[:, :40])
    assert np.abs(before[:, 40:] - after[:, 40:]).max() > 1e-4


@pytest.mark.parametrize("norm, leaks", [("layer", False), ("rms", False), ("batch", True)])
def test_in_training_only_batch_norm_lets_later_tokens_in(norm, leaks):
    """BatchNorm's mean and variance run over every position, later ones too (the module's docstring)."""
    model = transformer_lm(**TINY, norm=norm)
    tokens = _tokens()
    before, after = (np.asarray(model(t, training=True)) for t in (tokens, _changed_at(tokens, 40)))
    assert (np.abs(before[:, :40] - after[:, :40]).max() > 1e-6) == leaks


def test_tied_head_is_the_token_embedding_transposed_and_untied_is_a_dense_layer():
    tied = transformer_lm(**TINY)
    features = keras.Model(tied.input, tied.get_layer("final_norm").output)
    tokens = _tokens()
    table = tied.get_layer("token_embedding").embeddings.numpy()
    np.testing.assert_allclose(tied(tokens), np.asarray(features(tokens)) @ table.T, rtol=1e-5, atol=1e-5)
    untied = transformer_lm(**TINY, tie_embeddings=False)
    assert untied.get_layer("logits").kernel.shape == (32, 257)
    assert untied.count_params() == tied.count_params() + 32 * 257 + 257
    assert untied(tokens).shape == (4, 64, 257)


def test_built_by_name_with_the_norm_and_its_arguments():
    model = models.get(
        "transformer_lm", num_classes=257, input_shape=(64,), norm="batch", norm_kwargs={"momentum": 0.9}
    )
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 2 * 4 + 1 and all(layer.momentum == 0.9 for layer in norms)  # 2 per block (4) + final
    assert model.output.shape == (None, 64, 257) and model.input.dtype == "int32"


def test_post_norm_has_no_final_norm():
    names = [layer.name for layer in transformer_lm(**TINY, pre_norm=False).layers]
    assert "final_norm" not in names and "block2_norm2" in names


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(width=32, num_heads=3), r"^num_heads=3: must be a divisor of width=32\.$"),
        (dict(input_shape=(40, 1)), r"^input_shape=\(40, 1\): must be \(sequence_length,\): one axis of token ids\.$"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(arguments, message):
    with pytest.raises(ValueError, match=message):
        transformer_lm(**{**TINY, **arguments})


def _saved(tmp_path, **kwargs):
    model = transformer_lm(**TINY, **kwargs)
    model(_tokens(), training=True)  # BatchNorm's moving statistics move
    model.save(tmp_path / "model.keras")
    return model


@pytest.mark.parametrize("norm, tie", [("layer", True), ("rms", False), ("batch", True)])
def test_keras_file_gives_the_same_predictions(tmp_path, norm, tie):
    model = _saved(tmp_path, norm=norm, tie_embeddings=tie)
    loaded = keras.models.load_model(tmp_path / "model.keras")
    tokens = _tokens(1)
    np.testing.assert_array_equal(loaded(tokens, training=False), model(tokens, training=False))


JAX_SCRIPT = """
import sys, keras, numpy as np
import kbatch.models

model = keras.models.load_model(sys.argv[1])
np.save(sys.argv[2], np.asarray(model(np.load(sys.argv[3]), training=False)))
"""


def test_the_same_file_predicts_the_same_on_jax(tmp_path):
    model = _saved(tmp_path, norm="rms")
    tokens = _tokens(2)
    np.save(tmp_path / "tokens.npy", tokens)
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(HERE.parent)}
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            JAX_SCRIPT,
            str(tmp_path / "model.keras"),
            str(tmp_path / "jax.npy"),
            str(tmp_path / "tokens.npy"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "jax.npy"), model(tokens, training=False), rtol=1e-4, atol=1e-4)
