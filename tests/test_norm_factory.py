"""`kbatch.layers.get`: every name builds the layer it promises, bad input gets a clear error, and
`kbatch.layers.registry` says what each built layer does."""

import keras
import numpy as np
import pytest
from backend_ops import gradients

from kbatch import layers, models
from kbatch.layers import registry

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX

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
    # On JAX plain BN sees the global batch already (test_sync_batch_on_jax_reduces_over_all_devices).
    assert layers.get("sync_batch").synchronized is (keras.backend.backend() == "tensorflow")
    assert layers.get("batch_renorm").renorm
    ghost = layers.get("ghost_batch", virtual_batch_size=8, momentum=0.9)
    assert isinstance(ghost, layers.GhostBatchNormalization) and ghost.virtual_batch_size == 8
    assert ghost.momentum == 0.9
    assert type(layers.get("layer")) is keras.layers.LayerNormalization
    assert type(layers.get("rms", epsilon=1e-5)) is layers.RMSNormalization and layers.get("rms").epsilon == 1e-3
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


def test_rms_is_keras_rms_normalization_with_its_scale_called_gamma():
    """Zhang & Sennrich 2019: x / sqrt(mean(x^2) + epsilon) * gamma, as Keras's own layer computes it."""
    x = np.random.default_rng(1).normal(size=(3, 5, 8)).astype("float32") * 3.0 + 1.0
    ours, theirs = layers.get("rms", epsilon=1e-5), keras.layers.RMSNormalization(epsilon=1e-5)
    scale = np.linspace(0.5, 2.0, 8).astype("float32")
    ours.build(x.shape), theirs.build(x.shape)
    ours.gamma.assign(scale), theirs.scale.assign(scale)
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
    expected = x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + 1e-5) * scale
    np.testing.assert_allclose(ours(x), expected, rtol=1e-5, atol=1e-6)
    assert [w.path for w in ours.weights] == [f"{ours.name}/gamma"]


def test_groups_that_do_not_divide_the_channels():
    with pytest.raises(
        ValueError,
        match=r"groups=8: must be a divisor of the number of channels \(12.*"
        r"one of \[1, 2, 3, 4, 6, 12\]",
    ):
        layers.get("group", groups=8)(keras.Input((5, 12)))


def test_ghost_batch_needs_a_virtual_batch_size():
    with pytest.raises(ValueError, match="virtual_batch_size"):
        layers.get("ghost_batch")
    with pytest.raises(ValueError, match="virtual_batch_size=0: must be a positive integer"):
        layers.get("ghost_batch", virtual_batch_size=0)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="norm='weight': must be one of 'batch', .*'ghost_batch'.*'switchable'"):
        layers.get("weight")


def test_unknown_switchable_mode():
    with pytest.raises(
        ValueError,
        match=r"modes=\('batch', 'group'\): must be a non-empty sequence of distinct "
        r"names from 'batch', 'layer', 'instance'",
    ):
        layers.get("switchable", modes=("batch", "group"))


@pytest.mark.parametrize("name", layers.NAMES)
@pytest.mark.parametrize(
    "argument, value, allowed",
    [
        ("momentum", 1.5, r"in \[0, 1\]"),
        ("momentum", -0.1, r"in \[0, 1\]"),
        ("momentum", float("nan"), r"in \[0, 1\]"),
        ("epsilon", 0.0, "> 0"),
        ("epsilon", -1.0, "> 0"),
    ],
)
def test_every_name_refuses_a_momentum_or_epsilon_out_of_range(name, argument, value, allowed):
    """Keras's BatchNormalization takes momentum=1.5 silently; every name refuses it alike."""
    with pytest.raises(ValueError, match=rf"{argument}={value!r}: must be a finite number {allowed}\."):
        layers.get(name, **{argument: value}, **KWARGS.get(name, {}))


@pytest.mark.parametrize("name", layers.NAMES)
def test_momentum_and_epsilon_at_the_ends_of_their_range_are_accepted(name):
    for momentum in (0.0, 1.0):
        layer = layers.get(name, momentum=momentum, epsilon=1e-12, **KWARGS.get(name, {}))
        assert getattr(layer, "momentum", momentum) == momentum  # layers without moving statistics have none
        assert getattr(layer, "epsilon", 1e-12) == pytest.approx(1e-12)


def _built(name, shape=(4, 6, 16)):
    layer = layers.get(name, **KWARGS.get(name, {}))
    layer.build(shape)
    return layer


@pytest.mark.parametrize("name", layers.NAMES)
def test_registry_says_which_layers_keep_moving_statistics_and_a_gamma(name):
    facts, layer = registry.facts(name), _built(name)
    assert facts.moving_statistics == bool(layer.non_trainable_weights)
    assert all("moving" in w.path or "renorm" in w.path for w in layer.non_trainable_weights)
    assert facts.gamma == any(w.path.endswith("/gamma") for w in layer.trainable_weights)


@pytest.mark.parametrize("name", layers.NAMES)
def test_registry_says_which_layers_use_the_other_examples_of_the_batch(name):
    """Batch statistics tie example 0's output to the rest of its batch: through its gradient
    (batch renorm's forward pass cancels them, its gradient does not)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 6, 16)).astype("float32")
    weights = rng.normal(size=(6, 16)).astype("float32")
    others = gradients(_built(name), x, lambda y: keras.ops.sum(y[0] * weights))[0][1:]
    assert registry.facts(name).batch_statistics == (np.abs(others).max() > 1e-6)


def _bias_gradient(layer):
    """The gradient of a loss on the layer's training output with respect to a per-channel bias
    added to its input (a convolution's bias): the input gradient summed over all but channels."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 6, 16)).astype("float32")
    weights = rng.normal(size=(4, 6, 16)).astype("float32")
    x = x + np.linspace(-2.0, 2.0, 16, dtype="float32")
    return gradients(layer, x, lambda y: keras.ops.sum(y * weights))[0].sum(axis=(0, 1))


@pytest.mark.parametrize("name", [n for n in layers.NAMES if n != "switchable"])
def test_registry_says_which_layers_make_a_per_channel_bias_redundant(name):
    """A norm that subtracts a per-channel mean subtracts the bias with it: the bias gets no
    gradient (so a convolution before it needs none)."""
    redundant = np.abs(_bias_gradient(_built(name))).max() < 1e-4
    assert registry.facts(name).per_channel_mean == redundant


def test_switchable_counts_as_per_channel_its_batch_and_instance_means_are():
    """Switchable mixes in the layer mean too (its learned weight lets a bias count a little);
    the registry counts it with its per-channel modes, as the models did before it existed."""
    assert registry.facts("switchable").per_channel_mean
    only_per_channel = layers.get("switchable", modes=("batch", "instance"))
    assert np.abs(_bias_gradient(only_per_channel)).max() < 1e-4


def test_registry_names_are_the_factory_names_and_unknown_is_refused():
    assert registry.NAMES == layers.NAMES == tuple(registry.FACTS)
    with pytest.raises(ValueError, match="norm='weight': must be one of"):
        registry.facts("weight")


@pytest.mark.parametrize("name", layers.NAMES)
def test_mnist1d_cnn_drops_the_conv_bias_exactly_for_per_channel_means(name):
    model = models.get("mnist1d_cnn", num_classes=10, input_shape=(40, 1), norm=name, norm_kwargs=KWARGS.get(name))
    for index in (1, 2, 3):
        assert model.get_layer(f"conv{index}").use_bias == (not registry.facts(name).per_channel_mean)


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


@pytest.mark.parametrize(
    "make",
    [
        lambda: _TaggedGhost("g", virtual_batch_size=2, momentum=0.5),
        lambda: _TaggedSwitchable("s", momentum=0.5),
    ],
)
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


@pytest.mark.jax_only
def test_sync_batch_on_jax_reduces_over_all_devices():
    """On JAX, "sync_batch" is Keras's plain BN: inside a jitted call on a batch sharded over the
    4 host devices it normalizes with the whole batch's mean and variance (NumPy's)."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    x = (np.random.default_rng(7).normal(size=(16, 5)) * np.arange(1, 17)[:, None]).astype("float32")
    layer = layers.get("sync_batch", epsilon=1e-3)
    layer.build(x.shape)
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    assert len(mesh.devices) == 4
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("batch")))
    call = jax.jit(lambda t, n, x: layer.stateless_call(t, n, x, training=True)[0])
    got = call([v.value for v in layer.trainable_variables], [v.value for v in layer.non_trainable_variables], sharded)
    expected = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-3)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)
