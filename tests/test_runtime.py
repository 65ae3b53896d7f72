"""`KERAS_BACKEND=auto` and `config.backend="auto"` (kbatch.runtime): JAX where a TPU is attached,
TensorFlow where it is installed otherwise; the pick is made before Keras is imported, and Keras
itself (in a fresh process) is the reference for what was picked."""

import os
import subprocess
import sys

import keras
import pytest

from kbatch import runtime
from kbatch.training.config import schema

pytestmark = pytest.mark.fast

PICKED = (
    "import kbatch, keras, os; "
    "print(keras.backend.backend(), os.environ['KERAS_BACKEND'], kbatch.runtime.describe().split(' (')[0])"
)


def _fresh_python(**environ):
    env = {key: value for key, value in os.environ.items() if key not in ("TPU_NAME", "COLAB_TPU_ADDR")}
    env.update(environ)
    run = subprocess.run([sys.executable, "-c", PICKED], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.split(maxsplit=2)


@pytest.mark.parametrize(
    "kind, has_tensorflow, expected",
    [
        ("tpu", True, "jax"),
        ("tpu", False, "jax"),
        ("gpu", True, "tensorflow"),
        ("gpu", False, "jax"),
        ("cpu", True, "tensorflow"),
        ("cpu", False, "jax"),
    ],
)
def test_tpus_get_jax_and_the_rest_tensorflow_where_installed(kind, has_tensorflow, expected):
    assert runtime.backend_for(kind, has_tensorflow=has_tensorflow) == expected


def test_a_tpu_is_recognised_by_the_variables_tpu_vms_and_colab_set(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("COLAB_TPU_ADDR", raising=False)
    monkeypatch.setattr(runtime.glob, "glob", lambda pattern: [])
    assert runtime.accelerator() == "cpu"
    monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")
    assert runtime.accelerator() == "tpu"


def test_only_auto_is_replaced_and_other_values_are_left_alone():
    for value in ("jax", "tensorflow", "torch"):
        environ = {"KERAS_BACKEND": value}
        assert runtime.resolve_keras_backend(environ) == value and environ["KERAS_BACKEND"] == value
    assert runtime.resolve_keras_backend({}) is None
    environ = {"KERAS_BACKEND": "auto"}
    assert runtime.resolve_keras_backend(environ) == runtime.backend_for(runtime.accelerator())
    assert environ["KERAS_BACKEND"] in ("jax", "tensorflow")


def test_keras_backend_auto_on_this_cpu_machine_is_tensorflow_in_a_fresh_process():
    keras_backend, variable, described = _fresh_python(KERAS_BACKEND="auto")
    assert keras_backend == variable == "tensorflow"
    assert described.startswith("TensorFlow on ") and "CPU device" in described


def test_keras_backend_auto_with_a_tpu_attached_is_jax_in_a_fresh_process():
    # No TPU is here: TPU_NAME makes kbatch believe one is; JAX then finds only the CPU.
    keras_backend, variable, described = _fresh_python(KERAS_BACKEND="auto", TPU_NAME="local")
    assert keras_backend == variable == "jax"
    assert described.startswith("JAX on ") and "CPU device" in described


def test_config_backend_auto_is_the_backend_keras_runs_on():
    assert schema.resolve({"backend": "auto"}).backend == keras.backend.backend()
    with pytest.raises(ValueError, match=r"config.backend='gpu': must be one of 'tensorflow', 'jax', 'auto'"):
        schema.resolve({"backend": "gpu"})
