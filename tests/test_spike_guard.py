"""The loss-spike guard: its rule against a NumPy transcription (running mean and variance of the
loss, a spike past k standard deviations scaled by k / z and taken in at mean + k std, nothing
guarded during the warmup), in training on this backend (`components`: CI runs it on
JAX too), and refused with the optimizers whose steps it cannot scale."""

import keras
import numpy as np
import pytest

from kbatch.training.transforms import spike_guard

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX


def reference(losses, k):
    mean = square = 0.0
    factors = []
    for n, loss in enumerate(losses):
        std = np.sqrt(max(square - mean * mean, 0.0))
        z = (loss - mean) / max(std, 1e-12)
        spike = n >= spike_guard.WARMUP and z > k
        factors.append(k / z if spike else 1.0)
        taken = mean + k * std if spike else loss
        d = spike_guard.DECAY
        mean, square = (taken, taken**2) if n == 0 else (d * mean + (1 - d) * taken, d * square + (1 - d) * taken**2)
    return factors, (mean, square)


def test_the_rule_against_numpy():
    rng = np.random.default_rng(0)
    losses = list(2.0 + 0.1 * rng.normal(size=60))
    losses[10] = 9.0  # inside the warmup: not guarded
    losses[40] = 8.0  # far up, even in a band the warmup spike widened
    statistics = [np.float32(0.0)] * 3
    got = []
    for loss in losses:
        factor, statistics = spike_guard.guard(np.float32(loss), statistics, 3.0)
        got.append(float(factor))
    expected, (mean, square) = reference(losses, 3.0)
    np.testing.assert_allclose(got, expected, rtol=2e-4)
    assert got[10] == 1.0 and got[40] < 0.5 and sum(f < 1 for f in got) <= 2
    np.testing.assert_allclose([float(statistics[0]), float(statistics[1])], [mean, square], rtol=1e-4)
    assert float(statistics[2]) == len(losses)


def test_a_guarded_run_records_the_updates_it_scaled(make_config):
    from smooth_model import linear_model

    from kbatch.training import train

    # At lr 2 softmax regression's loss jumps about (31 updates scaled, measured on TensorFlow).
    config = make_config(loss_spike_guard=1.0, num_epochs=3, base_learning_rate=2.0)
    result = train(config, model_fn=linear_model, verbose=False)
    spikes = result["loss_spikes"]
    assert spikes and all(spike_guard.WARMUP < s["step"] <= result["steps"] for s in spikes)
    assert all(0.0 < s["factor"] < 1.0 for s in spikes)
    unguarded = train(make_config(num_epochs=3, base_learning_rate=2.0), model_fn=linear_model, verbose=False)
    assert unguarded["loss_spikes"] == [] and unguarded["final_eval_loss"] != result["final_eval_loss"]
    model = keras.models.load_model(f"{config.model_dir}/model.keras")
    assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.parametrize("optimizer", ["adam", "lars"])
def test_optimizers_that_normalize_the_gradient_are_refused(make_config, optimizer):
    from kbatch.training import train

    config = make_config(loss_spike_guard=3.0, optimizer=optimizer)
    with pytest.raises(
        ValueError,
        match=rf"^config.loss_spike_guard=3.0: scales the update's gradient, which is "
        rf"its learning rate only for SGD \(sgd, momentum, nesterov\); {optimizer} ",
    ):
        train(config, verbose=False)


def test_its_statistics_are_restored_with_the_checkpoint(make_config):
    from smooth_model import linear_model

    from kbatch.training import build_run

    config = make_config(loss_spike_guard=1.0, num_epochs=2, base_learning_rate=2.0)
    run = build_run(config, model_fn=linear_model)
    run.train(verbose=False)

    def statistics(optimizer):
        return [float(v.numpy()) for v in optimizer.variables if "loss_spike" in v.path]

    again = build_run(config, model_fn=linear_model)  # restores the last checkpoint, the run's end
    assert again.step == run.step and statistics(again.optimizer) == statistics(run.optimizer)
    assert statistics(run.optimizer)[2] == run.step  # one loss taken in per update
