"""The text classifier (kbatch.models.text_classifier): padding is invisible to it, its pooling is
the mean over the tokens (NumPy's), the norm is chosen by name, it saves and loads, and a bad
input shape is one line."""

import keras
import numpy as np
import pytest

import kbatch
from kbatch.models.text_classifier import MaskedMean, TokenMask

VOCABULARY, LENGTH = 30, 10


def _model(norm="layer"):
    keras.utils.set_random_seed(0)
    return kbatch.models.get(
        "text_classifier", num_classes=3, input_shape=(LENGTH,), norm=norm, vocabulary_size=VOCABULARY
    )


def _tokens():
    tokens = np.random.default_rng(0).integers(1, VOCABULARY, size=(4, LENGTH)).astype(np.int32)
    for row, used in enumerate((10, 6, 3, 0)):  # the last review is empty: padding alone
        tokens[row, used:] = 0
    return tokens


def test_the_padding_embedding_does_not_change_the_logits_and_a_token_does():
    model, tokens = _model(), _tokens()
    before = keras.ops.convert_to_numpy(model(tokens))
    table = model.get_layer("token_embedding").embeddings
    table.assign(
        keras.ops.convert_to_tensor(
            np.concatenate([np.full((1, table.shape[1]), 50.0, np.float32), keras.ops.convert_to_numpy(table)[1:]])
        )
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(tokens)), before, atol=1e-5)
    changed = tokens.copy()
    changed[1, 0] = changed[1, 0] % (VOCABULARY - 1) + 1
    assert not np.allclose(keras.ops.convert_to_numpy(model(changed))[1], before[1], atol=1e-5)


def test_the_pooling_is_the_mean_over_the_tokens():
    tokens = _tokens()
    x = np.random.default_rng(1).normal(size=(4, LENGTH, 5)).astype(np.float32)
    pooled = keras.ops.convert_to_numpy(MaskedMean()(x, TokenMask()(tokens)))
    for row, (values, ids) in enumerate(zip(x, tokens)):
        want = values[ids != 0].mean(axis=0) if (ids != 0).any() else np.zeros(5)
        np.testing.assert_allclose(pooled[row], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", ["layer", "rms", "batch"])
def test_the_norm_is_the_one_named(norm):
    kind = type(kbatch.layers.get(norm))
    normalized = [layer for layer in _model(norm).layers if "_norm" in layer.name]
    assert len(normalized) == 3 and all(type(layer) is kind for layer in normalized)  # 2 in the block, 1 final


def test_it_saves_and_loads_with_the_same_outputs(tmp_path):
    model, tokens = _model(), _tokens()
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(tokens)), keras.ops.convert_to_numpy(model(tokens)))


def test_an_input_of_more_than_one_axis_is_one_line():
    with pytest.raises(ValueError, match=r"^input_shape=\(28, 28, 1\): must be \(sequence_length,\)") as error:
        kbatch.models.get("text_classifier", num_classes=10, input_shape=(28, 28, 1))
    assert "\n" not in str(error.value)
