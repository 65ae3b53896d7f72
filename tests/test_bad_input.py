"""Bad input gets a clear error naming the field, before training starts and before anything is
written to model_dir; a model_dir holding another run or a user's files is never written into."""

import os

import pytest

from kbatch.training import train


@pytest.mark.parametrize("field, value, message", [
    ("strategy", "gpu:9", "Unknown strategy 'gpu:9'"),
    ("strategy", "cpu:0", "Unknown strategy 'cpu:0'"),
    ("dataset", "svhn", "Unknown dataset 'svhn'"),
    ("model", "vgg", r"config.model='vgg' is not one of"),
    ("norm", "weight", r"config.norm='weight' is not one of"),
    ("optimizer", "rmsprop", r"config.optimizer='rmsprop' is not one of"),
    ("batch_size", 0, "config.batch_size must be a positive integer"),
    ("batch_size", -64, "config.batch_size must be a positive integer"),
    ("base_batch_size", 0, "config.base_batch_size must be a positive integer"),
    ("accumulation_steps", 0, "accumulation_steps must be a positive integer"),
    ("lr_scaling", "cubic", "rule must be one of"),
    ("warmup_epochs", 5.0, "config.warmup_epochs=5.0 must be shorter than config.num_epochs=2"),
    ("mixed_precision", "float16", r"config.mixed_precision='float16' is not one of"),
    ("target_accuracy", 1.5, "config.target_accuracy must be None or in"),
    ("clip_global_norm", -1.0, "config.clip_global_norm must be a number > 0"),
])
def test_bad_field_is_named_and_nothing_is_written(make_config, field, value, message):
    config = make_config(**{field: value})
    with pytest.raises(ValueError, match=message):
        train(config, verbose=False)
    assert not os.path.exists(config.model_dir)


@pytest.mark.parametrize("overrides, message", [
    (dict(decay="step", decay_boundaries=(1.5, 0.5)), r"config.decay_boundaries must be strictly increasing"),
    (dict(decay="step", decay_boundaries=(3.0,)), r"config.decay_boundaries\[0\]=3.0 must be an epoch in \(0, num_epochs=2\)"),
    (dict(decay="step"), r'config.decay="step" needs config.decay_boundaries'),
    (dict(decay="step", decay_boundaries=(1.0,), decay_factor=0.5), "config.decay_factor must be a number > 1.0"),
    (dict(decay="polynomial", decay_power=0.0), "config.decay_power must be a number > 0"),
    (dict(batch_boundaries=(1.0,), batch_sizes=()), r"config.batch_sizes \(0 entries\) must have one global batch"),
    (dict(batch_boundaries=(1.0,), batch_sizes=(0,)), "config.batch_sizes must be a tuple of positive integers"),
    (dict(anneal_batch=True), r'config.anneal_batch=True .* needs config.decay="step"'),
    (dict(decay="step", decay_boundaries=(1.0,), anneal_batch=True, lr_scaling="none"),
     "config.anneal_batch=True needs an lr_scaling that grows"),
    (dict(decay="step", decay_boundaries=(1.0,), anneal_batch=True, max_batch_size=64),
     "config.max_batch_size must be None or an integer >= batch_size=128"),
    (dict(strategy="cpu:2", batch_boundaries=(1.0,), batch_sizes=(257,)),
     r"batch schedule phase 1 \(epochs 1.0-end\): global batch 257 does not divide by 2 replicas"),
])
def test_bad_schedule_fields_are_named_and_nothing_is_written(make_config, overrides, message):
    config = make_config(**overrides)
    with pytest.raises(ValueError, match=message):
        train(config, verbose=False)
    assert not os.path.exists(config.model_dir)


def test_global_batch_that_does_not_divide_by_the_replicas(make_config):
    config = make_config(strategy="cpu:4", batch_size=130)
    with pytest.raises(ValueError, match=r"batch_size=130 \(global\) does not divide by 4 replicas"):
        train(config, verbose=False)
    assert not os.path.exists(config.model_dir)


def test_global_batch_that_does_not_divide_by_replicas_times_accumulation(make_config):
    config = make_config(strategy="cpu:2", batch_size=128, accumulation_steps=3)
    with pytest.raises(ValueError, match=r"2 replicas x accumulation_steps=3"):
        train(config, verbose=False)
    assert not os.path.exists(config.model_dir)


def test_batch_larger_than_the_training_set(make_config):
    config = make_config(batch_size=8192)
    with pytest.raises(ValueError, match="larger than the 4000 training examples"):
        train(config, verbose=False)
    assert not os.path.exists(config.model_dir)


def test_model_dir_with_a_different_run_is_refused(make_config):
    first = make_config(num_epochs=1, warmup_epochs=0.0)
    train(first, verbose=False)
    before = {name: os.path.getmtime(os.path.join(first.model_dir, name)) for name in os.listdir(first.model_dir)}
    second = make_config(num_epochs=1, warmup_epochs=0.0, batch_size=64)
    second.model_dir = first.model_dir
    with pytest.raises(ValueError, match=r"holds a run with a different config \(batch_size: 128 -> 64\)"):
        train(second, verbose=False)
    after = {name: os.path.getmtime(os.path.join(first.model_dir, name)) for name in os.listdir(first.model_dir)}
    assert after == before


def test_model_dir_with_a_users_files_is_refused(make_config, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    config = make_config()
    config.model_dir = str(folder)
    with pytest.raises(ValueError, match="holds files that are not a kbatch run"):
        train(config, verbose=False)
    assert os.listdir(folder) == ["notes.txt"] and (folder / "notes.txt").read_text() == "precious"


def test_unknown_config_field_is_refused_by_the_command_line(tmp_path):
    import subprocess
    import sys
    run = subprocess.run(
        [sys.executable, "-m", "kbatch.train", "--config.bacth_size=8", f"--config.model_dir={tmp_path}/x"],
        capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "bacth_size" in run.stderr
    assert not os.path.exists(tmp_path / "x")
