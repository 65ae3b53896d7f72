"""Ghost batch normalization (Hoffer et al. 2017) against Keras's BatchNormalization and NumPy."""

import keras
import numpy as np
import pytest
from backend_ops import compiled_training_call, gradients

from kbatch.layers import GhostBatchNormalization

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX

ATOL = 1e-5


def _data(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * rng.uniform(0.5, 3.0) + rng.normal()).astype("float32")


def _pair(virtual_batch_size, shape, axis=-1, momentum=0.9):
    """A ghost BN and a Keras BN with the same random gamma and beta."""
    ghost = GhostBatchNormalization(virtual_batch_size, axis=axis, momentum=momentum)
    batch = keras.layers.BatchNormalization(axis=axis, momentum=momentum)
    ghost.build(shape)
    batch.build(shape)
    channels = shape[axis]
    rng = np.random.default_rng(1)
    weights = [rng.uniform(0.5, 2.0, channels), rng.normal(size=channels), np.zeros(channels), np.ones(channels)]
    ghost.set_weights(weights)
    batch.set_weights(weights)
    return ghost, batch


@pytest.mark.parametrize("shape, axis", [((8, 5), -1), ((8, 6, 3), -1), ((8, 4, 3, 2), -1), ((8, 2, 4, 3), 1)])
def test_virtual_batch_equal_to_batch_is_batch_norm(shape, axis):
    ghost, batch = _pair(shape[0], shape, axis)
    for step in range(3):
        x = _data(shape, seed=step)
        np.testing.assert_allclose(ghost(x, training=True), batch(x, training=True), atol=ATOL)
        np.testing.assert_allclose(ghost.moving_mean, batch.moving_mean, atol=ATOL)
        np.testing.assert_allclose(ghost.moving_variance, batch.moving_variance, atol=ATOL)
    x = _data(shape, seed=9)
    np.testing.assert_allclose(ghost(x, training=False), batch(x, training=False), atol=ATOL)


def test_quarter_virtual_batch_is_batch_norm_on_each_quarter():
    shape, momentum = (16, 5, 3), 0.9
    ghost, batch = _pair(4, shape, momentum=momentum)
    x = _data(shape)
    quarters = [x[i : i + 4] for i in range(0, 16, 4)]
    # Keras BN applied to each quarter alone (training mode uses only that quarter's statistics).
    expected = np.concatenate([batch(q, training=True) for q in quarters])
    np.testing.assert_allclose(ghost(x, training=True), expected, atol=ATOL)
    # One moving-average step with the mean of the quarters' means and variances.
    mean = np.mean([q.mean(axis=(0, 1)) for q in quarters], axis=0)
    variance = np.mean([q.var(axis=(0, 1)) for q in quarters], axis=0)
    np.testing.assert_allclose(ghost.moving_mean, (1 - momentum) * mean, atol=ATOL)
    np.testing.assert_allclose(ghost.moving_variance, momentum + (1 - momentum) * variance, atol=ATOL)


def test_last_ghost_batch_is_the_smaller_remainder():
    shape, momentum = (10, 3), 0.5
    ghost, batch = _pair(4, shape, momentum=momentum)
    x = _data(shape)
    chunks = [x[0:4], x[4:8], x[8:10]]
    expected = np.concatenate([batch(c, training=True) for c in chunks])
    np.testing.assert_allclose(ghost(x, training=True), expected, atol=ATOL)
    # Each ghost weighted by its size: the moving mean tracks the batch mean.
    variance = sum(len(c) * c.var(axis=0) for c in chunks) / len(x)
    np.testing.assert_allclose(ghost.moving_mean, (1 - momentum) * x.mean(axis=0), atol=ATOL)
    np.testing.assert_allclose(ghost.moving_variance, momentum + (1 - momentum) * variance, atol=ATOL)


def test_mask_is_batch_norm_with_the_same_mask():
    shape = (6, 5, 3)
    ghost, batch = _pair(shape[0], shape)
    x = _data(shape)
    mask = np.random.default_rng(3).uniform(size=shape[:2]) > 0.3
    np.testing.assert_allclose(ghost(x, training=True, mask=mask), batch(x, training=True, mask=mask), atol=ATOL)
    np.testing.assert_allclose(ghost.moving_mean, batch.moving_mean, atol=ATOL)
    np.testing.assert_allclose(ghost.moving_variance, batch.moving_variance, atol=ATOL)


def _tiny_model(norm):
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, name="dense1")(inputs)
    x = norm(x)
    x = keras.layers.Activation("tanh")(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="dense2")(x))


def _gradients(model, x, y):
    return gradients(model, x, lambda outputs: keras.ops.mean(keras.ops.square(outputs - y)))[1]


def test_accumulating_micro_batches_is_ghost_batch_norm_not_batch_norm():
    batch_size, micro = 16, 4
    keras.utils.set_random_seed(0)
    bn_model = _tiny_model(keras.layers.BatchNormalization())
    ghost_model = _tiny_model(GhostBatchNormalization(micro))
    ghost_model.set_weights(bn_model.get_weights())
    x, y = _data((batch_size, 6)), _data((batch_size, 1), seed=1)

    # Accumulation: mean of the k micro-batch gradients (each micro-batch is a BN batch).
    micro_grads = [_gradients(bn_model, x[i : i + micro], y[i : i + micro]) for i in range(0, batch_size, micro)]
    accumulated = [np.mean(g, axis=0) for g in zip(*micro_grads)]
    full_bn = _gradients(bn_model, x, y)
    full_ghost = _gradients(ghost_model, x, y)

    assert max(np.abs(a - b).max() for a, b in zip(accumulated, full_bn)) > 1e-3
    for a, b in zip(accumulated, full_ghost):
        np.testing.assert_allclose(a, b, atol=ATOL)


def test_inference_does_not_depend_on_other_examples():
    shape = (8, 4, 3)
    ghost, _ = _pair(2, shape, momentum=0.5)
    for step in range(3):
        ghost(_data(shape, seed=step), training=True)
    x, others = _data(shape, seed=5), _data(shape, seed=6)
    alone = ghost(x[:1], training=False)
    with_others = ghost(np.concatenate([x[:1], others]), training=False)[:1]
    np.testing.assert_allclose(alone, with_others, atol=ATOL)
    gamma, beta, mean, variance = ghost.get_weights()
    expected = gamma * (x[:1] - mean) / np.sqrt(variance + ghost.epsilon) + beta
    np.testing.assert_allclose(alone, expected, atol=ATOL)


@keras.saving.register_keras_serializable(package="kbatch_tests")
class _GhostNet(keras.Model):
    def __init__(self, virtual_batch_size, **kwargs):
        super().__init__(**kwargs)
        self.virtual_batch_size = virtual_batch_size
        self.dense = keras.layers.Dense(4)
        self.norm = GhostBatchNormalization(virtual_batch_size, momentum=0.5)

    def call(self, x, training=None):
        return self.norm(self.dense(x), training=training)

    def get_config(self):
        return {**super().get_config(), "virtual_batch_size": self.virtual_batch_size}


@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_keras_file_round_trip(kind, tmp_path):
    if kind == "functional":
        inputs = keras.Input((3,))
        outputs = GhostBatchNormalization(2, momentum=0.5)(keras.layers.Dense(4)(inputs))
        model = keras.Model(inputs, outputs)
    else:
        model = _GhostNet(2)
        model(np.zeros((2, 3), "float32"))
    x = _data((6, 3))
    model(x, training=True)  # moves the moving statistics away from their initial values
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    norm = [layer for layer in loaded._flatten_layers() if isinstance(layer, GhostBatchNormalization)]
    assert len(norm) == 1 and norm[0].virtual_batch_size == 2
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
    np.testing.assert_array_equal(loaded(x, training=True), model(x, training=True))


def test_compiled_for_any_batch_size_as_eager():
    """XLA with an unknown batch dimension (TensorFlow) or retraced per batch size (JAX)."""
    shape = (8, 5, 3)
    eager, compiled = _pair(4, shape)[0], _pair(4, shape)[0]
    step = compiled_training_call(compiled, shape[1:])
    for batch_size in (8, 6):  # 6: a last ghost batch of 2
        x = _data((batch_size,) + shape[1:], seed=batch_size)
        np.testing.assert_allclose(step(x), eager(x, training=True), atol=ATOL)
        np.testing.assert_allclose(compiled.moving_mean, eager.moving_mean, atol=ATOL)
        np.testing.assert_allclose(compiled.moving_variance, eager.moving_variance, atol=ATOL)


@pytest.mark.parametrize("virtual_batch_size", [0, -4, 2.5, True, None])
def test_bad_virtual_batch_size(virtual_batch_size):
    message = rf"virtual_batch_size={virtual_batch_size!r}: must be a positive integer\."
    with pytest.raises(ValueError, match=message):
        GhostBatchNormalization(virtual_batch_size)


@pytest.mark.parametrize(
    "argument, value, allowed",
    [
        ("momentum", 1.5, r"in \[0, 1\]"),
        ("momentum", -0.5, r"in \[0, 1\]"),
        ("momentum", float("nan"), r"in \[0, 1\]"),
        ("momentum", "0.9", r"in \[0, 1\]"),
        ("epsilon", -1.0, "> 0"),
        ("epsilon", 0.0, "> 0"),
        ("epsilon", float("inf"), "> 0"),
    ],
)
def test_momentum_and_epsilon_out_of_range_are_refused(argument, value, allowed):
    with pytest.raises(ValueError, match=rf"{argument}={value!r}: must be a finite number {allowed}\."):
        GhostBatchNormalization(4, **{argument: value})


@pytest.mark.parametrize("momentum", [0.0, 1.0])
def test_momentum_at_the_ends_of_its_range_is_accepted(momentum):
    assert GhostBatchNormalization(4, momentum=momentum).momentum == momentum


def test_the_batch_axis_is_refused():
    with pytest.raises(ValueError, match=r"axis=0: must be a feature axis, not the batch axis 0"):
        GhostBatchNormalization(4, axis=0)(keras.Input((5, 3)))


def test_synchronized_is_rejected():
    with pytest.raises(ValueError, match="synchronized"):
        GhostBatchNormalization(4, synchronized=True)


def _trained_weights(make_config, strategy, norm, **norm_kwargs):
    """Train Conv -> `norm` -> tanh -> Dense for one epoch with kbatch's trainer; the saved weights."""
    from kbatch import layers
    from kbatch.training import train

    def model_fn(info):
        inputs = keras.Input(info.input_shape)
        x = keras.layers.Conv1D(16, 5, strides=2, padding="same", use_bias=False)(inputs)
        x = layers.get(norm, momentum=0.9, **norm_kwargs)(x)
        x = keras.layers.Activation("tanh")(x)  # keeps rounding differences at rounding level
        return keras.Model(inputs, keras.layers.Dense(info.num_classes)(keras.layers.Flatten()(x)))

    config = make_config(num_epochs=1, strategy=strategy, batch_size=128)
    assert train(config, model_fn=model_fn, verbose=False)["steps"] >= 20
    model = keras.models.load_model(f"{config.model_dir}/model.keras")
    return [w.numpy() for w in model.trainable_variables + model.non_trainable_variables]


def _assert_same_weights(a, b, atol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=atol)


def test_trainer_on_cpu2_with_ghost_batches_equals_one_device(make_config):
    """Ghost batches are cut per replica: under cpu:2 in kbatch's trainer, ghost batches of 32
    train the same weights and moving statistics as on one device (the replicas' moving
    statistics averaged at the end)."""
    _assert_same_weights(
        _trained_weights(make_config, "cpu:2", "ghost_batch", virtual_batch_size=32),
        _trained_weights(make_config, "one_device", "ghost_batch", virtual_batch_size=32),
        atol=1e-5,
    )


@pytest.mark.tensorflow_only
def test_one_device_ghost_batch_of_the_replica_batch_is_data_parallel_batch_norm(make_config):
    """Keras's BN under cpu:2 normalizes each replica's 64 examples alone; one device with ghost
    batches of 64 does the same, so it trains the same weights and, since the trainer averages
    the replicas' moving statistics, the same moving mean and variance."""
    _assert_same_weights(
        _trained_weights(make_config, "cpu:2", "batch"),
        _trained_weights(make_config, "one_device", "ghost_batch", virtual_batch_size=64),
        atol=1e-5,
    )


@pytest.mark.jax_only
def test_on_jax_data_parallel_batch_norm_is_one_device_batch_norm(make_config):
    """On JAX the jitted step sees the whole global batch sharded over the devices, so Keras's
    BN under cpu:2 normalizes all 128 examples together, as on one device (it is synchronized
    BN); ghost batches of 64 are then what gives tf.distribute's per-replica statistics."""
    _assert_same_weights(
        _trained_weights(make_config, "cpu:2", "batch"),
        _trained_weights(make_config, "one_device", "batch"),
        atol=1e-5,
    )
