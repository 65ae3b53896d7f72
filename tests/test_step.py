"""kbatch's update against Keras's own: the TensorFlow backend's step and loop on one device take
the same steps as `model.train_on_batch` (same model, optimizer, batches): the same losses, the
same weights and the same BatchNormalization moving statistics afterwards."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kbatch import models
from kbatch.training import Classification
from kbatch.training.backends.tf_step import make_train_loop, make_train_step
from kbatch.training.transforms import Chain, Geometry, GlobalNorm

pytestmark = pytest.mark.fast

BATCH, STEPS = 64, 5


def _model():
    return models.get("mnist1d_cnn", num_classes=10, input_shape=(40, 1), norm="batch", norm_kwargs={"momentum": 0.5})


def _optimizer():
    return keras.optimizers.SGD(0.05, momentum=0.9)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_train_step_takes_the_steps_of_keras_train_on_batch(jit_compile):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * BATCH, 40, 1)).astype(np.float32)
    y = np.argmax(x[:, :10, 0], axis=1).astype(np.int64)  # a rule the model can start to learn

    keras.utils.set_random_seed(3)
    reference = _model()
    initial = reference.get_weights()
    reference.compile(_optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    expected_losses = [
        float(reference.train_on_batch(x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]))
        for i in range(STEPS)
    ]

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = _model()
        model.set_weights(initial)
        optimizer = _optimizer()
        optimizer.build(model.trainable_variables)
    step = make_train_step(
        strategy, model, optimizer, Classification(), Chain([GlobalNorm()]), Geometry(BATCH), jit_compile=jit_compile
    )
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    records = make_train_loop(strategy, step)(
        iter(strategy.experimental_distribute_dataset(batches)), tf.constant(STEPS)
    )

    np.testing.assert_allclose(records["loss"].numpy() / records["count"].numpy(), expected_losses, rtol=1e-5)
    assert expected_losses[-1] < expected_losses[0]  # the steps did something
    moved = 0
    for variable, got, want, start in zip(model.weights, model.get_weights(), reference.get_weights(), initial):
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=variable.path)
        moved += not np.allclose(want, start)
    assert moved == len(initial)  # kernels, biases, BN scales, offsets and moving statistics all moved
