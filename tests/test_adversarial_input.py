"""Input an adversarial tester tried (#31): each is refused in one line naming what is wrong,
before anything is written, or shown as it is (the console's progress line)."""

import os
import re
import time

import forked
import keras
import pytest

from kbatch.training import Action, Classification, Task, train
from kbatch.training.actions import batch_control


def _kbatch_train(*flags, cwd=None):
    """kbatch-train FLAGS, forked (tests/forked.py)."""
    return forked.run([forked.PROGRAM, *flags], cwd=cwd, timeout=300)


def _one_line(run):
    """The run's one kbatch-train line on stderr (exit 2, no traceback)."""
    lines = [line for line in run.stderr.splitlines() if line.startswith("kbatch-train")]
    assert run.returncode == 2 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return lines[0]


CONFIG_FILES = {
    "syntax.py": ("def get_config(:\n    pass\n", r"--config=syntax.py: SyntaxError at line 1: invalid syntax"),
    "imports.py": (
        "import no_such_module_here\n",
        r"the file does not import: ModuleNotFoundError at line 1: "
        r"No module named 'no_such_module_here'",
    ),
    "raises.py": (
        "def get_config():\n    raise RuntimeError('boom')\n",
        r"get_config\(\) raised RuntimeError at "
        r"line 2: boom",
    ),
    "none.py": (
        "def get_config():\n    pass\n",
        r"get_config\(\) returned NoneType, not an ml_collections."
        r"ConfigDict \(no return statement\?\)",
    ),
    "plain_dict.py": (
        "def get_config():\n    return {'batch_size': 64}\n",
        r"get_config\(\) returned dict, not "
        r"an ml_collections.ConfigDict: wrap it",
    ),
    "config.json": (
        '{\n  "batch_size": 64,\n  "seed": null\n}\n',
        r"--config=config.json: a JSON file; --config "
        r"takes a Python file whose get_config\(\)",
    ),
}


@pytest.mark.parametrize("override", [(), ("--config.dataset=mnist",)], ids=["alone", "with an override"])
@pytest.mark.parametrize("name", list(CONFIG_FILES))
def test_a_config_file_that_does_not_load_is_one_line_naming_the_file_and_line(tmp_path, name, override):
    """#31.5 and #31.24: a traceback, exit 1 (and, with an override, absl's flag-order error)."""
    text, message = CONFIG_FILES[name]
    (tmp_path / name).write_text(text)
    line = _one_line(_kbatch_train(f"--config={name}", *override, cwd=tmp_path))
    assert re.search(message, line), line
    assert os.listdir(tmp_path) == [name]


def test_a_config_value_of_the_wrong_type_gets_the_fields_line(tmp_path):
    """#31.25: "invalid literal for int() with base 10: '1.5'"."""
    line = _one_line(_kbatch_train("--config.staleness=1.5", f"--config.model_dir={tmp_path}/run"))
    assert line == "kbatch-train: config.staleness=1.5: must be an integer >= 0."
    assert not (tmp_path / "run").exists()


def test_check_builds_the_model_so_a_norm_groups_that_does_not_fit_is_caught(tmp_path):
    """#31.22 and #31.23: --check passed norm_groups=7, and training named the layer's `groups=7`."""
    run = _kbatch_train(
        "--config.norm=group", "--config.norm_groups=7", f"--config.model_dir={tmp_path}/run", "--check"
    )
    line = _one_line(run)
    assert (
        line.startswith(
            "kbatch-train: config.norm_groups=7 (norm='group' in mnist1d_cnn): must be a divisor "
            "of the number of channels (32"
        )
        and "one of [1, 2, 4, 8, 16, 32]" in line
    )
    assert not (tmp_path / "run").exists()
    fine = _kbatch_train(
        "--config.norm=group", "--config.norm_groups=8", f"--config.model_dir={tmp_path}/run", "--check"
    )
    assert fine.returncode == 0 and "the config is valid" in fine.stdout and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(staleness=100000000), r"config.staleness=100000000: must be shorter than the run, 63 updates"),
        (dict(staleness=63), r"config.staleness=63: must be shorter than the run, 63 updates"),
        (
            dict(noise_scale_every=64),
            r"config.noise_scale_every=64: the run has 63 updates, so no point would be "
            r"measured: at most 63 \(0: off\)",
        ),
        (
            dict(sharpness_every=3),
            r"config.sharpness_every=3: counts evaluations and the run has 2, so none would be "
            r"measured: at most 2",
        ),
        (
            dict(norm="ghost_batch", virtual_batch_size=7),
            r"config.virtual_batch_size=7: must divide the per-replica "
            r"micro-batch, 128 \(global batch 128 / 1 replica",
        ),
        (
            dict(norm="ghost_batch", virtual_batch_size=48, strategy="cpu:2"),
            r"config.virtual_batch_size=48: must "
            r"divide the per-replica micro-batch, 64",
        ),
        (
            dict(dataset="mnist1d/huge"),
            r"config.dataset='mnist1d/huge': must be an MNIST-1D config: "
            r"'mnist1d/original', 'mnist1d/large'",
        ),
    ],
)
def test_fields_that_do_not_fit_the_run_are_refused_before_anything_is_written(make_config, overrides, message):
    """#31.6, #31.15, #31.25: a delay of 10^8 ran out of memory, one longer than the run trained on
    zero gradients; diagnostics longer than the run measured nothing; a ghost batch that does not
    divide the micro-batch trained; TFDS listed no configs for mnist1d/huge."""
    config = make_config(**overrides)
    with pytest.raises(ValueError, match=message):
        train(config, verbose=False)
    assert not os.path.exists(config.model_dir)


def test_the_longest_delay_and_diagnostics_that_fit_are_accepted(make_config):
    config = make_config(
        staleness=62, noise_scale_every=63, sharpness_every=2, num_epochs=1, warmup_epochs=0.5, accumulation_steps=2
    )  # the noise scale with BN on one device needs it
    # One epoch: 32 updates, one evaluation; these are then too long, the ones that fit are accepted.
    with pytest.raises(ValueError, match="config.staleness=62: must be shorter than the run, 32 updates"):
        train(config, verbose=False)
    config.update(staleness=31, noise_scale_every=32, sharpness_every=1)
    result = train(config, verbose=False)
    assert result["steps"] == 32 and len(result["noise_scale"]) == 1 and len(result["sharpness"]) == 1


class _TensorTask(Classification):
    def per_example(self, labels, outputs):
        return outputs[:, 0]


class _NoLoss(Classification):
    def per_example(self, labels, outputs):
        return {"error": outputs[:, 0]}


class _NoAccuracy(Task):
    monitor, mode = "accuracy", "max"

    def per_example(self, labels, outputs):
        return {"loss": keras.ops.mean(outputs, axis=-1)}


class _Lowest(Classification):
    mode = "lowest"


class _PerClassLoss(Classification):
    def per_example(self, labels, outputs):
        return {"loss": outputs, "accuracy": outputs[:, 0]}


def _five_outputs(info):
    return keras.Sequential([keras.Input(info.input_shape), keras.layers.Flatten(), keras.layers.Dense(5)])


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        (dict(model_fn=lambda info: None), TypeError, r"model_fn returned NoneType: it must return a keras.Model"),
        (
            dict(model_fn=_five_outputs),
            ValueError,
            r"model_fn's model gives outputs of shape \[batch, 5\]; classifying "
            r"mnist1d/original takes \[batch, 10\]: one logit per class",
        ),
        (
            dict(task=_TensorTask()),
            TypeError,
            r"task: _TensorTask.per_example returned \w*Tensor\w*: it must return a "
            r"dict",
        ),
        (dict(task=_NoLoss()), ValueError, r"task: _NoLoss.per_example returned no 'loss' \(only 'error'\)"),
        (
            dict(task=_NoAccuracy()),
            ValueError,
            r"task.monitor='accuracy': not one of the values _NoAccuracy."
            r"per_example returns \('loss'\)",
        ),
        (
            dict(task=_Lowest()),
            ValueError,
            r"task.mode='lowest': must be 'max' \(a larger accuracy is better\) or "
            r"'min'",
        ),
        (
            dict(task=_PerClassLoss()),
            ValueError,
            r"_PerClassLoss.per_example's 'loss' has shape \(2, 10\) for 2 "
            r"examples: each value is one number per example",
        ),
        (dict(task=Classification), TypeError, r"task: a kbatch.training.Task instance, got <class"),
        (
            dict(strategy="one_device"),
            TypeError,
            r"strategy='one_device': a tf.distribute.Strategy object; to choose "
            r"one by name, set config.strategy='one_device'",
        ),
        (
            dict(actions=[lambda run: None]),
            TypeError,
            r"actions: each must be a kbatch.training.Action, got <lambda> "
            r"\(subclass it",
        ),
        (dict(actions=Action()), TypeError, r"actions: a list of kbatch.training.Action objects, got one Action"),
        (
            dict(callbacks=keras.callbacks.EarlyStopping()),
            TypeError,
            r"callbacks: a list of keras.callbacks.Callback "
            r"objects, got one EarlyStopping: pass \[callback\]",
        ),
    ],
)
def test_python_api_arguments_are_checked_before_anything_is_written(make_config, arguments, error, message):
    """#31.14 and #31.21: TypeErrors deep in exclusions.py, KeyErrors after a whole epoch, a wrong
    output shape reported as divergence, mode="lowest" taken as min."""
    config = make_config()
    with pytest.raises(error, match=message):
        train(config, verbose=False, **arguments)
    assert not os.path.exists(config.model_dir)


def test_a_path_given_as_the_config_is_refused_with_the_loader_to_use(make_config):
    with pytest.raises(
        TypeError,
        match=r"config='configs/mnist1d_cnn.py' is a path: pass the config itself, e.g. "
        r"kbatch.train.load_config\('configs/mnist1d_cnn.py'\)",
    ):
        train("configs/mnist1d_cnn.py", verbose=False)
    from kbatch.train import load_config

    assert load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "mnist1d_cnn.py")).batch_size > 0


@pytest.mark.parametrize("saved", ["{}", "[]", '{"notes": "mine"}'])
def test_a_config_json_that_is_no_kbatch_config_is_said_so(make_config, saved):
    """#31.21: `{}` was reported as "another run" with a list of changed fields."""
    config = make_config()
    os.makedirs(config.model_dir)
    path = os.path.join(config.model_dir, "config.json")
    with open(path, "w") as f:
        f.write(saved)
    with pytest.raises(
        ValueError,
        match=re.escape(path) + r" (is not a kbatch run's config \(no dataset|holds a JSON "
        r"list, not the dict kbatch writes).*it was damaged",
    ):
        train(config, verbose=False)
    assert os.listdir(config.model_dir) == ["config.json"] and open(path).read() == saved


def test_a_dataset_that_needs_a_download_without_network_is_refused_at_once(make_config, tmp_path, monkeypatch):
    """#31.29: without network TFDS retried DNS for over 150 s and left an `incomplete.*` folder.
    No network is made sure of (on a machine with one, the test must not download CIFAR-10): the
    probe of the download host answers as it does without one."""
    from kbatch.data import names

    probed = []
    monkeypatch.setattr(names, "reachable", lambda host: probed.append(host) or False)
    data_dir = tmp_path / "tfds"
    config = make_config(dataset="cifar10", model="resnet20", data_dir=str(data_dir))
    started = time.monotonic()
    with pytest.raises(
        ValueError,
        match=re.escape(
            "config.dataset='cifar10' needs a download, www.cs.toronto.edu cannot be reached, and no prepared copy "
            f"is in {data_dir}/cifar10/"
        )
        + r".*`tfds build cifar10 --data_dir="
        + re.escape(str(data_dir))
        + "`",
    ):
        train(config, verbose=False)
    assert probed == ["www.cs.toronto.edu"] and time.monotonic() - started < 30
    assert not os.path.exists(config.model_dir) and not data_dir.exists()
    monkeypatch.setattr(names, "reachable", lambda host: True)  # with network, TFDS downloads it as before
    assert names.check_prepared("cifar10", str(data_dir)) is None and not data_dir.exists()
    with pytest.raises(
        ValueError,
        match=r"^config.dataset='cifar10/huge': TFDS knows no such config or version of "
        r"cifar10 \(\w+\); its configs: none.$",
    ):
        names.check_prepared("cifar10/huge", str(data_dir))  # was TFDS's page of text


def test_the_download_probe_answers_promptly_for_a_host_that_does_not_resolve():
    from kbatch.data import names

    started = time.monotonic()
    assert names.reachable("no-such-host.invalid", timeout=2.0) is False
    assert time.monotonic() - started < 10


class _SlowStart(Action):
    """Waits before the first loop, as a slow first compilation would."""

    def begin(self, run):
        time.sleep(2.5)


def test_the_console_times_each_epoch_from_its_start_and_shows_batch_and_folder_as_they_are(tmp_path, capsys):
    """#31.20: "0s - 7us/step" for an epoch of seconds; #31.30: "batch: 128.0000"; #31.28: a
    model_dir with spaces printed unquoted in the TensorBoard hint."""
    from conftest import small_config

    config = small_config(tmp_path / "my runs" / "a b", num_epochs=2)
    train(config, actions=[_SlowStart()])
    out = capsys.readouterr().out
    assert f"tensorboard --logdir '{tmp_path}/my runs/a b'" in out
    assert "epoch 1/2, global batch 128" in out and " - batch:" not in out
    first_epoch = re.search(r"^32/32 - (\d+)s - (\d+)ms/step", out, re.MULTILINE)
    assert first_epoch and int(first_epoch.group(1)) >= 2 and int(first_epoch.group(2)) >= 2500 / 32 - 1, out


def test_the_adaptive_batch_line_shows_b_simple_with_the_digits_that_read_above_the_batch():
    """#31.25: "B_simple 32 > batch 32" for 32.42."""
    assert batch_control._above(32.42, 32) == "32.4"
    assert batch_control._above(32.6, 32) == "32.6"
    assert batch_control._above(32.004, 32) == "32.004"
    assert batch_control._above(1234.7, 512) == "1,235"
