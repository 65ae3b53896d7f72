"""The LARS configs: the ImageNet one is the MLPerf ResNet-50 recipe (schedule against its closed
form, optimizer settings), and both train a few steps with LARS on TFDS mock data (the real data
needs a download), with biases and BN parameters left out of the trust ratio."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

import kbatch
from kbatch.configs import cifar10_resnet20_lars, imagenet_resnet50_lars
from kbatch.data import preprocessing
from kbatch.training import resolve, train, validate
from kbatch.training.config import recipe

IMAGENET_TRAIN = 1_281_167


def mlperf_learning_rate(step, peak, warmup_steps, total_steps, power):
    """MLPerf's LARS schedule (lars_util.poly_rate_schedule): a linear ramp from 0 to the peak,
    then peak * (1 - progress) ** power down to 0 at the last step (MLPerf ends at 1e-4)."""
    if step < warmup_steps:
        return peak * step / warmup_steps
    return peak * (1 - min(step - warmup_steps, total_steps - warmup_steps) / (total_steps - warmup_steps)) ** power


def test_imagenet_config_is_the_mlperf_batch_32k_recipe():
    config = imagenet_resnet50_lars.get_config()
    assert validate(config) is None
    steps_per_epoch = IMAGENET_TRAIN / config.batch_size  # 39.1
    total = config.num_epochs * steps_per_epoch
    assert 2983 <= total < 2983 + steps_per_epoch  # MLPerf: 2,983 steps
    warmup = 25 * steps_per_epoch
    run_recipe = recipe.RunRecipe.from_settings(resolve(config))
    assert run_recipe.peak_learning_rate() == pytest.approx(31.2)
    assert (config.decay, config.decay_power) == ("polynomial", 2.0)
    schedule = run_recipe.learning_rate_schedule(IMAGENET_TRAIN)
    for step in (0, 1, 300, 977, 978, 979, 2000, 3009, 3010):
        want = mlperf_learning_rate(step, 31.2, warmup, total, 2.0)
        assert float(schedule(step)) == pytest.approx(want, rel=1e-5, abs=1e-6), step

    optimizer = kbatch.optimizers.build(config, 1.0)
    assert isinstance(optimizer, kbatch.optimizers.LARS)
    settings = optimizer.get_config()
    assert (settings["momentum"], settings["weight_decay"], settings["trust_coefficient"], settings["epsilon"]) == (
        0.9,
        1e-4,
        0.001,
        1e-5,
    )
    assert config.mixed_precision == "mixed_bfloat16" and config.target_accuracy == 0.759


def test_cifar10_config_moves_the_mlperf_peak_to_its_batch_by_the_linear_rule():
    config = cifar10_resnet20_lars.get_config()
    assert validate(config) is None
    run_recipe = recipe.RunRecipe.from_settings(resolve(config))
    assert run_recipe.peak_learning_rate() == pytest.approx(31.2 * config.batch_size / 32768)
    steps_per_epoch = 50_000 / config.batch_size
    total, warmup = config.num_epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch
    schedule = run_recipe.learning_rate_schedule(50_000)
    for step in (0, 91, 183, 560, 1098):
        want = mlperf_learning_rate(step, run_recipe.peak_learning_rate(), warmup, total, 2.0)
        assert float(schedule(step)) == pytest.approx(want, rel=1e-5, abs=1e-6), step


@pytest.fixture
def spy_on_optimizer(monkeypatch):
    """Keeps the optimizer the trainer builds (it calls `kbatch.optimizers.build`)."""
    built = []
    real_build = kbatch.optimizers.build

    def build(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(kbatch.optimizers, "build", build)
    return built


def check_lars_adapted_only_the_kernels(optimizer, config):
    assert isinstance(optimizer, kbatch.optimizers.LARS)
    assert optimizer.trust_coefficient == config.trust_coefficient
    ratios = optimizer.trust_ratios()
    kernels = {p: r for p, r in ratios.items() if p.endswith("/kernel")}
    others = {p: r for p, r in ratios.items() if not p.endswith("/kernel")}
    assert kernels and others
    # Adapted: trust_coefficient * ||w|| / ||g + wd w|| is a finite positive number other than 1.
    assert all(np.isfinite(r) and r > 0 and r != 1.0 for r in kernels.values())
    assert {p.rsplit("/", 1)[1] for p in others} <= {"bias", "gamma", "beta"}
    assert set(others.values()) == {1.0}


def test_cifar10_lars_config_trains_on_mock_data(tmp_path, spy_on_optimizer):
    config = cifar10_resnet20_lars.get_config()
    config.update(
        batch_size=32,
        num_epochs=1,
        warmup_epochs=0.5,
        steps_per_loop=2,
        strategy="cpu:2",
        model_dir=str(tmp_path / "run"),
        jit_compile=False,
    )
    with tfds.testing.mock_data(num_examples=64):
        result = train(config, verbose=False)
    assert result["steps"] == 2 and result["examples_seen"] == 64
    assert np.isfinite(result["final_eval_loss"])
    check_lars_adapted_only_the_kernels(spy_on_optimizer[-1], config)


def test_imagenet_lars_config_trains_resnet50_on_mock_data(tmp_path, monkeypatch, spy_on_optimizer):
    # The pipeline reads the crop size from preprocessing.IMAGENET_SIZE: 64 keeps ResNet-50 fast
    # on a CPU (every layer is the same, only the spatial size shrinks).
    monkeypatch.setattr(preprocessing, "IMAGENET_SIZE", 64)
    config = imagenet_resnet50_lars.get_config()
    config.update(
        batch_size=4,
        num_epochs=1,
        warmup_epochs=0.5,
        steps_per_loop=2,
        strategy="one_device",
        mixed_precision=None,
        model_dir=str(tmp_path / "run"),
        jit_compile=False,
    )
    seen = {}

    def model_fn(info):
        seen["info"] = info
        seen["model"] = kbatch.models.get(config.model, num_classes=info.num_classes, input_shape=info.input_shape)
        return seen["model"]

    with tfds.testing.mock_data(num_examples=8):
        result = train(config, model_fn=model_fn, verbose=False)
    assert result["steps"] == 2 and result["examples_seen"] == 8
    assert seen["info"].input_shape == (64, 64, 3) and seen["info"].num_classes == 1000
    # He et al. 2016, table 1: ResNet-50 has 25.6M parameters (25.56M with a 1000-way head).
    assert round(seen["model"].count_params() / 1e6, 1) == 25.6
    check_lars_adapted_only_the_kernels(spy_on_optimizer[-1], config)
