"""Clipping after the all-reduce: the update under cpu:2 equals the one-device update.

Keras 3 clips each replica's gradient before the cross-replica sum; the test below shows that
difference on the example of DESIGN.md, then that kbatch's trainer agrees across strategies with
clipping active on every step."""

import os

import keras
import numpy as np
import tensorflow as tf
from smooth_model import smooth_model

import kbatch
from kbatch.training import train


def test_keras_per_replica_clipping_is_not_global_clipping():
    strategy = kbatch.distribute.resolve_strategy("cpu:2")
    with strategy.scope():
        weights = keras.Variable(np.zeros(2, np.float32))
        optimizer = keras.optimizers.SGD(1.0, global_clipnorm=1.0)
        optimizer.build([weights])

    @tf.function
    def step():
        def replica_fn():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            grad = tf.where(tf.equal(replica, 0), tf.constant([10.0, 0.0]), tf.constant([0.0, 10.0]))
            optimizer.apply([grad], [weights])

        strategy.run(replica_fn)

    step()
    # Each replica's [10, 0] is clipped to norm 1 first, then summed: [1, 1], not the global
    # gradient [10, 10] clipped to norm 1, [0.707, 0.707].
    np.testing.assert_allclose(-weights.numpy(), [1.0, 1.0], rtol=1e-6)


def test_clipped_runs_on_one_device_and_cpu2_end_with_the_same_weights(make_config):
    runs = [make_config(num_epochs=1, clip_global_norm=0.05, strategy=s) for s in ("one_device", "cpu:2")]
    for config in runs:
        train(config, model_fn=smooth_model, verbose=False)
    # Clipping was active: every logged gradient norm (before clipping) exceeds the bound.
    event_dir = os.path.join(runs[0].model_dir, "train")
    norms = []
    for name in os.listdir(event_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(event_dir, name)):
            norms += [float(tf.make_ndarray(v.tensor)) for v in event.summary.value if v.tag == "gradient_norm"]
    assert len(norms) == -(-4000 // 128) and min(norms) > 0.05
    one, two = (keras.models.load_model(os.path.join(c.model_dir, "model.keras")).get_weights() for c in runs)
    for a, b in zip(one, two):
        np.testing.assert_allclose(b, a, atol=1e-5)
