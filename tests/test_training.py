"""The training loop end to end: what a run writes, and runs on different strategies that agree."""

import json
import math
import os

import keras
import numpy as np
import pytest
from smooth_model import smooth_model

import kbatch
from kbatch.training import train


def _weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()


def test_a_run_writes_config_result_model_and_tensorboard_logs(make_config):
    config = make_config(target_accuracy=0.5)
    result = train(config, verbose=False)
    files = set(os.listdir(config.model_dir))
    assert {"config.json", "result.json", "model.keras", "train", "eval", "examples", "checkpoints"} <= files
    saved = json.load(open(os.path.join(config.model_dir, "result.json")))
    assert saved == json.loads(json.dumps(result))
    # Two epochs of one continuous stream: the updates it takes to see 2 x 4,000 examples.
    assert result["steps"] == math.ceil(2 * 4000 / 128)
    assert result["examples_seen"] == result["steps"] * 128
    assert result["batch_sizes"] == [128]
    assert result["wall_seconds"] > 0
    assert result["best_eval_accuracy"] == max(e["eval_accuracy"] for e in result["history"])
    assert result["final_eval_accuracy"] == result["history"][-1]["eval_accuracy"]
    first = next(e for e in result["history"] if e["eval_accuracy"] >= 0.5)
    assert (result["steps_to_target"], result["examples_to_target"]) == (first["step"], first["step"] * 128)
    assert json.load(open(os.path.join(config.model_dir, "config.json")))["batch_size"] == 128
    # The saved model is the trained one: its test accuracy is the final eval accuracy.
    model = keras.models.load_model(os.path.join(config.model_dir, "model.keras"))
    import tensorflow_datasets as tfds

    x, y = tfds.as_numpy(tfds.load("mnist1d/original", split="test", as_supervised=True, batch_size=-1))
    accuracy = np.mean(np.argmax(model.predict(x[..., None], verbose=0), -1) == y)
    assert accuracy == pytest.approx(result["final_eval_accuracy"], abs=1e-6)


def test_target_never_reached_leaves_the_target_fields_empty(make_config):
    result = train(make_config(num_epochs=1, warmup_epochs=0.0, target_accuracy=1.0), verbose=False)
    assert result["steps_to_target"] is None and result["examples_to_target"] is None


def test_default_config_learns_mnist1d(make_config):
    # Two epochs of the small set already beat chance (10%) by far.
    assert train(make_config(), verbose=False)["final_eval_accuracy"] > 0.6


@pytest.mark.parametrize("optimizer, replicas", [("momentum", "cpu:4"), ("adam", "cpu:2")])
def test_one_device_and_several_replicas_end_with_the_same_weights(make_config, optimizer, replicas):
    """Momentum on 4 replicas, Adam (whose moments see the summed gradient) on 2."""
    runs = [
        make_config(
            num_epochs=1,
            optimizer=optimizer,
            base_learning_rate=0.01 if optimizer == "adam" else 0.05,
            strategy=strategy,
        )
        for strategy in ("one_device", replicas)
    ]
    for config in runs:
        assert train(config, model_fn=smooth_model, verbose=False)["steps"] >= 20
    reference = _weights(runs[0].model_dir)
    for config in runs[1:]:
        for a, b in zip(reference, _weights(config.model_dir)):
            np.testing.assert_allclose(b, a, atol=1e-5)


def test_tensorboard_logs_learning_rate_and_batch_size_per_step(make_config):
    import tensorflow as tf

    config = make_config(num_epochs=1, warmup_epochs=0.5)
    train(config, verbose=False)
    train_dir = os.path.join(config.model_dir, "train")
    values = {}
    for name in os.listdir(train_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(train_dir, name)):
            for value in event.summary.value:
                values.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    steps = math.ceil(4000 / 128)
    assert sorted(values["learning_rate"]) == list(range(1, steps + 1))
    assert set(values["global_batch_size"].values()) == {128.0}
    # Warmup: the rate rises linearly from 0 over the first half epoch, 2,000 examples (the step
    # logged is the update's number; its rate is the schedule at the examples seen before it).
    peak = 0.05
    for step in range(1, steps + 1):
        epochs = (step - 1) * 128 / 4000
        if epochs < 0.5:
            assert values["learning_rate"][step] == pytest.approx(peak * epochs / 0.5, rel=1e-5)


def test_batch_norm_runs_end_with_one_set_of_moving_statistics_for_all_replicas(make_config):
    """Keras's non-synchronized BN keeps a moving mean per replica; the trainer averages them,
    so the saved model's statistics are the mean of what the replicas saw."""
    config = make_config(num_epochs=1, strategy="cpu:2", norm="batch")
    strategy = kbatch.distribute.resolve_strategy("cpu:2")
    seen = {}

    def model_fn(info):
        model = kbatch.models.get("mnist1d_cnn", num_classes=10, input_shape=info.input_shape, norm="batch")
        seen["model"] = model
        return model

    train(config, model_fn=model_fn, verbose=False)
    model = seen["model"]
    for variable in model.non_trainable_variables:
        copies = strategy.experimental_local_results(variable.value)
        np.testing.assert_array_equal(copies[0].numpy(), copies[1].numpy())
    saved = keras.models.load_model(os.path.join(config.model_dir, "model.keras"))
    for a, b in zip(saved.non_trainable_variables, model.non_trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_accumulating_four_micro_batches_equals_the_full_batch_update(make_config):
    plain = make_config(num_epochs=1)
    accumulated = make_config(num_epochs=1, accumulation_steps=4)
    for config in (plain, accumulated):
        train(config, model_fn=smooth_model, verbose=False)
    for a, b in zip(_weights(plain.model_dir), _weights(accumulated.model_dir)):
        np.testing.assert_allclose(b, a, atol=1e-5)
