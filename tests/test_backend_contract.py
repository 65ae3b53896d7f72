"""The `Backend` contract (`kbatch.training.backends.backend`), checked without training: every backend
implements each abstract member, and the restore loop written once in the base class falls back
past a damaged checkpoint, stops in one line when none is intact, and tells a checkpoint of
another model from a damaged one."""

import os
import pathlib
import subprocess
import sys
import types

import pytest

from kbatch.training.backends import backend, ps_backend, tf_backend

pytestmark = pytest.mark.fast

HERE = pathlib.Path(__file__).resolve().parent
CONTRACT = {
    "noise_parts",
    "use_source",
    "describe_data",
    "scope",
    "attach",
    "start_phase",
    "evaluate",
    "probe_batch",
    "average_moving_statistics",
    "save",
    "restore",
    "has_checkpoint",
    "latest_checkpoint",
    "preemption",
    "all_finite",
    "close",
}


def test_the_contract_names_every_member_the_runner_and_actions_call():
    members = {name for name in vars(backend.Backend) if not name.startswith("_")}
    assert CONTRACT <= members
    assert backend.Backend.__abstractmethods__  # the backend-specific parts are abstract


@pytest.mark.parametrize("cls", [tf_backend.TensorFlowBackend, ps_backend.ParameterServerBackend])
def test_each_tensorflow_backend_implements_every_abstract_member(cls):
    assert issubclass(cls, backend.Backend)
    assert not cls.__abstractmethods__, sorted(cls.__abstractmethods__)


def test_the_jax_backend_implements_every_abstract_member():
    script = (
        "from kbatch.training.backends import backend, jax_backend\n"
        "assert issubclass(jax_backend.JaxBackend, backend.Backend)\n"
        "print(sorted(jax_backend.JaxBackend.__abstractmethods__))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(HERE.parent)}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"


class FakeBackend(backend.Backend):
    """A backend whose checkpoints are names: `damaged` ones do not read, `other` ones hold
    another model, the rest restore their step."""

    def __init__(self, checkpoints, model_dir="/runs/fake"):
        self.settings = types.SimpleNamespace(model_dir=model_dir)
        self.checkpoints, self.loaded, self.kept = checkpoints, [], None

    def _checkpoint_candidates(self):
        return [name for name, _ in self.checkpoints]

    def _load_checkpoint(self, path):
        self.loaded.append(path)
        kind = dict(self.checkpoints)[path]
        if kind == "damaged":
            raise backend.DamagedCheckpoint() from OSError("truncated record\nmore detail")
        if kind == "other":
            raise backend.CheckpointMismatch() from ValueError("shape (3, 4) != (5, 4)")
        return int(path.rsplit("-", 1)[1])

    def _restored(self, intact):
        self.kept = intact

    # The rest of the contract: not what `restore` uses.
    noise_parts = scope = _attach_checkpoints = _train_step = _loop = _build_evaluation = None
    probe_batch = average_moving_statistics = save = latest_checkpoint = preemption = None


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(capsys):
    fake = FakeBackend([("ckpt-4", "intact"), ("ckpt-8", "intact"), ("ckpt-12", "damaged")])
    assert fake.restore() == 8
    assert fake.loaded == ["ckpt-12", "ckpt-8"] and fake.kept == ["ckpt-4", "ckpt-8"]
    assert capsys.readouterr().out == (
        "kbatch: checkpoint ckpt-12 is damaged (OSError: truncated record); trying the one before.\n"
    )


def test_without_checkpoints_the_run_starts_at_step_0():
    assert FakeBackend([]).restore() == 0


def test_when_every_checkpoint_is_damaged_restore_raises_one_line():
    fake = FakeBackend([("ckpt-4", "damaged"), ("ckpt-8", "damaged")])
    with pytest.raises(
        ValueError,
        match=r"^config.model_dir='/runs/fake': none of its checkpoints is intact; move "
        r"the folder away to start afresh.$",
    ):
        fake.restore()
    assert fake.loaded == ["ckpt-8", "ckpt-4"] and fake.kept is None


def test_a_checkpoint_of_another_model_is_named_so_not_called_damaged(capsys):
    fake = FakeBackend([("ckpt-4", "intact"), ("ckpt-8", "other")])
    with pytest.raises(ValueError, match=r"checkpoint ckpt-8 holds another model \(shape \(3, 4\) != \(5, 4\)\)"):
        fake.restore()
    assert fake.loaded == ["ckpt-8"] and "damaged" not in capsys.readouterr().out
