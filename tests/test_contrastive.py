"""The contrastive task (SimCLR's NT-Xent) against a NumPy formula, and its negatives from the
whole global batch on every backend: trained on one device, `cpu:2` and `cpu:4` (TensorFlow's
replicas gather every replica's projections; JAX's step sees the global array), the loss of each
update and the weights after it are the one-device run's; a loss over each replica's own batch
(no gather) is not. A linear projection keeps float rounding from growing."""

import io
import os
import pathlib
import sys

import keras
import numpy as np
import pytest
from contrastive_setup import BATCH, TEMPERATURE, contrastive_config, projection, two_view_data

import kbatch
from kbatch.launcher import launch
from kbatch.training import Contrastive

pytestmark = pytest.mark.components


def nt_xent(z, temperature):
    """NT-Xent (Chen et al. 2020, eq. 1) view by view: [n] mean of each example's two views' losses,
    and whether each view's most similar other view is its partner (mean of the two)."""
    n = len(z)
    views = np.concatenate([z[:, 0], z[:, 1]]).astype(np.float64)
    views /= np.linalg.norm(views, axis=1, keepdims=True)
    losses, correct = np.zeros(2 * n), np.zeros(2 * n)
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        others = [k for k in range(2 * n) if k != i]
        similarity = {k: views[i] @ views[k] / temperature for k in others}
        losses[i] = np.log(sum(np.exp(s) for s in similarity.values())) - similarity[partner]
        correct[i] = max(others, key=similarity.get) == partner
    return (losses[:n] + losses[n:]) / 2, (correct[:n] + correct[n:]) / 2


def _values(task, z, **weights):
    values = task.per_example(np.zeros(len(z)), z, **weights)
    return keras.ops.convert_to_numpy(values["loss"]), keras.ops.convert_to_numpy(values["partner_accuracy"])


def test_per_example_is_nt_xent():
    z = np.random.default_rng(0).normal(size=(5, 2, 3)).astype(np.float32)
    z[3, 1] = z[3, 0] + 0.01  # one example whose views agree: its views find each other
    got_loss, got_accuracy = _values(Contrastive(temperature=0.2), z)
    loss, accuracy = nt_xent(z, 0.2)
    np.testing.assert_allclose(got_loss, loss, rtol=1e-5)
    np.testing.assert_allclose(got_accuracy, accuracy)
    assert accuracy[3] == 1.0


def test_padding_is_nobodys_negative_and_groups_keep_their_own():
    z = np.random.default_rng(1).normal(size=(6, 2, 3)).astype(np.float32)
    weights = np.array([1, 1, 0, 1, 0, 1], np.float32)  # the evaluation's padded copies: weight 0
    real = weights > 0
    got, _ = _values(Contrastive(0.3), z, weights=weights)
    np.testing.assert_allclose(got[real], nt_xent(z[real], 0.3)[0], rtol=1e-5)
    apart, _ = _values(Contrastive(0.3, groups=2), z)  # rows [0, 3) and [3, 6): as on two replicas
    np.testing.assert_allclose(apart, np.concatenate([nt_xent(z[:3], 0.3)[0], nt_xent(z[3:], 0.3)[0]]), rtol=1e-5)
    assert np.all(apart < _values(Contrastive(0.3), z)[0])  # fewer negatives, a smaller loss
    alone, _ = _values(Contrastive(0.3, groups=4), z[:2])  # more groups than rows (a 2-example check)
    np.testing.assert_array_equal(alone, [0.0, 0.0])  # each view's only candidate is its partner


class PerReplicaNegatives(Contrastive):
    """The same loss over each replica's own examples: what a per-replica loss computes."""

    over_batch = False


def _train(make_config, strategy, task, updates=4):
    config = make_config(**contrastive_config(strategy, updates))
    run = kbatch.training.build_run(config, model_fn=projection, task=task, data=two_view_data())
    initial = [w.copy() for w in run.model.get_weights()]
    try:
        loop = run.run_loop()
        return initial, loop.records["loss"] / loop.records["count"], run.model.get_weights()
    finally:
        run.close()


def test_negatives_come_from_the_whole_global_batch_on_every_replica_count(make_config):
    task = Contrastive(temperature=TEMPERATURE)
    initial, losses, weights = _train(make_config, "one_device", task)
    kernel, bias = initial
    first = two_view_data().examples_at(0, BATCH, 0)[0]
    expected, _ = nt_xent(first @ kernel + bias, TEMPERATURE)
    np.testing.assert_allclose(losses[0], expected.mean(), rtol=1e-5)  # the first update's loss, by NumPy
    assert not np.allclose(weights[0], kernel)
    for strategy in ("cpu:2", "cpu:4"):
        _, replica_losses, replica_weights = _train(make_config, strategy, task)
        np.testing.assert_allclose(replica_losses, losses, rtol=1e-5, err_msg=strategy)
        for got, want in zip(replica_weights, weights):
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=strategy)


@pytest.mark.tensorflow_only
def test_a_loss_over_each_replicas_own_batch_is_another_loss_and_groups_compute_it(make_config):
    """On TensorFlow without the gather each replica's examples meet only each other: another
    loss, which `groups` (config.negatives="replica") computes on one device (on JAX the step
    always sees the global array, so there is no per-replica loss to compare with)."""
    _, losses, weights = _train(make_config, "one_device", Contrastive(temperature=TEMPERATURE))
    _, apart, apart_weights = _train(make_config, "cpu:2", PerReplicaNegatives(temperature=TEMPERATURE))
    assert np.all(apart < losses - 1e-3)  # fewer negatives: an easier, smaller loss
    assert np.abs(apart_weights[0] - weights[0]).max() > 1e-4
    _, grouped, grouped_weights = _train(make_config, "one_device", Contrastive(temperature=TEMPERATURE, groups=2))
    np.testing.assert_allclose(grouped, apart, rtol=1e-5)
    for got, want in zip(grouped_weights, apart_weights):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_accumulation_which_would_split_the_batch_is_refused_in_one_line(make_config):
    config = make_config(batch_size=BATCH, base_batch_size=BATCH, norm="none", accumulation_steps=2)
    with pytest.raises(ValueError, match=r"^config.accumulation_steps=2: Contrastive's loss couples the examples"):
        kbatch.training.build_run(config, model_fn=projection, task=Contrastive(), data=two_view_data())


def test_data_of_three_views_is_one_line_before_anything_is_written(make_config):
    views = np.zeros((64, 3, 40, 1), np.float32)  # three views of each example
    data = kbatch.data.from_arrays(views, np.zeros(64, np.int32), eval=(views[:8], np.zeros(8, np.int32)))
    config = make_config(task="contrastive", batch_size=32, base_batch_size=32)
    with pytest.raises(ValueError, match=r"^config.task='contrastive' takes two views .* shape \(3, 40, 1\)"):
        kbatch.training.build_run(config, data=data)
    assert not os.path.exists(config.model_dir)


def test_outputs_that_are_not_two_views_are_refused():
    with pytest.raises(ValueError, match=r"must be \[batch, 2, dim\]"):
        Contrastive().per_example(np.zeros(4), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Contrastive(temperature=0)


@pytest.mark.tensorflow_only
def test_two_workers_gather_the_negatives_of_both(make_config, tmp_path):
    config = make_config(**contrastive_config("multiworker", 4))
    worker = str(pathlib.Path(__file__).resolve().parent / "contrastive_worker.py")
    out = io.StringIO()
    code = launch([sys.executable, worker, config.to_json()], 2, timeout_s=150, grace_s=2.0, stdout=out, stderr=out)
    assert code == 0, out.getvalue()[-4000:]
    reference = make_config(**contrastive_config("one_device", 4))
    task = Contrastive(temperature=TEMPERATURE, probe=False)
    kbatch.training.train(reference, model_fn=projection, task=task, data=two_view_data(), verbose=False)
    for got, want in zip(_weights(config.model_dir), _weights(reference.model_dir)):
        np.testing.assert_allclose(got, want, atol=1e-5)


def _weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()


def test_a_contrastive_config_on_data_it_cannot_augment_is_one_line(make_config):
    config = make_config(task="contrastive", dataset="pystdlib_bytes/seq128", model="transformer_lm", norm="layer")
    with pytest.raises(ValueError, match=r"^config.task='contrastive' augments signals"):
        kbatch.training.build_run(config)


class _Crash(kbatch.training.Action):
    """Dies after the loop that ends at update 20 (its checkpoint, every 10 updates, is written)."""

    def after_loop(self, run, loop):
        if run.step >= 20:
            raise RuntimeError("crashed at update 20")


def test_the_contrastive_config_trains_reports_the_probe_measures_the_noise_and_resumes_bitwise(make_config):
    """`task="contrastive"` on MNIST-1D with batch norm: the linear probe is the run's accuracy,
    the noise scale is measured (its parts: the global loss through each half), the model saves
    whole and reloads, and a run killed after update 20 resumes to the same weights bitwise."""
    fields = dict(
        task="contrastive",
        num_epochs=1,
        checkpoint_every=10,
        probe_examples=1000,
        projection_dims=(32, 16),
        noise_scale_every=10,
    )
    whole = make_config(**fields)
    result = kbatch.training.train(whole, verbose=False)
    assert 0.1 < result["final_eval_accuracy"] <= 1.0  # the probe's; chance: 0.1
    assert result["monitor"] == "accuracy" and result["best_eval_accuracy"] >= result["final_eval_accuracy"]
    assert result["final_eval_loss"] < np.log(2 * 128 - 1) - 0.3  # below picking the partner at random
    points = result["noise_scale"]  # early on the unbiased |G|^2 may be negative: B_simple is then NaN
    assert [p["step"] for p in points] == [10, 20, 30] and all(np.isfinite(p["trace_sigma"]) for p in points)
    assert points[-1]["b_simple"] > 0
    model = keras.models.load_model(os.path.join(whole.model_dir, "model.keras"))  # saved whole, reloaded
    views = np.random.default_rng(0).normal(size=(3, 2, 40, 1)).astype(np.float32)
    assert keras.ops.convert_to_numpy(model(views)).shape == (3, 2, 16)
    assert keras.ops.convert_to_numpy(model.represent(views[:, 0])).shape == (3, 1280)
    resumed = make_config(**fields)
    with pytest.raises(RuntimeError, match="crashed at update 20"):
        kbatch.training.train(resumed, actions=[_Crash()], verbose=False)
    assert kbatch.training.train(resumed, verbose=False)["steps"] > 20  # restores update 20: weights, views, stream
    for a, b in zip(_weights(whole.model_dir), _weights(resumed.model_dir)):
        np.testing.assert_array_equal(b, a)


def _half_gradients(kernel, bias, x):
    """The global loss's gradients through two copies of the weights, one for each half of the
    batch (the backend's own autodiff: TensorFlow's tape or `jax.grad`): two [kernel, bias]."""

    def loss(first, second):
        half = BATCH // 2
        outputs = keras.ops.concatenate([x[:half] @ first[0] + first[1], x[half:] @ second[0] + second[1]], 0)
        return keras.ops.sum(Contrastive(TEMPERATURE).per_example(None, outputs)["loss"]) / BATCH

    if keras.backend.backend() == "jax":
        import jax

        return [
            [np.asarray(g) for g in part] for part in jax.grad(loss, argnums=(0, 1))([kernel, bias], [kernel, bias])
        ]
    import tensorflow as tf

    copies = [[tf.Variable(kernel), tf.Variable(bias)] for _ in range(2)]
    with tf.GradientTape() as tape:
        value = loss(*copies)
    return [[g.numpy() for g in part] for part in tape.gradient(value, copies)]


@pytest.mark.parametrize("strategy", ["one_device", "cpu:2"])
def test_the_noise_scales_parts_are_the_global_loss_through_each_halfs_examples(make_config, strategy):
    """Each part's gradient is the global loss's through its own examples' outputs (a replica's on
    TensorFlow's cpu:2, a half of the batch's on one device and on JAX): by two copies of the
    weights, one for each half of the batch, differentiated apart."""
    config = make_config(**contrastive_config(strategy, 2), noise_scale_every=1)
    run = kbatch.training.build_run(config, model_fn=projection, task=Contrastive(TEMPERATURE), data=two_view_data())
    kernel, bias = run.model.get_weights()
    try:
        recorded = run.run_loop().records["small_grad_sq"][0]
    finally:
        run.close()
    first, second = _half_gradients(kernel, bias, two_view_data().examples_at(0, BATCH, 0)[0])
    squares = [sum(float(np.sum(g**2)) for g in part) for part in (first, second)]
    np.testing.assert_allclose(recorded, 2 * sum(squares), rtol=1e-4)  # parts x the parts' summed squares
    whole = sum(float(np.sum((a + b) ** 2)) for a, b in zip(first, second))
    assert abs(whole - sum(squares)) > 1e-3 * whole  # the parts are not the whole
