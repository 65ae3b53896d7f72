"""Batch statistics under data parallelism: with Keras's BatchNormalization each replica
normalizes with the statistics of its own half of the global batch, so `cpu:2` trains a
different model from one device at the same global batch; with `sync_batch` the statistics are
all-reduced over the replicas and the two runs end with the same weights."""

import os

import keras
import numpy as np
import pytest

import kbatch
from kbatch.training import train


def _model_with(norm):
    """Conv -> `norm` -> tanh -> Dense; tanh keeps rounding differences at rounding level."""

    def model_fn(info):
        inputs = keras.Input(info.input_shape)
        x = keras.layers.Conv1D(16, 5, strides=2, padding="same")(inputs)
        x = kbatch.layers.get(norm, momentum=0.9)(x)
        x = keras.layers.Activation("tanh")(x)
        x = keras.layers.Flatten()(x)
        return keras.Model(inputs, keras.layers.Dense(info.num_classes)(x))

    return model_fn


def _final_weights(make_config, norm, strategy):
    config = make_config(num_epochs=1, strategy=strategy)
    result = train(config, model_fn=_model_with(norm), verbose=False)
    assert result["steps"] >= 20
    model = keras.models.load_model(os.path.join(config.model_dir, "model.keras"))
    return [w.numpy() for w in model.trainable_variables], [w.numpy() for w in model.non_trainable_variables]


def _max_difference(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


@pytest.mark.parametrize("norm, same", [("batch", False), ("sync_batch", True)])
def test_cpu2_matches_one_device_only_with_synchronized_batch_statistics(make_config, norm, same):
    trainable_one, moving_one = _final_weights(make_config, norm, "one_device")
    trainable_two, moving_two = _final_weights(make_config, norm, "cpu:2")
    if same:
        assert _max_difference(trainable_one, trainable_two) < 1e-5
        assert _max_difference(moving_one, moving_two) < 1e-5
    else:
        # Per-replica statistics of 64 examples instead of 128: a different gradient at every
        # step, far above float32 rounding.
        assert _max_difference(trainable_one, trainable_two) > 1e-3


def test_synchronized_batch_norm_trains_with_accumulation_under_cpu2(make_config):
    """The synchronized forward pass all-reduces inside each micro-batch: the step must not put it
    in a nested tf.function or a graph loop (TF's merge_call refuses both). Accumulating two
    micro-batches learns as the plain cpu:2 run does (statistics over 64 examples instead of 128:
    close, not equal), and every replica ends with the same moving statistics."""
    plain = train(make_config(num_epochs=1, strategy="cpu:2"), model_fn=_model_with("sync_batch"), verbose=False)
    seen = {}

    def model_fn(info):
        seen["model"] = _model_with("sync_batch")(info)
        return seen["model"]

    config = make_config(num_epochs=1, strategy="cpu:2", accumulation_steps=2)
    accumulated = train(config, model_fn=model_fn, verbose=False)
    assert accumulated["final_eval_loss"] < np.log(10) - 0.2  # it learned: chance is ln 10
    assert accumulated["final_eval_loss"] == pytest.approx(plain["final_eval_loss"], abs=0.05)
    strategy = kbatch.distribute.resolve_strategy("cpu:2")
    for variable in seen["model"].non_trainable_variables:
        copies = strategy.experimental_local_results(variable.value)
        np.testing.assert_allclose(copies[0].numpy(), copies[1].numpy(), atol=1e-6)


def test_a_contrastive_model_on_cpu2_with_sync_batch_is_the_one_device_model(make_config):
    """SimCLR's global batch norm on TensorFlow: a `ContrastiveModel` sends both views of each
    replica's examples through its encoder, and `sync_batch` gives it the statistics of every view
    of the global batch, as batch norm on one device has; with the gathered negatives the losses
    and weights of 3 updates are the one device's (a small rate keeps the ReLU CNN's rounding small)."""

    def run(norm, strategy):
        config = make_config(
            task="contrastive",
            norm=norm,
            strategy=strategy,
            projection_dims=(16,),
            base_learning_rate=0.01,
            steps_per_loop=3,
        )
        built = kbatch.training.build_run(config)
        try:
            loop = built.run_loop()
            return loop.records["loss"] / loop.records["count"], [w.numpy() for w in built.model.weights]
        finally:
            built.close()

    losses, weights = run("batch", "one_device")
    synchronized, synchronized_weights = run("sync_batch", "cpu:2")
    np.testing.assert_allclose(synchronized, losses, rtol=1e-5)
    assert _max_difference(synchronized_weights, weights) < 1e-4
    apart, _ = run("batch", "cpu:2")  # each replica's own statistics: another loss
    assert np.abs(apart - losses).max() > 1e-4
