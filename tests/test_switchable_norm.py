"""Switchable normalization (Luo et al. 2018) against Keras's BN, LN and IN layers and NumPy."""

import re

import keras
import numpy as np
import pytest
from backend_ops import compiled_training_call, gradients

from kbatch.layers import SwitchableNormalization

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX

ATOL = 1e-5
FORCED = -1e4  # softmax weight exp(-1e4) is exactly 0 in float32


def _data(shape, seed=0):
    rng = np.random.default_rng(seed)
    scaled = rng.normal(size=shape) * rng.uniform(0.5, 3.0, size=shape[-1])
    return (scaled + rng.normal(size=shape[-1])).astype("float32")


def _switchable(shape, modes=("batch", "layer", "instance"), momentum=0.9, logits=None):
    layer = SwitchableNormalization(modes=modes, momentum=momentum)
    layer.build(shape)
    rng = np.random.default_rng(1)
    layer.gamma.assign(rng.uniform(0.5, 2.0, shape[-1]))
    layer.beta.assign(rng.normal(size=shape[-1]))
    if logits is not None:
        layer.mean_logits.assign(logits[0])
        layer.variance_logits.assign(logits[1])
    return layer


def _force(modes, mode):
    logits = [0.0 if m == mode else FORCED for m in modes]
    return logits, logits


def _keras_reference(mode, shape, gamma, beta):
    """That mode's Keras layer with the same per-channel gamma and beta."""
    if mode == "batch":
        layer = keras.layers.BatchNormalization(momentum=0.9)
    elif mode == "layer":  # the paper's LN: every axis but the batch
        layer = keras.layers.LayerNormalization(axis=list(range(1, len(shape))))
    else:
        layer = keras.layers.GroupNormalization(groups=-1)
    layer.build(shape)
    layer.gamma.assign(np.broadcast_to(gamma, layer.gamma.shape))
    layer.beta.assign(np.broadcast_to(beta, layer.beta.shape))
    return layer


CASES = [
    ("batch", (8, 5)),
    ("batch", (8, 6, 3)),
    ("batch", (8, 4, 3, 2)),
    ("layer", (8, 5)),
    ("layer", (8, 6, 3)),
    ("layer", (8, 4, 3, 2)),
    ("instance", (8, 6, 3)),
    ("instance", (8, 4, 3, 2)),
]


@pytest.mark.parametrize("mode, shape", CASES)
def test_logits_forced_to_one_mode_equal_that_keras_layer(mode, shape):
    modes = ("batch", "layer") if len(shape) == 2 else ("batch", "layer", "instance")
    layer = _switchable(shape, modes, logits=_force(modes, mode))
    reference = _keras_reference(mode, shape, layer.gamma.numpy(), layer.beta.numpy())
    for step in range(2):
        x = _data(shape, seed=step)
        np.testing.assert_allclose(layer(x, training=True), reference(x, training=True), atol=ATOL)
    if mode == "batch":  # the moving statistics and inference are BatchNormalization's
        np.testing.assert_allclose(layer.moving_mean, reference.moving_mean, atol=ATOL)
        np.testing.assert_allclose(layer.moving_variance, reference.moving_variance, atol=ATOL)
        x = _data(shape, seed=7)
        np.testing.assert_allclose(layer(x, training=False), reference(x, training=False), atol=ATOL)


def test_mixture_is_the_papers_formula():
    shape = (6, 4, 5, 3)
    rng = np.random.default_rng(2)
    mean_logits, variance_logits = rng.normal(size=3), rng.normal(size=3)
    layer = _switchable(shape, logits=(mean_logits, variance_logits))
    x = _data(shape).astype("float64")

    def softmax(z):
        return np.exp(z) / np.exp(z).sum()

    # Luo et al. 2018, eq. 3: IN over (H, W), LN over (H, W, C), BN over (N, H, W).
    axes = [(0, 1, 2), (1, 2, 3), (1, 2)]
    mean = sum(w * x.mean(axis=a, keepdims=True) for w, a in zip(softmax(mean_logits), axes))
    variance = sum(w * x.var(axis=a, keepdims=True) for w, a in zip(softmax(variance_logits), axes))
    expected = layer.gamma.numpy() * (x - mean) / np.sqrt(variance + layer.epsilon) + layer.beta.numpy()
    np.testing.assert_allclose(layer(x.astype("float32"), training=True), expected, atol=ATOL)


def test_importance_is_the_softmax_of_each_set_of_logits():
    shape = (4, 5, 3)
    layer = _switchable(shape)
    uniform = {"batch": 1 / 3, "layer": 1 / 3, "instance": 1 / 3}
    for key in ("mean", "variance"):
        assert layer.importance()[key] == pytest.approx(uniform)
    layer.mean_logits.assign([0.0, np.log(2.0), np.log(5.0)])
    layer.variance_logits.assign([np.log(3.0), 0.0, FORCED])
    importance = layer.importance()
    assert importance["mean"] == pytest.approx({"batch": 1 / 8, "layer": 2 / 8, "instance": 5 / 8})
    assert importance["variance"] == pytest.approx({"batch": 0.75, "layer": 0.25, "instance": 0.0})


def test_importance_logits_get_gradients():
    shape = (8, 6, 3)
    layer = _switchable(shape, logits=([0.3, -0.2, 0.1], [-0.1, 0.4, 0.0]))
    x = _data(shape)
    # Weighting by x makes the loss depend on the mixture (mean(y) alone would not).
    grads = gradients(layer, x, lambda y: keras.ops.mean(y * x))[1]
    by_path = {v.path.split("/")[-1]: g for v, g in zip(layer.trainable_variables, grads)}
    assert np.abs(by_path["mean_logits"]).max() > 1e-4 and np.abs(by_path["variance_logits"]).max() > 1e-4


def test_inference_does_not_depend_on_other_examples():
    shape = (8, 6, 3)
    layer = _switchable(shape, momentum=0.5, logits=([0.5, 0.1, -0.3], [0.2, -0.4, 0.3]))
    for step in range(3):
        layer(_data(shape, seed=step), training=True)
    x, others = _data(shape, seed=5), _data(shape, seed=6)
    alone = layer(x[:1], training=False)
    with_others = layer(np.concatenate([x[:1], others]), training=False)[:1]
    np.testing.assert_allclose(alone, with_others, atol=ATOL)


@keras.saving.register_keras_serializable(package="kbatch_tests")
class _SwitchableNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv1D(4, 3)
        self.norm = SwitchableNormalization(modes=("batch", "layer"), momentum=0.5)

    def call(self, x, training=None):
        return self.norm(self.conv(x), training=training)


@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_keras_file_round_trip(kind, tmp_path):
    if kind == "functional":
        inputs = keras.Input((7, 2))
        outputs = SwitchableNormalization(modes=("batch", "layer"), momentum=0.5)(keras.layers.Conv1D(4, 3)(inputs))
        model = keras.Model(inputs, outputs)
    else:
        model = _SwitchableNet()
        model(np.zeros((2, 7, 2), "float32"))
    norm = [layer for layer in model._flatten_layers() if isinstance(layer, SwitchableNormalization)][0]
    norm.mean_logits.assign([0.7, -0.2])
    x = _data((6, 7, 2))
    model(x, training=True)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    loaded_norm = [layer for layer in loaded._flatten_layers() if isinstance(layer, SwitchableNormalization)][0]
    assert loaded_norm.modes == ("batch", "layer")
    assert loaded_norm.importance() == norm.importance()
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
    np.testing.assert_array_equal(loaded(x, training=True), model(x, training=True))


def test_compiled_for_any_batch_size_as_eager():
    """XLA with an unknown batch dimension (TensorFlow) or retraced per batch size (JAX)."""
    shape = (8, 4, 3, 2)
    logits = ([0.5, 0.1, -0.3], [0.2, -0.4, 0.3])
    eager, compiled = _switchable(shape, logits=logits), _switchable(shape, logits=logits)
    step = compiled_training_call(compiled, shape[1:])
    for batch_size in (8, 5):
        x = _data((batch_size,) + shape[1:], seed=batch_size)
        np.testing.assert_allclose(step(x), eager(x, training=True), atol=ATOL)
        np.testing.assert_allclose(compiled.moving_variance, eager.moving_variance, atol=ATOL)


@pytest.mark.parametrize("modes", [("batch", "group"), (), ("layer", "layer"), "weight"])
def test_bad_modes(modes):
    shown = re.escape(repr(tuple(modes) if not isinstance(modes, str) else (modes,)))
    with pytest.raises(
        ValueError,
        match=rf"modes={shown}: must be a non-empty sequence of distinct names from "
        r"'batch', 'layer', 'instance'\.",
    ):
        SwitchableNormalization(modes=modes)


def test_instance_mode_needs_a_spatial_axis():
    with pytest.raises(
        ValueError,
        match=r"modes=\('batch', 'layer', 'instance'\): must be without 'instance' "
        r"for input shape \(None, 5\).*use modes=\('batch', 'layer'\)",
    ):
        SwitchableNormalization()(keras.Input((5,)))


@pytest.mark.parametrize(
    "argument, value, allowed",
    [
        ("momentum", 1.5, r"in \[0, 1\]"),
        ("momentum", -0.5, r"in \[0, 1\]"),
        ("momentum", float("nan"), r"in \[0, 1\]"),
        ("momentum", None, r"in \[0, 1\]"),
        ("epsilon", -1.0, "> 0"),
        ("epsilon", 0.0, "> 0"),
        ("epsilon", float("nan"), "> 0"),
    ],
)
def test_momentum_and_epsilon_out_of_range_are_refused(argument, value, allowed):
    with pytest.raises(ValueError, match=rf"{argument}={value!r}: must be a finite number {allowed}\."):
        SwitchableNormalization(**{argument: value})


@pytest.mark.parametrize("momentum", [0.0, 1.0])
def test_momentum_at_the_ends_of_its_range_is_accepted(momentum):
    assert SwitchableNormalization(momentum=momentum).momentum == momentum


def test_the_batch_axis_is_refused():
    with pytest.raises(ValueError, match=r"axis=0: must be a feature axis, not the batch axis 0"):
        SwitchableNormalization(axis=0)(keras.Input((5, 3)))


def _train(make_config, strategy, modes):
    """Conv -> SwitchableNormalization(modes) -> tanh -> Dense, one epoch in kbatch's trainer."""
    from kbatch.training import train

    seen = {}

    def model_fn(info):
        inputs = keras.Input(info.input_shape)
        x = keras.layers.Conv1D(16, 5, strides=2, padding="same", use_bias=False)(inputs)
        x = SwitchableNormalization(modes=modes, momentum=0.9)(x)
        x = keras.layers.Activation("tanh")(x)  # keeps rounding differences at rounding level
        seen["model"] = keras.Model(inputs, keras.layers.Dense(info.num_classes)(keras.layers.Flatten()(x)))
        return seen["model"]

    config = make_config(num_epochs=1, strategy=strategy, batch_size=128)
    assert train(config, model_fn=model_fn, verbose=False)["steps"] >= 20
    return seen["model"], keras.models.load_model(f"{config.model_dir}/model.keras")


def test_trainer_on_cpu2_without_batch_statistics_equals_one_device(make_config):
    """Layer and instance statistics are per example, so splitting the batch over two replicas
    changes nothing: cpu:2 trains the weights and importance logits one device trains."""
    _, two = _train(make_config, "cpu:2", ("layer", "instance"))
    _, one = _train(make_config, "one_device", ("layer", "instance"))
    for a, b in zip(two.weights, one.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    norm = [layer for layer in two.layers if isinstance(layer, SwitchableNormalization)][0]
    assert abs(norm.importance()["mean"]["layer"] - 0.5) > 1e-4  # the logits did train


@pytest.mark.tensorflow_only  # on JAX one copy lives sharded over the devices
def test_trainer_on_cpu2_ends_with_one_set_of_moving_statistics(make_config):
    """With the batch mode each replica updates its own copy of the moving statistics; the
    trainer leaves every replica's copy equal, and that is what the saved model holds."""
    import kbatch

    strategy = kbatch.distribute.resolve_strategy("cpu:2")
    model, saved = _train(make_config, "cpu:2", ("batch", "layer", "instance"))
    norm = [layer for layer in model.layers if isinstance(layer, SwitchableNormalization)][0]
    for variable in (norm.moving_mean, norm.moving_variance):
        copies = strategy.experimental_local_results(variable.value)
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0].numpy(), copies[1].numpy())
    for a, b in zip(saved.non_trainable_variables, model.non_trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
