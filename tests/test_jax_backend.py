"""The JAX backend (Keras on JAX, `keras.distribution.DataParallel`), run in subprocesses with
KERAS_BACKEND=jax and N host CPU devices: it agrees with itself across device counts and
accumulation, with the TensorFlow step on the same batches, resumes bitwise after SIGKILL (on
another number of devices within float rounding, from kbatch's former `.npz` checkpoints too),
and runs where TensorFlow cannot be imported. The smooth model keeps float rounding from growing."""

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


def _per_update(model_dir, tag):
    values = {}
    for name in os.listdir(model_dir / "train"):
        for event in tf.compat.v1.train.summary_iterator(str(model_dir / "train" / name)):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = value.simple_value
    return [values[step] for step in sorted(values)]


def test_how_many_updates_a_call_makes():
    from kbatch.training.backends import jax_step

    assert [jax_step.updates_per_call(0, n) for n in (10, 999, 1000, 5000)] == [1, 1, 5, 5]  # 0: by the phase
    assert jax_step.updates_per_call(3, 10) == 3
    assert jax_step.call_sizes(12, 5) == [5, 5, 1, 1] and jax_step.call_sizes(4, 1) == [1, 1, 1, 1]


def test_updates_compiled_several_to_a_call_are_the_single_updates(tmp_path):
    # 3 to a call over loops of 10: three calls of 3 and a single update per loop, a remainder
    # included; the same weights and per-update records as one update per call, to float rounding.
    for count in (1, 3):
        _jax(1, "train", str(tmp_path / str(count)), json.dumps({"updates_per_call": count}))
    for a, b in zip(_weights(tmp_path / "1"), _weights(tmp_path / "3")):
        np.testing.assert_allclose(b, a, atol=1e-6)
    for tag in ("loss", "gradient_norm", "learning_rate"):
        single, several = _per_update(tmp_path / "1", tag), _per_update(tmp_path / "3", tag)
        assert len(single) == 32
        np.testing.assert_allclose(several, single, rtol=1e-5, err_msg=tag)


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
    "--config.updates_per_call=2",  # resumed with two updates to a compiled call
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
        while not (tmp_path / "killed" / "checkpoints" / "ckpt_12").exists():  # Orbax renames it once whole
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
    _sigterm_with_asynchronous_checkpoints_saves_before_exit_42(tmp_path / "preempted", tmp_path / "whole")
    _a_full_disk_is_one_line_and_the_run_finishes_with_room(tmp_path, tmp_path / "whole")


def _sigterm_with_asynchronous_checkpoints_saves_before_exit_42(model_dir, whole):
    """The preemption save, written in the background, is committed before the process exits 42,
    and the line names it; the same command resumes bitwise."""
    command = [*_kbatch_train(model_dir), "--config.async_checkpoints=True"]
    process = subprocess.Popen(command, env=_env(2), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (model_dir / "checkpoints" / "ckpt_4").exists():
            assert process.poll() is None and time.time() < deadline, "no checkpoint 4"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 42, stderr[-2000:]
    (line,) = [line for line in stderr.splitlines() if line.startswith("kbatch-train:")]
    step = int(line.split("checkpoint of step ")[1].split()[0])
    assert f"saved at {model_dir / 'checkpoints' / f'ckpt_{step}'};" in line
    assert _steps(model_dir)[-1].name == f"ckpt_{step}" and not list((model_dir / "checkpoints").glob("*tmp*"))
    again = subprocess.run(command, env=_env(2), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"resuming at step {step}" in again.stdout, again.stderr[-2000:]
    for a, b in zip(_weights(whole), _weights(model_dir)):
        np.testing.assert_array_equal(a, b)


def _a_full_disk_is_one_line_and_the_run_finishes_with_room(tmp_path, whole):
    """Orbax's write error on a full disk (tensorstore's RESOURCE_EXHAUSTED) is the one line a full
    disk gets on TensorFlow; the half-written checkpoint left there is never restored, and with room
    the same command finishes with the uninterrupted weights."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60k", "tmpfs", str(disk)], check=True)
    try:
        full = subprocess.run(_kbatch_train(disk / "run"), env=_env(2), capture_output=True, text=True, timeout=300)
        shutil.copytree(disk / "run", tmp_path / "with room")
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
    assert full.returncode == 2, full.stderr[-2000:]
    (line,) = [line for line in full.stderr.splitlines() if line.startswith("kbatch-train:")]
    assert "writing the checkpoint of step 4 failed (No space left on device)" in line
    assert "resume from the start" in line and "Event loop is closed" not in full.stderr
    assert not _steps(tmp_path / "with room") and list((tmp_path / "with room" / "checkpoints").glob("*tmp*"))
    again = subprocess.run(
        _kbatch_train(tmp_path / "with room"), env=_env(2), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert not list((tmp_path / "with room" / "checkpoints").glob("*tmp*"))
    for a, b in zip(_weights(whole), _weights(tmp_path / "with room")):
        np.testing.assert_array_equal(a, b)


def _steps(model_dir):
    """Orbax's committed checkpoint folders, oldest first."""
    found = [p for p in (model_dir / "checkpoints").glob("ckpt_*") if p.name.split("_")[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def _truncate(checkpoint):
    """Every array file of an Orbax checkpoint folder cut to half its length."""
    files = list(checkpoint.rglob("d/*"))
    assert files, checkpoint
    for data in files:
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def _a_truncated_checkpoint_falls_back_and_none_intact_is_one_line(model_dir, whole):
    """Finding 10 of issue 31 (a truncated .npz was a BadZipFile traceback), for Orbax's folders."""
    every = model_dir.parent / "every_truncated"
    shutil.copytree(model_dir, every)
    newest = _steps(model_dir)[-1]
    _truncate(newest)
    again = subprocess.run(_kbatch_train(model_dir), env=_env(2), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"checkpoint {newest} is damaged" in again.stdout, again.stderr[-2000:]
    for a, b in zip(_weights(whole), _weights(model_dir)):
        np.testing.assert_array_equal(a, b)
    for checkpoint in _steps(every):
        _truncate(checkpoint)
    none = subprocess.run(_kbatch_train(every), env=_env(2), capture_output=True, text=True, timeout=300)
    assert none.returncode == 2 and "Traceback" not in none.stderr, none.stderr[-2000:]
    (line,) = [line for line in none.stderr.splitlines() if line.startswith("kbatch-train:")]
    assert "none of its checkpoints is intact" in line


def _killed_after(model_dir, step, devices, overrides):
    """A `jax_worker.py train` run on `devices` devices, SIGKILLed once Orbax committed `step`'s checkpoint."""
    process = subprocess.Popen(
        [sys.executable, str(HERE / "jax_worker.py"), "train", str(model_dir), json.dumps(overrides)],
        env=_env(devices),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while not (model_dir / "checkpoints" / f"ckpt_{step}").exists():
            assert process.poll() is None and time.time() < deadline, f"no checkpoint {step}"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert not (model_dir / "result.json").exists()


RESUMED = {"num_epochs": 2, "checkpoint_every": 4, "steps_per_loop": 2, "updates_per_call": 2}


def test_a_checkpoint_written_on_four_devices_resumes_on_four_two_and_one(tmp_path):
    """Orbax restores onto the resumed run's shardings: at the same global batch the run ends with
    the uninterrupted run's weights, bitwise on 4 devices, within float rounding (1e-5, as 1 device
    against 4 in the first test) on 2 and 1; and kbatch's former `.npz` checkpoint resumes bitwise,
    the next checkpoint then Orbax's. Asynchronous checkpoints end with the same weights."""
    overrides = json.dumps(RESUMED)
    _jax(4, "train", str(tmp_path / "whole"), overrides)
    _killed_after(tmp_path / "on 4", 12, 4, RESUMED)
    for copy in ("on 2", "on 1", "legacy"):
        shutil.copytree(tmp_path / "on 4", tmp_path / copy)
    legacy_step = int(_jax(4, "legacy", str(tmp_path / "legacy"), overrides).strip().splitlines()[-1])
    resumed = {name: int(_steps(tmp_path / name)[-1].name.split("_")[1]) for name in ("on 4", "on 2", "on 1")}
    assert legacy_step >= 12 and not _steps(tmp_path / "legacy")  # only ckpt-<step>.npz is left
    for name, devices in (("on 4", 4), ("on 2", 2), ("on 1", 1), ("legacy", 4)):
        result = json.loads(_jax(devices, "train", str(tmp_path / name), overrides).strip().splitlines()[-1])
        assert result["num_replicas"] == devices and result["steps"] == 63, name
        assert result["resumed_at"] == (legacy_step if name == "legacy" else resumed[name]), name
        for a, b in zip(_weights(tmp_path / "whole"), _weights(tmp_path / name)):
            if devices == 4:
                np.testing.assert_array_equal(b, a, err_msg=name)
            else:
                np.testing.assert_allclose(b, a, atol=1e-5, err_msg=name)
    assert (tmp_path / "legacy" / "checkpoints" / f"ckpt-{legacy_step}.npz").exists()
    assert [p.name for p in _steps(tmp_path / "legacy")] == ["ckpt_56", "ckpt_60", "ckpt_63"]
    _asynchronous_checkpoints_hold_what_synchronous_ones_do(tmp_path, tmp_path / "whole")


def _asynchronous_checkpoints_hold_what_synchronous_ones_do(tmp_path, whole):
    """With async_checkpoints Orbax writes while training goes on: the same final weights as the
    synchronous run `whole`, and the last checkpoint, restored alone (model.keras and result.json
    removed), is the same weights."""
    _jax(4, "train", str(tmp_path / "async"), json.dumps({**RESUMED, "async_checkpoints": True}))
    for a, b in zip(_weights(whole), _weights(tmp_path / "async")):
        np.testing.assert_array_equal(b, a)
    assert [p.name for p in _steps(tmp_path / "async")] == ["ckpt_56", "ckpt_60", "ckpt_63"]
    for written in ("model.keras", "result.json"):
        (tmp_path / "async" / written).unlink()
    again = _jax(2, "train", str(tmp_path / "async"), json.dumps({**RESUMED, "async_checkpoints": True}))
    assert json.loads(again.strip().splitlines()[-1])["resumed_at"] == 63
    for a, b in zip(_weights(whole), _weights(tmp_path / "async")):
        np.testing.assert_array_equal(b, a)


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
