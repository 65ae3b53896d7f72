"""The JAX backend (Keras on JAX, `keras.distribution.DataParallel`), run in subprocesses with
KERAS_BACKEND=jax and N host CPU devices: it agrees with itself across device counts and
accumulation, with the TensorFlow step on the same batches, resumes bitwise after SIGKILL, and
runs where TensorFlow cannot be imported. The smooth model keeps float rounding from growing."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from smooth_model import smooth_model

from kbatch.data.names import DatasetInfo
from kbatch.training import Classification
from kbatch.training.backends.tf_step import make_train_loop, make_train_step
from kbatch.training.transforms import Chain, Geometry

HERE = pathlib.Path(__file__).resolve().parent


def _env(devices):
    return {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }


def _jax(devices, *args, timeout=300):
    run = subprocess.run(
        [sys.executable, str(HERE / "jax_worker.py"), *args],
        env=_env(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def _weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()


def test_one_device_four_devices_and_four_micro_batches_end_with_the_same_weights(tmp_path):
    runs = {"1 device": (1, {}), "4 devices": (4, {}), "4 micro-batches": (1, {"accumulation_steps": 4})}
    results = {}
    for name, (devices, overrides) in runs.items():
        line = _jax(devices, "train", str(tmp_path / name), json.dumps(overrides)).strip().splitlines()[-1]
        results[name] = json.loads(line)
    assert results["4 devices"]["num_replicas"] == 4 and results["1 device"]["num_replicas"] == 1
    assert results["1 device"]["steps"] == 32 and results["1 device"]["final_eval_accuracy"] > 0.15  # chance: 0.1
    reference = _weights(tmp_path / "1 device")
    for name in ("4 devices", "4 micro-batches"):
        for a, b in zip(reference, _weights(tmp_path / name)):
            np.testing.assert_allclose(b, a, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("accumulation_steps", [1, 2])
def test_the_jax_step_takes_the_tensorflow_steps_on_the_same_batches(tmp_path, accumulation_steps):
    steps, batch, rate = 4, 64, 0.05
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(steps, batch, 40, 1)).astype(np.float32)
    ys = np.argmax(xs[:, :, :10, 0], axis=-1).astype(np.int32)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        keras.utils.set_random_seed(4)
        model = smooth_model(DatasetInfo("given", 0, 0, (40, 1), 10))
        initial = model.get_weights()
        optimizer = keras.optimizers.SGD(rate, momentum=0.9)
        optimizer.build(model.trainable_variables)
    step = make_train_step(strategy, model, optimizer, Classification(), Chain(), Geometry(batch, accumulation_steps))
    batches = tf.data.Dataset.from_tensor_slices((xs.reshape(-1, 40, 1), ys.reshape(-1))).batch(batch)
    records = make_train_loop(strategy, step)(
        iter(strategy.experimental_distribute_dataset(batches)), tf.constant(steps)
    )
    np.savez(
        tmp_path / "in.npz",
        xs=xs,
        ys=ys,
        learning_rate=rate,
        accumulation_steps=accumulation_steps,
        **{f"w{i}": w for i, w in enumerate(initial)},
    )
    _jax(2, "steps", str(tmp_path / "in.npz"), str(tmp_path / "out.npz"))
    got = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(got["losses"], records["loss"].numpy() / records["count"].numpy(), rtol=1e-5)
    for i, want in enumerate(model.get_weights()):
        np.testing.assert_allclose(got[f"w{i}"], want, atol=1e-5)
        assert not np.allclose(want, initial[i])  # the steps moved every weight


FLAGS = [
    "--config.backend=jax",
    "--config.dataset=mnist1d/original",
    "--config.batch_size=256",
    "--config.base_batch_size=256",
    "--config.num_epochs=2",
    "--config.warmup_epochs=0.5",
    "--config.steps_per_loop=2",
    "--config.checkpoint_every=4",
    "--config.norm=group",
]


def _kbatch_train(model_dir):
    return [sys.executable, "-m", "kbatch.train", *FLAGS, f"--config.model_dir={model_dir}"]


def test_a_jax_run_killed_after_a_checkpoint_resumes_bitwise(tmp_path):
    whole = subprocess.run(_kbatch_train(tmp_path / "whole"), env=_env(2), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]
    process = subprocess.Popen(
        _kbatch_train(tmp_path / "killed"), env=_env(2), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 240
        while not (tmp_path / "killed" / "checkpoints" / "ckpt-12.npz").exists():
            assert process.poll() is None and time.time() < deadline, "no checkpoint 12"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert not (tmp_path / "killed" / "result.json").exists()
    shutil.copytree(tmp_path / "killed", tmp_path / "truncated")
    again = subprocess.run(_kbatch_train(tmp_path / "killed"), env=_env(2), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "resuming at step" in again.stdout, again.stderr[-2000:]
    for a, b in zip(_weights(tmp_path / "whole"), _weights(tmp_path / "killed")):
        np.testing.assert_array_equal(a, b)
    _a_truncated_checkpoint_falls_back_and_none_intact_is_one_line(tmp_path / "truncated", tmp_path / "whole")


def _truncate(checkpoint):
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])


def _a_truncated_checkpoint_falls_back_and_none_intact_is_one_line(model_dir, whole):
    """Finding 10 of issue 31: a truncated .npz was a BadZipFile traceback."""
    every = model_dir.parent / "every_truncated"
    shutil.copytree(model_dir, every)
    newest = max((model_dir / "checkpoints").glob("ckpt-*.npz"), key=lambda p: int(p.stem.split("-")[1]))
    _truncate(newest)
    again = subprocess.run(_kbatch_train(model_dir), env=_env(2), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"checkpoint {newest} is damaged" in again.stdout, again.stderr[-2000:]
    for a, b in zip(_weights(whole), _weights(model_dir)):
        np.testing.assert_array_equal(a, b)
    for checkpoint in (every / "checkpoints").glob("ckpt-*.npz"):
        _truncate(checkpoint)
    none = subprocess.run(_kbatch_train(every), env=_env(2), capture_output=True, text=True, timeout=300)
    assert none.returncode == 2 and "Traceback" not in none.stderr, none.stderr[-2000:]
    (line,) = [line for line in none.stderr.splitlines() if line.startswith("kbatch-train:")]
    assert "none of its checkpoints is intact" in line


def test_kbatch_trains_on_jax_where_tensorflow_cannot_be_imported(tmp_path):
    script = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['tensorflow_datasets'] = None\n"
        "import kbatch, json\n"
        f"result = kbatch.training.train({{'backend': 'jax', 'dataset': 'mnist1d/original', 'num_epochs': 1, "
        f"'warmup_epochs': 0.5, 'model_dir': {str(tmp_path / 'run')!r}}}, verbose=False)\n"
        "assert not [m for m in sys.modules if m.startswith('tensorflow') and sys.modules[m] is not None]\n"
        "print(json.dumps(result['final_eval_accuracy']))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], env=_env(2), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 0.1 < float(run.stdout.strip().splitlines()[-1]) <= 1.0
    written = set(os.listdir(tmp_path / "run"))
    assert {"config.json", "result.json", "model.keras", "train", "eval", "checkpoints"} <= written
    # TensorBoard's event files, written without TensorFlow, read back by TensorFlow: a point per update.
    steps = set()
    for name in os.listdir(tmp_path / "run" / "train"):
        for event in tf.compat.v1.train.summary_iterator(str(tmp_path / "run" / "train" / name)):
            steps |= {event.step for value in event.summary.value if value.tag == "learning_rate"}
    assert steps == set(range(1, 4000 // 256 + 2))


def test_a_jax_config_under_keras_on_tensorflow_is_one_line(make_config):
    from kbatch.training import train

    config = make_config(backend="jax")
    with pytest.raises(ValueError, match=r"config.backend='jax' but Keras runs on tensorflow .*KERAS_BACKEND=jax"):
        train(config, verbose=False)
    assert not os.path.exists(config.model_dir)


def test_a_tensorflow_config_under_keras_on_jax_is_one_line_from_python_too(tmp_path):
    """Finding 22 of issue 31, the Python API: TensorFlow's "please open an issue" before."""
    script = (
        "import sys; sys.path.insert(0, 'tests'); from conftest import small_config; import kbatch\n"
        f"config = small_config({str(tmp_path / 'run')!r}, backend='tensorflow')\n"
        "try:\n    kbatch.training.train(config, verbose=False)\nexcept ValueError as error:\n    print(error)"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], env=_env(1), capture_output=True, text=True, timeout=300, cwd=HERE.parent
    )
    assert "config.backend='tensorflow' but Keras runs on jax (KERAS_BACKEND=jax)" in run.stdout, run.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_mixed_bfloat16_on_jax_computes_in_bfloat16_and_keeps_float32_weights(tmp_path):
    """mixed_bfloat16 (the TPU policy) on JAX: layers compute in bfloat16 (so the weights are not
    the float32 run's), the variables stay float32, and 32 updates land near the float32 run
    (bfloat16 keeps 8 mantissa bits: about 0.4% per rounding)."""
    results = {}
    for name, policy in (("float32", None), ("bfloat16", "mixed_bfloat16")):
        line = _jax(1, "train", str(tmp_path / name), json.dumps({"mixed_precision": policy}))
        results[name] = json.loads(line.strip().splitlines()[-1])
    model = keras.models.load_model(tmp_path / "bfloat16" / "model.keras")
    assert {layer.dtype_policy.name for layer in model.layers[1:]} == {"mixed_bfloat16"}
    assert all(w.dtype == "float32" for w in model.weights)
    reference = _weights(tmp_path / "float32")
    assert any(not np.array_equal(a, b) for a, b in zip(reference, model.get_weights()))
    for a, b in zip(reference, model.get_weights()):
        np.testing.assert_allclose(b, a, atol=0.03)
    assert results["bfloat16"]["final_eval_loss"] == pytest.approx(results["float32"]["final_eval_loss"], rel=0.02)


def test_the_strategy_names_the_devices_on_jax_too(tmp_path):
    """cpu:N and one_device mean on JAX what they mean on TensorFlow; more CPUs than JAX has is one line."""
    for strategy, replicas in (("cpu:2", 2), ("one_device", 1), ("auto", 4)):
        line = _jax(4, "train", str(tmp_path / strategy), json.dumps({"strategy": strategy}))
        assert json.loads(line.strip().splitlines()[-1])["num_replicas"] == replicas, strategy
    run = subprocess.run(
        [
            sys.executable,
            str(HERE / "jax_worker.py"),
            "train",
            str(tmp_path / "eight"),
            json.dumps({"strategy": "cpu:8"}),
        ],
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    assert (
        "config.strategy='cpu:8' needs 8 host CPU devices, and JAX has 4: start Python with "
        "XLA_FLAGS=--xla_force_host_platform_device_count=8."
    ) in run.stderr
    assert not (tmp_path / "eight").exists()
