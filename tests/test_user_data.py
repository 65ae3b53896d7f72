"""A user's own data and model through `kbatch.training.train(config, data=..., model_fn=...)`:
the same weights on one device, two replicas and the JAX backend (a smooth model, whose start
is NumPy's), a killed run resumed bitwise, named features, and each wrong input in one line."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import user_data
from stop_run import signal_at_checkpoint

import kbatch
from kbatch.training import train

HERE = pathlib.Path(__file__).resolve().parent


def _weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()


def _script(model_dir, overrides, backend="tensorflow", devices=1):
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    return subprocess.Popen(
        [sys.executable, str(HERE / "user_data.py"), str(model_dir), json.dumps(overrides)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finished(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("user") / "one_device"
    result = train(
        {**user_data.CONFIG, "model_dir": str(model_dir), "strategy": "one_device"},
        data=user_data.source(),
        model_fn=user_data.seeded_mlp,
        verbose=False,
    )
    return model_dir, result


def test_a_users_arrays_and_model_learn(one_device):
    model_dir, result = one_device
    assert json.loads((model_dir / "config.json").read_text())["dataset"] == "data:arrays"
    assert result["final_eval_accuracy"] > 0.6  # 4 classes: chance is 0.25


def test_two_replicas_and_the_jax_backend_end_with_the_weights_of_one_device(one_device, tmp_path):
    reference = _weights(one_device[0])
    jax_run = _script(tmp_path / "jax", {"backend": "jax", "strategy": "cpu:2"}, backend="jax", devices=2)
    train(
        {**user_data.CONFIG, "model_dir": str(tmp_path / "cpu2"), "strategy": "cpu:2"},
        data=user_data.source(),
        model_fn=user_data.seeded_mlp,
        verbose=False,
    )
    _finished(jax_run)
    initial = user_data.seeded_mlp(user_data.source().describe()).get_weights()
    for name in ("cpu2", "jax"):
        for want, got, start in zip(reference, _weights(tmp_path / name), initial):
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)
            assert not np.allclose(want, start)  # the run moved every weight


def test_a_run_killed_after_a_checkpoint_resumes_bitwise(tmp_path):
    """Against the same command uninterrupted, in a process of its own too: a process's device and
    thread set-up may change float rounding (3e-8 here against pytest's own process)."""
    model_dir, overrides = tmp_path / "killed", {"strategy": "one_device"}
    whole = _script(tmp_path / "whole", overrides)
    signal_at_checkpoint(_script(model_dir, overrides), str(model_dir), 8, signal.SIGKILL)
    assert not (model_dir / "model.keras").exists()
    _finished(_script(model_dir, overrides))
    _finished(whole)
    for want, got in zip(_weights(tmp_path / "whole"), _weights(model_dir)):
        np.testing.assert_array_equal(got, want)


def test_named_features_reach_a_model_with_several_inputs(tmp_path):
    x, y, x_eval, y_eval = user_data.arrays()
    features = {"left": x[:, :6], "right": x[:, 6:]}
    data = kbatch.data.from_arrays(features, y, eval=({"left": x_eval[:, :6], "right": x_eval[:, 6:]}, y_eval))

    def model_fn(info):
        inputs = {name: keras.Input(shape, name=name) for name, shape in info.input_shape.items()}
        joined = keras.layers.Concatenate()([inputs["left"], inputs["right"]])
        hidden = keras.layers.Dense(16, "tanh")(joined)
        return keras.Model(inputs, keras.layers.Dense(info.num_classes)(hidden))

    result = train(
        {**user_data.CONFIG, "model_dir": str(tmp_path / "run"), "strategy": "cpu:2"},
        data=data,
        model_fn=model_fn,
        verbose=False,
    )
    assert result["final_eval_accuracy"] > 0.6


def test_what_the_run_cannot_take_is_one_line_before_anything_is_written(tmp_path):
    model_dir = tmp_path / "run"
    config = {**user_data.CONFIG, "model_dir": str(model_dir)}
    with pytest.raises(TypeError, match=r"^data: a kbatch.data.Source .* got tuple\.$"):
        train(config, data=user_data.arrays()[:2], model_fn=user_data.seeded_mlp, verbose=False)
    with pytest.raises(ValueError, match=r"config.dataset='data:mine' names a source of your own: pass it"):
        train({**config, "dataset": "data:mine"}, model_fn=user_data.seeded_mlp, verbose=False)
    with pytest.raises(
        ValueError,
        match=r"^config.batch_size: a global batch of 1024 is larger than the 512 "
        r"training examples of arrays\.$",
    ):
        train({**config, "batch_size": 1024}, data=user_data.source(), model_fn=user_data.seeded_mlp, verbose=False)
    assert not model_dir.exists() or not (set(os.listdir(model_dir)) - {".kbatch.lock"})


def test_the_parameter_server_backend_refuses_a_source_of_your_own_in_one_line():
    from kbatch.training.backends.ps_backend import ParameterServerBackend

    backend = ParameterServerBackend.__new__(ParameterServerBackend)  # its cluster is not needed to refuse
    with pytest.raises(ValueError, match=r"^config.strategy='parameter_server': .* a synchronous strategy\.$"):
        backend.use_source(user_data.source())


def test_the_readmes_own_data_example_runs_as_written(tmp_path, monkeypatch):
    readme = (HERE.parent / "README.md").read_text()
    (block,) = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:] if "from_arrays(x, y" in b]
    x, y, x_eval, y_eval = user_data.arrays(num_train=4096)
    monkeypatch.chdir(tmp_path)  # the example's model_dir, runs/mine, is relative
    scope = {"x": x, "y": y, "x_eval": x_eval, "y_eval": y_eval}
    exec(block, scope)  # noqa: S102 - the README's own code
    assert scope["result"]["final_eval_accuracy"] > 0.6 and (tmp_path / "runs" / "mine" / "model.keras").exists()
