"""The trainer's learning-rate schedule and batch-size phases, against closed forms: the global
batch changes where the config says, the LR follows each phase's scaled peak times the epoch
shape, batch annealing and its LR-decay twin see the same lr / B in every epoch, and the
rescaled recipe reaches the model's BN layers and Adam's betas."""

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from smooth_model import smooth_model

import kbatch  # noqa: F401  (registers the layers for load_model)
from kbatch.configs import mnist1d_cnn
from kbatch.training import resolve, train
from kbatch.training.config import recipe

N = 4000  # mnist1d/original training examples


def _scalars(model_dir, run):
    values = {}
    directory = os.path.join(model_dir, run)
    for name in os.listdir(directory):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            for value in event.summary.value:
                number = tf.make_ndarray(value.tensor) if value.HasField("tensor") else value.simple_value
                values.setdefault(value.tag, {})[event.step] = float(number)  # TF's writer; kbatch's own on JAX
    return values


def _cosine_shape(epoch, warmup, num_epochs):
    """Linear warmup to 1, then cosine decay to 0 at the end (Loshchilov & Hutter 2017)."""
    if epoch < warmup:
        return epoch / warmup
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (num_epochs - warmup)))


def test_the_batch_grows_at_the_boundary_and_the_lr_follows_its_phase(make_config):
    config = make_config(batch_boundaries=(1.0,), batch_sizes=(512,), warmup_epochs=0.5)
    result = train(config, verbose=False)
    # Phase 0 takes the updates that reach epoch 1 (its last batch runs past it); phase 1 the rest.
    phase0 = math.ceil(N / 128)
    phase1 = math.ceil((2 * N - phase0 * 128) / 512)
    assert result["batch_sizes"] == [128, 512]
    assert result["steps"] == phase0 + phase1
    assert result["examples_seen"] == phase0 * 128 + phase1 * 512
    values = _scalars(config.model_dir, "train")
    for step, batch in values["global_batch_size"].items():
        assert batch == (128 if step <= phase0 else 512), step
    for step, lr in values["learning_rate"].items():
        seen = (step - 1) * 128 if step <= phase0 else phase0 * 128 + (step - 1 - phase0) * 512
        peak = 0.05 * (128 if step <= phase0 else 512) / 128  # linear rule from the base batch
        assert lr == pytest.approx(peak * _cosine_shape(seen / N, 0.5, 2), rel=1e-4, abs=1e-7), step
    # Against examples seen, the batch size changes at 4,096 examples.
    by_examples = _scalars(config.model_dir, "examples")["global_batch_size"]
    assert {seen: b for seen, b in by_examples.items() if seen in (4096 - 128, 4096)} == {3968: 128, 4096: 512}


def test_phased_runs_on_one_device_and_cpu2_end_with_the_same_weights(make_config):
    runs = [make_config(batch_boundaries=(1.0,), batch_sizes=(256,), strategy=s) for s in ("one_device", "cpu:2")]
    for config in runs:
        train(config, model_fn=smooth_model, verbose=False)
    weights = [keras.models.load_model(os.path.join(c.model_dir, "model.keras")).get_weights() for c in runs]
    for a, b in zip(*weights):
        np.testing.assert_allclose(b, a, atol=1e-5)


def test_batch_annealing_and_its_lr_decay_twin_see_the_same_lr_per_batch(make_config):
    """Smith et al. 2018: multiply the batch by f where the step schedule divides the LR by f."""
    common = dict(decay="step", decay_boundaries=(1.0, 2.0), decay_factor=2.0, num_epochs=3, warmup_epochs=0.5)
    decay = make_config(**common)
    anneal = make_config(anneal_batch=True, **common)
    decay_result, anneal_result = train(decay, verbose=False), train(anneal, verbose=False)
    assert anneal_result["batch_sizes"] == [128, 256, 512] and decay_result["batch_sizes"] == [128] * 3
    assert anneal_result["steps"] < decay_result["steps"]
    ratios = []
    for config in (decay, anneal):
        values = _scalars(config.model_dir, "examples")
        ratios.append(
            {seen: values["learning_rate"][seen] / batch for seen, batch in values["global_batch_size"].items()}
        )
    decay_ratio, anneal_ratio = ratios
    assert set(anneal_ratio) <= set(decay_ratio)  # every annealing update starts where a twin's does
    for seen, ratio in anneal_ratio.items():
        epoch = seen / N
        want = 0.05 / 2 ** sum(epoch >= b for b in (1.0, 2.0)) * min(epoch / 0.5, 1.0) / 128
        assert ratio == pytest.approx(want, rel=1e-4, abs=1e-12), seen
        assert ratio == pytest.approx(decay_ratio[seen], rel=1e-4, abs=1e-12), seen


@pytest.mark.components
def test_a_seesaw_run_trains_each_phase_at_its_batch_and_rate(make_config):
    """batch_schedule="seesaw": at each step-decay boundary the batch doubles and the rate is
    divided by sqrt(2) (the step schedule would halve it), read back from every update's record."""
    config = make_config(
        decay="step",
        decay_boundaries=(1.0, 2.0),
        decay_factor=2.0,
        num_epochs=3,
        warmup_epochs=0.5,
        batch_schedule="seesaw",
    )
    result = train(config, verbose=False)
    assert result["batch_sizes"] == [128, 256, 512]
    values = _scalars(config.model_dir, "examples")
    for seen, batch in values["global_batch_size"].items():
        epoch = seen / N
        phase = sum(epoch >= b for b in (1.0, 2.0))
        assert batch == 128 * 2**phase, seen
        want = 0.05 / 2 ** (phase / 2) * min(epoch / 0.5, 1.0)
        assert values["learning_rate"][seen] == pytest.approx(want, rel=1e-4, abs=1e-9), seen


@pytest.mark.parametrize("rescale", [True, False])
def test_the_rescaled_recipe_reaches_bn_momentum_and_adams_betas(make_config, monkeypatch, rescale):
    built = []
    real_build = kbatch.optimizers.build
    monkeypatch.setattr(kbatch.optimizers, "build", lambda *a, **kw: built.append(real_build(*a, **kw)) or built[-1])
    config = make_config(
        optimizer="adam",
        base_learning_rate=0.002,
        batch_size=256,
        batch_boundaries=(1.0,),
        batch_sizes=(512,),
        bn_momentum=0.9,
        beta_1=0.9,
        beta_2=0.99,
        weight_decay=0.0,
        rescale_recipe=rescale,
    )
    train(config, verbose=False)
    model = keras.models.load_model(os.path.join(config.model_dir, "model.keras"))
    k = 512 / 128 if rescale else 1.0  # the last phase's batch over the base batch
    momenta = [
        layer.momentum for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert momenta and all(m == pytest.approx(0.9**k) for m in momenta)
    (optimizer,) = built
    assert optimizer.beta_1 == pytest.approx(0.9**k) and optimizer.beta_2 == pytest.approx(0.99**k)
    assert optimizer.epsilon == pytest.approx(1e-7 / math.sqrt(k))  # Malladi et al. 2022


def _config(**overrides):
    config = mnist1d_cnn.get_config()
    config.update(
        batch_size=256, base_batch_size=128, base_learning_rate=0.1, num_epochs=10, warmup_epochs=2.0, **overrides
    )
    return config


def test_step_decay_divides_the_scaled_peak_at_each_boundary():
    config = _config(decay="step", decay_boundaries=(5.0, 8.0), decay_factor=10.0)
    schedule = recipe.RunRecipe.from_settings(resolve(config)).learning_rate_schedule(60_000)
    for step in range(0, math.ceil(10 * 60_000 / 256), 37):
        epoch = step * 256 / 60_000
        want = 0.2 * min(epoch / 2.0, 1.0) / 10 ** sum(epoch >= b for b in (5.0, 8.0))
        assert float(schedule(step)) == pytest.approx(want, rel=1e-5, abs=1e-9), step


def test_polynomial_decay_reaches_zero_at_the_end_with_its_power():
    config = _config(decay="polynomial", decay_power=2.0)
    schedule = recipe.RunRecipe.from_settings(resolve(config)).learning_rate_schedule(60_000)
    for step in range(0, math.ceil(10 * 60_000 / 256), 41):
        epoch = step * 256 / 60_000
        want = 0.2 * (epoch / 2.0 if epoch < 2.0 else (1 - (epoch - 2.0) / 8.0) ** 2)
        assert float(schedule(step)) == pytest.approx(want, rel=1e-5, abs=1e-9), step
