"""Moving statistics under a 2-replica MirroredStrategy: Keras keeps one copy per replica,
`average_moving_statistics` makes every copy the cross-replica mean.

The logical CPU devices must be configured before TensorFlow initializes, and other test files
in this pytest process may already have initialized it: the distributed run is a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.fast

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(
    """
    import json
    import tensorflow as tf
    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from kbatch import layers

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input((8, 3))
        x = keras.layers.Conv1D(6, 3, padding="same")(inputs)
        x = layers.get("batch", momentum=0.5, name="bn")(x)
        x = keras.layers.Conv1D(6, 3, padding="same")(x)
        x = layers.get("ghost_batch", virtual_batch_size=2, momentum=0.5, name="ghost")(x)
        x = keras.layers.Conv1D(6, 3, padding="same")(x)
        x = layers.get("switchable", momentum=0.5, name="switchable")(x)
        outputs = keras.layers.Dense(1)(keras.layers.Flatten()(x))
        model = keras.Model(inputs, outputs)
        optimizer = keras.optimizers.SGD(0.01)

    # Global batch 8: replica 0 gets the first 4 examples (shifted by +3), replica 1 the last 4.
    rng = np.random.default_rng(0)
    features = rng.normal(size=(32, 8, 3)).astype("float32")
    features[np.arange(32) % 8 < 4] += 3.0
    labels = rng.normal(size=(32, 1)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8)

    @tf.function
    def train_step(batch):
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(model(x, training=True) - y)) / 8.0
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        return strategy.reduce("SUM", strategy.run(step, args=batch), axis=None)

    losses = [float(train_step(b)) for b in strategy.experimental_distribute_dataset(dataset)]

    def copies():
        return {
            v.path: [t.numpy().tolist() for t in strategy.experimental_local_results(v.value)]
            for v in model.non_trainable_variables
        }

    before = copies()
    read_before = {v.path: v.numpy().tolist() for v in model.non_trainable_variables}
    layers.average_moving_statistics(model, strategy)
    after = copies()
    saved = {v.path: w.tolist() for v, w in zip(model.weights, model.get_weights()) if v.path in after}
    # Averaged again before every evaluation: TensorFlow warned of retracing from the 5th call on.
    import logging
    warned = []
    logging.getLogger("tensorflow").addHandler(
        type("Keep", (logging.Handler,), {"emit": lambda self, record: warned.append(record.getMessage())})())
    for _ in range(8):
        layers.average_moving_statistics(model, strategy)
    print(json.dumps(dict(losses=losses, before=before, read_before=read_before, after=after, saved=saved,
                          warned=warned)))
    """
)


@pytest.fixture(scope="module")
def run():
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_train_step_runs_and_moving_statistics_are_finite(run):
    assert len(run["losses"]) == 4 and np.isfinite(run["losses"]).all()
    names = {path.split("/")[-2] for path in run["before"]}
    assert {"bn", "ghost", "switchable"} <= names
    for copies in run["before"].values():
        assert np.isfinite(copies).all()


def test_keras_keeps_one_diverging_copy_per_replica_and_reads_replica_0(run):
    for path, (replica0, replica1) in run["before"].items():
        assert np.abs(np.subtract(replica0, replica1)).max() > 1e-2, path
        np.testing.assert_array_equal(run["read_before"][path], replica0)


def test_average_makes_every_copy_the_cross_replica_mean(run):
    for path, copies in run["after"].items():
        mean = np.mean(run["before"][path], axis=0)
        for copy in copies:
            np.testing.assert_allclose(copy, mean, atol=1e-6)
        np.testing.assert_allclose(run["saved"][path], mean, atol=1e-6)  # what model.save writes


def test_averaging_again_traces_nothing_new(run):
    """It traced a new tf.function at every call: TensorFlow warned of excessive retracing (#31)."""
    assert [message for message in run["warned"] if "retracing" in message] == []
