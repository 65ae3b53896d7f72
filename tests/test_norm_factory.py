"""`kbatch.layers.get`: every name builds the layer it promises, bad input gets a clear error."""

import keras
import numpy as np
import pytest

from kbatch import layers

KWARGS = {"ghost_batch": {"virtual_batch_size": 2}}


@pytest.mark.parametrize("name", layers.NAMES)
def test_every_name_builds_runs_and_serializes(name):
    layer = layers.get(name, **KWARGS.get(name, {}))
    x = np.random.default_rng(0).normal(size=(4, 6, 16)).astype("float32")
    y = layer(x, training=True)
    assert y.shape == x.shape and np.isfinite(y).all()
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()


def test_names_map_to_the_promised_layers():
    assert type(layers.get("batch", momentum=0.9, epsilon=1e-5)) is keras.layers.BatchNormalization
    assert layers.get("batch", momentum=0.9).momentum == 0.9
    assert layers.get("batch", epsilon=1e-5).epsilon == 1e-5
    assert layers.get("sync_batch").synchronized
    assert layers.get("batch_renorm").renorm
    ghost = layers.get("ghost_batch", virtual_batch_size=8, momentum=0.9)
    assert isinstance(ghost, layers.GhostBatchNormalization) and ghost.virtual_batch_size == 8
    assert ghost.momentum == 0.9
    assert type(layers.get("layer")) is keras.layers.LayerNormalization
    assert layers.get("group", groups=4).groups == 4
    instance = layers.get("instance")
    assert type(instance) is keras.layers.GroupNormalization and instance.groups == -1
    switchable = layers.get("switchable", modes=("batch", "layer"), momentum=0.9)
    assert switchable.modes == ("batch", "layer") and switchable.momentum == 0.9
    assert type(layers.get("none")) is keras.layers.Identity


def test_group_is_keras_group_normalization():
    x = np.random.default_rng(1).normal(size=(3, 5, 8)).astype("float32")
    ours, theirs = layers.get("group", groups=4), keras.layers.GroupNormalization(groups=4)
    np.testing.assert_allclose(ours(x), theirs(x), atol=1e-6)


def test_groups_that_do_not_divide_the_channels():
    with pytest.raises(ValueError, match=r"groups=8 must divide the number of channels \(12"):
        layers.get("group", groups=8)(keras.Input((5, 12)))


def test_ghost_batch_needs_a_virtual_batch_size():
    with pytest.raises(ValueError, match="virtual_batch_size"):
        layers.get("ghost_batch")
    with pytest.raises(ValueError, match="virtual_batch_size"):
        layers.get("ghost_batch", virtual_batch_size=0)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="ghost_batch.*switchable"):
        layers.get("weight")


def test_unknown_switchable_mode():
    with pytest.raises(ValueError, match="modes"):
        layers.get("switchable", modes=("batch", "group"))


def _tagged(base):
    """A user's subclass of `base` with one more constructor argument."""

    @keras.saving.register_keras_serializable(package="kbatch_tests", name=f"Tagged{base.__name__}")
    class Tagged(base):
        def __init__(self, tag, **kwargs):
            super().__init__(**kwargs)
            self.tag = tag

        def get_config(self):
            return {**super().get_config(), "tag": self.tag}

    return Tagged


_TaggedGhost = _tagged(layers.GhostBatchNormalization)
_TaggedSwitchable = _tagged(layers.SwitchableNormalization)


@pytest.mark.parametrize("make", [
    lambda: _TaggedGhost("g", virtual_batch_size=2, momentum=0.5),
    lambda: _TaggedSwitchable("s", momentum=0.5),
])
def test_user_subclasses_round_trip_through_a_keras_file(make, tmp_path):
    inputs = keras.Input((5, 4))
    norm = make()
    model = keras.Model(inputs, norm(inputs))
    x = np.random.default_rng(2).normal(size=(6, 5, 4)).astype("float32")
    model(x, training=True)  # moves the moving statistics
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    (clone,) = [layer for layer in loaded.layers if type(layer) is type(norm)]
    assert clone.tag == norm.tag and clone.get_config() == norm.get_config()
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
