"""The JAX backend's checkpoint files (`kbatch.training.backends.orbax_checkpoints`), on this
process's JAX CPU device: Orbax's steps round-trip bitwise and keep the newest three, a
half-written (temporary) folder is never a candidate, a damaged step is `DamagedCheckpoint` and
another model's `CheckpointMismatch`, and the `.npz` files kbatch wrote before still read; and
in several JAX processes (gloo on 127.0.0.1), a checkpoint they save together restores on fewer."""

import asyncio
import gc
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys

import jax
import keras
import numpy as np
import pytest

from kbatch.training.backends import backend
from kbatch.training.backends.orbax_checkpoints import OrbaxCheckpoints, is_legacy, read_legacy


def _state(seed, shapes=((3, 4), (4,))):
    rng = np.random.default_rng(seed)
    arrays = [jax.numpy.asarray(rng.normal(size=shape).astype(np.float32)) for shape in shapes]
    return {"trainable": arrays, "non_trainable": [], "optimizer": [jax.numpy.asarray(np.int64(seed))]}


def _equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.fast
@pytest.mark.parametrize("asynchronous", [False, True])
def test_the_newest_three_steps_are_kept_and_each_restores_bitwise(tmp_path, asynchronous):
    checkpoints = OrbaxCheckpoints(str(tmp_path / "checkpoints"), keep=3, asynchronous=asynchronous)
    assert checkpoints.candidates() == [] and not (tmp_path / "checkpoints").exists()  # nothing written before a save
    for step in (4, 8, 12, 16):
        checkpoints.save(step, _state(step))
    checkpoints.save(16, _state(99))  # a second save of a step (preemption after a checkpoint) keeps the first
    assert checkpoints.candidates() == [checkpoints.path(s) for s in (8, 12, 16)]
    checkpoints.close()
    again = OrbaxCheckpoints(str(tmp_path / "checkpoints"), keep=3)
    for step in (8, 12, 16):
        restored_step, state = again.load(again.path(step), _state(0))
        assert restored_step == step
        _equal(state, _state(step))
    again.close()


@pytest.mark.fast
def test_a_half_written_checkpoint_is_never_a_candidate_and_goes_at_the_next_save(tmp_path):
    checkpoints = OrbaxCheckpoints(str(tmp_path), keep=3)
    checkpoints.save(4, _state(4))
    checkpoints.close()
    # What a process killed while Orbax wrote step 8 leaves: the files under a temporary name, not yet renamed.
    partial = tmp_path / "ckpt_8.orbax-checkpoint-tmp"
    shutil.copytree(tmp_path / "ckpt_4", partial)
    checkpoints = OrbaxCheckpoints(str(tmp_path), keep=3)
    assert checkpoints.candidates() == [checkpoints.path(4)]
    checkpoints.save(8, _state(8))
    assert not partial.exists() and checkpoints.candidates() == [checkpoints.path(4), checkpoints.path(8)]
    _equal(checkpoints.load(checkpoints.path(8), _state(0))[1], _state(8))
    checkpoints.close()


def _truncate_files(folder, part):
    for path in folder.rglob("*"):
        if path.is_file() and part in path.relative_to(folder).parts:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "data truncated": lambda step: _truncate_files(step, "d"),
    "manifest gone": lambda step: (step / "default" / "manifest.ocdbt").unlink(),
    "tree metadata truncated": lambda step: _truncate_files(step, "_METADATA"),
    "item folder gone": lambda step: shutil.rmtree(step / "default"),
}


@pytest.mark.fast
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_step_is_a_damaged_checkpoint_from_orbaxs_error(tmp_path, damage):
    checkpoints = OrbaxCheckpoints(str(tmp_path), keep=3)
    checkpoints.save(4, _state(4))
    checkpoints.close()
    DAMAGES[damage](tmp_path / "ckpt_4")
    checkpoints = OrbaxCheckpoints(str(tmp_path), keep=3)
    with pytest.raises(backend.DamagedCheckpoint) as error:
        checkpoints.load(checkpoints.path(4), _state(0))
    assert error.value.__cause__ is not None
    checkpoints.close()


@pytest.mark.fast
def test_asyncios_report_of_an_abandoned_read_error_is_dropped_and_others_pass(tmp_path, caplog):
    """Orbax abandons the other reads of a damaged checkpoint; when asyncio collects one, it logs
    "Task exception was never retrieved" with a traceback (a CI run's stderr had one after the
    one-line refusal). A read error's report is dropped; any other error's still passes."""
    OrbaxCheckpoints(str(tmp_path), keep=3)._open(create=True)  # installs the filter
    loop = asyncio.new_event_loop()

    async def fail(error):
        raise error

    for error in (ValueError("OUT_OF_RANGE: Error reading byte range"), ZeroDivisionError("not a read")):
        task = loop.create_task(fail(error))
        loop.run_until_complete(asyncio.sleep(0))
        assert task.done()
        del task
        gc.collect()
    loop.close()
    reports = [r for r in caplog.records if r.name == "asyncio" and "never retrieved" in r.getMessage()]
    assert [r.exc_info[0] for r in reports] == [ZeroDivisionError]


@pytest.mark.fast
@pytest.mark.parametrize(
    "other, says",
    [
        (_state(0, shapes=((3, 4), (5,))), r"\['trainable'\]\[1\]: shape \(4,\) != \(5,\)"),
        (_state(0, shapes=((3, 4),)), r"3 arrays in another structure, this model has 2"),
    ],
)
def test_another_models_state_is_a_mismatch_not_damage(tmp_path, other, says):
    checkpoints = OrbaxCheckpoints(str(tmp_path), keep=3)
    checkpoints.save(4, _state(4))
    with pytest.raises(backend.CheckpointMismatch) as error:
        checkpoints.load(checkpoints.path(4), other)
    assert re.search(says, str(error.value.__cause__))
    checkpoints.close()


@pytest.mark.fast
def test_damaged_steps_after_the_restored_one_are_discarded(tmp_path):
    checkpoints = OrbaxCheckpoints(str(tmp_path), keep=3)
    for step in (4, 8, 12):
        checkpoints.save(step, _state(step))
    checkpoints.discard_after(checkpoints.path(4))
    assert checkpoints.candidates() == [checkpoints.path(4)] and sorted(os.listdir(tmp_path)) == ["ckpt_4"]
    checkpoints.save(8, _state(80))  # the step is saved again
    _equal(checkpoints.load(checkpoints.path(8), _state(0))[1], _state(80))
    checkpoints.close()


@pytest.mark.fast
def test_kbatchs_former_npz_checkpoints_are_candidates_and_still_read(tmp_path):
    values = [np.arange(12, dtype=np.float32).reshape(3, 4), np.ones(4, np.float32)]
    np.savez(tmp_path / "ckpt-8.npz", step=8, v0=values[0], v1=values[1])  # the format before Orbax
    checkpoints = OrbaxCheckpoints(str(tmp_path), keep=3)
    checkpoints.save(8, _state(8))
    checkpoints.save(12, _state(12))
    assert checkpoints.candidates() == [str(tmp_path / "ckpt-8.npz"), checkpoints.path(8), checkpoints.path(12)]
    assert is_legacy(checkpoints.candidates()[0]) and not is_legacy(checkpoints.path(8))
    variables = [keras.Variable(np.zeros((3, 4), np.float32)), keras.Variable(np.zeros(4, np.float32))]
    assert read_legacy(str(tmp_path / "ckpt-8.npz"), variables) == 8
    for variable, value in zip(variables, values):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)
    with pytest.raises(backend.CheckpointMismatch):
        read_legacy(str(tmp_path / "ckpt-8.npz"), variables[:1])
    (tmp_path / "ckpt-8.npz").write_bytes((tmp_path / "ckpt-8.npz").read_bytes()[:100])
    with pytest.raises(backend.DamagedCheckpoint):
        read_legacy(str(tmp_path / "ckpt-8.npz"), variables)
    checkpoints.close()


HERE = pathlib.Path(__file__).resolve().parent


def _processes(count, devices, directory, mode):
    """`count` JAX processes of `devices` host CPU devices each running tests/orbax_worker.py as one job."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "KERAS_BACKEND": "jax",  # no TensorFlow to import
    }
    command = [sys.executable, str(HERE / "orbax_worker.py")]
    started = [
        subprocess.Popen(
            [*command, str(i), str(count), str(port), str(directory), mode],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(count)
    ]
    try:
        outputs = [p.communicate(timeout=240) for p in started]
    finally:
        for p in started:
            p.kill()
    for p, (_, err) in zip(started, outputs):
        assert p.returncode == 0, err[-2000:]
    return [out for out, _ in outputs]


def test_two_processes_save_together_and_the_checkpoint_restores_on_two_or_one(tmp_path):
    """Each of 2 processes (2 devices each) writes its own shards of an array split over all 4
    devices, synchronously then asynchronously; Orbax commits one checkpoint of each step, which
    restores exactly on 2 processes and on 1 device."""
    _processes(2, 2, tmp_path, "save")
    assert sorted(os.listdir(tmp_path)) == ["ckpt_4", "ckpt_8"]
    for count, devices in ((2, 2), (1, 1)):
        for out in _processes(count, devices, tmp_path, "load"):
            assert out.strip().splitlines()[-1] == "restored 8 True", (count, out)


@pytest.mark.fast
@pytest.mark.parametrize(
    "raised",
    [
        OSError(28, "No space left on device"),  # Python's own write, in Orbax's metadata files
        ValueError("write failed [os_error_code='28'] while writing array"),  # tensorstore's
    ],
)
def test_a_full_disk_reads_the_same_whichever_write_meets_it(raised):
    from kbatch.training.backends.orbax_checkpoints import _write_errors_as_os_errors

    with pytest.raises(OSError) as caught:
        with _write_errors_as_os_errors():
            raise raised
    assert (caught.value.errno, caught.value.strerror) == (28, "No space left on device")
