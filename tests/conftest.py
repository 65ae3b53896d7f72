"""Test setup: 4 logical CPU devices (so `cpu:2` and `cpu:4` run in one process) and small,
fast configs on the locally generated MNIST-1D."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

import kbatch  # noqa: E402

kbatch.distribute.configure_logical_cpus(4)


def small_config(model_dir, **overrides):
    """The default config, shrunk to seconds: mnist1d/original, a narrow run, one device."""
    from kbatch.configs import mnist1d_cnn

    config = mnist1d_cnn.get_config()
    config.dataset = "mnist1d/original"
    config.batch_size = 128
    config.base_batch_size = 128
    config.num_epochs = 2
    config.warmup_epochs = 0.5
    config.steps_per_loop = 10
    config.strategy = "one_device"
    config.model_dir = str(model_dir)
    config.deterministic = True
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture
def make_config(tmp_path):
    counter = iter(range(1000))
    return lambda **overrides: small_config(tmp_path / f"run{next(counter)}", **overrides)
