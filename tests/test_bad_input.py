"""Bad input gets a clear error naming the field, before training starts and before anything is
written to model_dir; a model_dir holding another run or a user's files is never written into."""

import os
import subprocess
import sys

import forked
import pytest

from kbatch.training import train


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("strategy", "gpu:9", r"config.strategy='gpu:9': must be one of auto, tpu"),
        ("strategy", "cpu:0", r"config.strategy='cpu:0': must be one of .*cpu:N"),
        ("dataset", "svhn", r"config.dataset='svhn': must be a TFDS name of mnist1d"),
        ("model", "vgg", r"config.model='vgg': must be one of 'mnist1d_cnn'"),
        ("norm", "weight", r"config.norm='weight': must be one of 'batch'"),
        ("optimizer", "rmsprop", r"config.optimizer='rmsprop': must be one of 'sgd'"),
        ("batch_size", 0, "config.batch_size=0: must be a positive integer"),
        ("batch_size", -64, "config.batch_size=-64: must be a positive integer"),
        ("base_batch_size", 0, "config.base_batch_size=0: must be a positive integer"),
        ("accumulation_steps", 0, "config.accumulation_steps=0: must be a positive integer"),
        (
            "lr_scaling",
            "cubic",
            r"config.lr_scaling='cubic': must be one of 'linear', 'sqrt', 'none', 'staleness', or a real exponent",
        ),
        ("warmup_epochs", 5.0, "config.warmup_epochs=5.0: must be shorter than config.num_epochs=2"),
        ("mixed_precision", "float16", r"config.mixed_precision='float16': must be one of None, 'float32'"),
        ("target_accuracy", 1.5, r"config.target_accuracy=1.5: must be a finite number in \(0, 1\], or None"),
        ("clip_global_norm", -1.0, "config.clip_global_norm=-1.0: must be a finite number > 0, or None"),
    ],
)
def test_bad_field_is_named_and_nothing_is_written(make_config, field, value, message):
    config = make_config(**{field: value})
    with pytest.raises(ValueError, match=message):
        train(config, verbose=False)
    assert not os.path.exists(config.model_dir)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(decay="step", decay_boundaries=(1.5, 0.5)),
            r"config.decay_boundaries=\(1.5, 0.5\): must be strictly increasing",
        ),
        (
            dict(decay="step", decay_boundaries=(3.0,)),
            r"config.decay_boundaries\[0\]=3.0: must be an epoch in \(0, num_epochs=2\)",
        ),
        (dict(decay="step"), r'config.decay="step" needs config.decay_boundaries'),
        (
            dict(decay="step", decay_boundaries=(1.0,), decay_factor=0.5),
            "config.decay_factor=0.5: must be a finite number > 1",
        ),
        (dict(decay="polynomial", decay_power=0.0), "config.decay_power=0.0: must be a finite number > 0"),
        (dict(batch_boundaries=(1.0,), batch_sizes=()), r"config.batch_sizes \(0 entries\) must have one global batch"),
        (dict(batch_boundaries=(1.0,), batch_sizes=(0,)), r"config.batch_sizes\[0\]=0: must be a positive integer"),
        (dict(anneal_batch=True), r'config.anneal_batch=True .* needs config.decay="step"'),
        (dict(batch_schedule="seesaw"), r"config.batch_schedule='seesaw' doubles the batch .* needs config.decay"),
        (
            dict(decay="step", decay_boundaries=(1.0,), batch_schedule="seesaw", max_batch_size=64),
            "config.max_batch_size=64: must be None or an integer >= batch_size=128",
        ),
        (
            dict(decay="step", decay_boundaries=(1.0,), anneal_batch=True, lr_scaling="none"),
            "config.anneal_batch=True needs an lr_scaling that grows",
        ),
        (
            dict(decay="step", decay_boundaries=(1.0,), anneal_batch=True, max_batch_size=64),
            "config.max_batch_size=64: must be None or an integer >= batch_size=128",
        ),
        (
            dict(strategy="cpu:2", batch_boundaries=(1.0,), batch_sizes=(257,)),
            r"batch schedule phase 1 \(epochs 1.0-end\): global batch 257 does not divide by 2 replicas",
        ),
    ],
)
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


def _kbatch_train(*flags, cwd=None):
    """kbatch-train FLAGS, forked (tests/forked.py)."""
    return forked.run([forked.PROGRAM, *flags], cwd=cwd, timeout=300)


@pytest.mark.parametrize(
    "flag, closest", [("--config.bacth_size=8", "batch_size"), ("--config.qqq_unheard_of=5", None)]
)
def test_unknown_config_field_on_the_command_line_is_one_line_naming_the_closest(tmp_path, flag, closest):
    run = _kbatch_train(flag, f"--config.model_dir={tmp_path}/x")
    assert run.returncode == 2
    field = flag[len("--config.") :].split("=")[0]
    lines = [line for line in run.stderr.splitlines() if line.startswith("kbatch-train")]
    assert len(lines) == 1 and lines[0].startswith(f"kbatch-train: config.{field}: no such field")
    assert (f"did you mean {closest}" in lines[0]) if closest else ("did you mean" not in lines[0])
    assert "Traceback" not in run.stderr
    assert not os.path.exists(tmp_path / "x")


def test_unknown_config_field_from_python_names_the_closest(make_config):
    config = make_config()
    config.warmup_epoch = 1.0
    with pytest.raises(ValueError, match=r"config.warmup_epoch: no such field \(did you mean warmup_epochs\b"):
        train(config, verbose=False)
    assert not os.path.exists(config.model_dir)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(norm="ghost_batch"), r"config.norm='ghost_batch' needs config.virtual_batch_size"),
        (dict(norm="group", norm_groups=7), r"config.norm_groups=7 \(norm=.group. in mnist1d_cnn\): must be a divisor"),
    ],
)
def test_a_config_that_fails_while_the_model_is_built_leaves_no_folder(make_config, overrides, message):
    config = make_config(**overrides)
    with pytest.raises(ValueError, match=message):
        train(config, verbose=False)
    assert not os.path.exists(config.model_dir)
    config.update(norm="batch")  # the corrected command then runs in the same folder
    assert train(config, verbose=False)["steps"] > 0


def test_an_lr_scaling_exponent_from_the_command_line_is_a_number():
    from kbatch.configs import mnist1d_cnn
    from kbatch.training import resolve

    config = mnist1d_cnn.get_config()
    config.lr_scaling = "0.5"  # what --config.lr_scaling=0.5 sets: the field is a string
    assert resolve(config).lr_scaling == 0.5


@pytest.mark.parametrize(
    "config_file, message",
    [
        ("nothere.py", "--config=nothere.py: no such config file."),
        ("not_a_config.py", "--config=not_a_config.py: the file has no get_config() returning a config"),
    ],
)
def test_a_config_file_that_does_not_load_is_one_line(tmp_path, config_file, message):
    (tmp_path / "not_a_config.py").write_text("x = 1\n")
    run = _kbatch_train(f"--config={config_file}", cwd=tmp_path)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.startswith("kbatch-train")]
    assert len(lines) == 1 and lines[0].startswith(f"kbatch-train: {message}") and "Traceback" not in run.stderr
    assert not (tmp_path / "runs").exists()


def test_help_shows_every_field_and_exits_0():
    from kbatch.training.config import schema

    run = subprocess.run([sys.executable, "-m", "kbatch.train", "--help"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0
    shown = [line.split()[0] for line in run.stdout.splitlines() if line.startswith("  ") and line.split()]
    assert [name for name in shown if name in schema.NAMES] == list(schema.NAMES)


def test_a_tpu_strategy_without_a_tpu_tensorflow_points_to_jax_and_the_pin(make_config, monkeypatch):
    """TensorFlow 2.21 has no TPU support. The resolver is replaced by one that fails as a
    resolver without a TPU does: the real one would look for a TPU over the network."""
    import tensorflow as tf

    def no_tpu(tpu=None):
        raise ValueError("Please provide a TPU Name to connect to.")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", no_tpu)
    config = make_config(strategy="tpu:kbatch-test-tpu")
    with pytest.raises(
        ValueError,
        match=r"config.strategy: TensorFlow .* cannot reach a TPU \(Please provide .*"
        r"--config.backend=jax.*tensorflow-tpu==2.19.1",
    ):
        train(config, verbose=False)
    assert not os.path.exists(config.model_dir)
