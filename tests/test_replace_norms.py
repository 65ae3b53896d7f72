"""`replace_norms` (model surgery) against the model before the change: BN -> ghost BN with the
statistics carried predicts what the original predicts in inference mode, for Sequential, functional
and nested models; what each norm keeps of a BN; the copy trains, saves and loads; what it cannot
rewrite is refused in one line."""

import keras
import numpy as np
import pytest

from kbatch.layers import GhostBatchNormalization, SwitchableNormalization, replace_norms

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX

SHAPE = (8, 4)  # (length, channels) of a 1-D signal
X = np.random.default_rng(0).normal(size=(12, *SHAPE)).astype("float32")


def randomize_batch_norms(model, seed=1):
    """Every BN given a random gamma, beta and moving statistics, as after training."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable in layer.weights:
                positive = variable.name in ("gamma", "moving_variance")
                size = variable.shape[0]
                variable.assign(rng.uniform(0.5, 2, size) if positive else rng.normal(size=size))
    return model


def sequential():
    return randomize_batch_norms(
        keras.Sequential(
            [
                keras.Input(SHAPE),
                keras.layers.Conv1D(6, 3, name="conv"),
                keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-2, name="norm"),
                keras.layers.ReLU(),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.Dense(3, name="head"),
            ]
        )
    )


def functional_with_a_nested_block():
    """A residual block whose branch is a nested Sequential with its own BN."""
    inputs = keras.Input(SHAPE)
    x = keras.layers.BatchNormalization(center=False, name="stem_norm")(keras.layers.Conv1D(4, 1)(inputs))
    branch = keras.Sequential(
        [keras.Input((SHAPE[0], 4)), keras.layers.Conv1D(4, 3, padding="same"), keras.layers.BatchNormalization()],
        name="branch",
    )
    x = keras.layers.Add()([x, branch(x)])
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    return randomize_batch_norms(keras.Model(inputs, outputs))


def norms(model, cls):
    return [layer for layer in model._flatten_layers() if isinstance(layer, cls)]


@pytest.mark.parametrize("make", [sequential, functional_with_a_nested_block])
def test_ghost_batch_norm_with_the_carried_statistics_predicts_what_the_original_does(make):
    model = make()
    ghost = replace_norms(model, "ghost_batch", virtual_batch_size=4)
    originals = norms(model, keras.layers.BatchNormalization)
    replaced = norms(ghost, GhostBatchNormalization)
    assert len(replaced) == len(originals) >= 1 and all(layer.virtual_batch_size == 4 for layer in replaced)
    for old, new in zip(originals, replaced):
        assert [v.name for v in new.weights] == [v.name for v in old.weights]
        for a, b in zip(old.weights, new.weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(ghost.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-5, atol=1e-5)
    assert not norms(model, GhostBatchNormalization)  # the original is untouched


def test_the_batch_norms_arguments_carry_and_keyword_arguments_win():
    model = functional_with_a_nested_block()
    stem = replace_norms(model, "ghost_batch", virtual_batch_size=3, momentum=0.5).get_layer("stem_norm")
    assert (stem.axis, stem.momentum, stem.epsilon, stem.center, stem.scale) == (-1, 0.5, 1e-3, False, True)
    norm = replace_norms(sequential(), "switchable", modes=("batch", "layer")).get_layer("norm")
    assert (norm.momentum, norm.epsilon, norm.modes) == (0.9, 1e-2, ("batch", "layer"))


@pytest.mark.filterwarnings("ignore:You are using a softmax over axis")  # Keras's, on a one-mode mixture
def test_switchable_norm_of_the_batch_mode_alone_is_the_batch_norm_it_replaced():
    """Luo et al. 2018: with one mode the mixture is that normalizer; all four BN variables carry."""
    model = sequential()
    switched = replace_norms(model, "switchable", modes=("batch",))
    assert isinstance(switched.get_layer("norm"), SwitchableNormalization)
    np.testing.assert_allclose(switched.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, kwargs", [("group", {"groups": 3}), ("layer", {}), ("instance", {})])
def test_norms_without_moving_statistics_keep_gamma_and_beta(name, kwargs):
    model = sequential()
    new = replace_norms(model, name, **kwargs).get_layer("norm")
    old = model.get_layer("norm")
    assert sorted(v.name for v in new.weights) == ["beta", "gamma"]
    np.testing.assert_array_equal(np.asarray(new.gamma), np.asarray(old.gamma))
    np.testing.assert_array_equal(np.asarray(new.beta), np.asarray(old.beta))


def test_every_other_layer_keeps_its_weights():
    model = sequential()
    new = replace_norms(model, "layer")
    for name in ("conv", "head"):
        for a, b in zip(model.get_layer(name).weights, new.get_layer(name).weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_copy_trains_saves_and_loads(tmp_path):
    model = sequential()
    model.compile(optimizer="sgd", loss="mse")
    ghost = replace_norms(model, "ghost_batch", virtual_batch_size=4)
    assert ghost.compiled
    before = np.asarray(ghost.get_layer("norm").moving_mean).copy()
    ghost.fit(X, np.ones((len(X), 3), "float32"), batch_size=12, epochs=1, verbose=0)
    assert not np.allclose(np.asarray(ghost.get_layer("norm").moving_mean), before)
    ghost.save(tmp_path / "ghost.keras")
    loaded = keras.models.load_model(tmp_path / "ghost.keras")
    assert isinstance(loaded.get_layer("norm"), GhostBatchNormalization)
    np.testing.assert_allclose(loaded.predict(X, verbose=0), ghost.predict(X, verbose=0), rtol=1e-6, atol=1e-6)


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.BatchNormalization()

    def call(self, x):
        return self.norm(x)


class Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.BatchNormalization()

    def call(self, x):
        return self.norm(x)


def test_a_subclassed_model_or_a_custom_layer_holding_a_batch_norm_is_refused_in_one_line():
    subclassed = Subclassed(name="net")
    subclassed(X)
    inputs = keras.Input(SHAPE)
    custom = keras.Model(inputs, Block(name="block")(inputs))
    for model, culprit in ((subclassed, "'net' (Subclassed)"), (custom, "'block' (Block)")):
        with pytest.raises(ValueError, match="cannot be rewritten") as error:
            replace_norms(model, "ghost_batch", virtual_batch_size=4)
        assert culprit in str(error.value) and "\n" not in str(error.value)


def test_a_bad_name_or_an_unbuilt_model_is_refused():
    with pytest.raises(ValueError, match="name='ghost': must be one of"):
        replace_norms(sequential(), "ghost")
    with pytest.raises(ValueError, match="not built"):
        replace_norms(keras.Sequential([keras.layers.BatchNormalization()]), "layer")
