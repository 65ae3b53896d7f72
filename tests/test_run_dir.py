"""The run directory on its own: which folders a run may use, what counts as the same run, and
files written whole or not at all."""

import json
import os

import pytest

from kbatch.training.config import schema
from kbatch.training.run_files import run_dir

pytestmark = pytest.mark.fast


def _settings(**fields):
    return schema.resolve({"dataset": "mnist1d/original", **fields})


def _saved(folder, settings):
    folder.mkdir(parents=True, exist_ok=True)
    run_dir.write_json(str(folder / run_dir.CONFIG_FILE), schema.as_json(settings))


def test_a_new_or_empty_folder_has_no_run_to_resume(tmp_path):
    assert run_dir.check(str(tmp_path / "new"), _settings()) is None
    (tmp_path / "empty").mkdir()
    assert run_dir.check(str(tmp_path / "empty"), _settings()) is None


def test_the_same_config_resumes_and_a_moved_folder_is_the_same_run(tmp_path):
    settings = _settings(model_dir=str(tmp_path / "a"))
    _saved(tmp_path / "a", settings)
    assert run_dir.check(str(tmp_path / "a"), settings) == {}
    os.rename(tmp_path / "a", tmp_path / "b")
    assert run_dir.check(str(tmp_path / "b"), _settings(model_dir=str(tmp_path / "b"))) == {}


def test_a_resumed_run_may_change_the_learning_rate_but_not_the_batch(tmp_path):
    _saved(tmp_path / "a", _settings(base_learning_rate=1e6))
    assert run_dir.check(str(tmp_path / "a"), _settings()) == {"base_learning_rate": (1e6, 0.05)}
    with pytest.raises(ValueError, match=r"holds a run with a different config \(batch_size: 256 -> 64\)"):
        run_dir.check(str(tmp_path / "a"), _settings(base_learning_rate=1e6, batch_size=64))


def test_a_run_saved_before_a_field_existed_is_the_same_run_at_that_field_s_default(tmp_path):
    folder = tmp_path / "older"
    _saved(folder, _settings(model_dir=str(folder)))
    saved = json.loads((folder / run_dir.CONFIG_FILE).read_text())
    del saved["staleness"]  # a config.json written before config.staleness was added
    run_dir.write_json(str(folder / run_dir.CONFIG_FILE), saved)
    assert run_dir.check(str(folder), _settings(model_dir=str(folder))) == {}
    with pytest.raises(ValueError, match=r"different config \(staleness: 0 -> 2\)"):
        run_dir.check(str(folder), _settings(model_dir=str(folder), staleness=2))


def test_a_folder_of_other_files_or_a_file_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="holds files that are not a kbatch run"):
        run_dir.check(str(tmp_path / "mine"), _settings())
    with pytest.raises(ValueError, match="exists and is not a directory"):
        run_dir.check(str(tmp_path / "mine" / "notes.txt"), _settings())
    with pytest.raises(ValueError, match=r"cannot be made: .*notes.txt' is a file"):
        run_dir.check(str(tmp_path / "mine" / "notes.txt" / "run" / "deeper"), _settings())


def test_a_damaged_config_json_is_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / run_dir.CONFIG_FILE).write_text('{"batch_size": 2')
    with pytest.raises(ValueError, match=r"config.json is not readable .*move it away"):
        run_dir.check(str(tmp_path / "a"), _settings())


def test_the_default_folder_is_the_config_not_the_time():
    first, again = run_dir.default_model_dir(_settings()), run_dir.default_model_dir(_settings())
    assert first == again and first.startswith(os.path.join("runs", "mnist1d_cnn-mnist1d_original-b256-"))
    assert run_dir.default_model_dir(_settings(num_epochs=3)) != first
    # What a resumed run may change leaves the folder where it was.
    assert run_dir.default_model_dir(_settings(base_learning_rate=0.01, steps_per_loop=7)) == first


def test_a_trailing_slash_is_the_same_folder():
    assert _settings(model_dir="runs/x/").model_dir == _settings(model_dir="runs/./x").model_dir == "runs/x"


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "result.json"
    run_dir.write_json(str(path), {"old": 1})

    def fails_half_way(tmp):
        with open(tmp, "w") as f:
            f.write('{"new": ')
        raise OSError("disk full")

    with pytest.raises(OSError):
        run_dir.write_atomically(str(path), fails_half_way)
    assert json.loads(path.read_text()) == {"old": 1}  # the half-written one had its own name,
    assert not (tmp_path / "result.partial.json").exists()  # and a failed write (a full disk) removes it
    run_dir.write_json(str(path), {"new": 2})
    assert json.loads(path.read_text()) == {"new": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_run_folder_is_locked_once_per_process_and_a_released_lock_can_be_taken_again(tmp_path):
    """The lock of issue 31 (finding 1) in one process: flock conflicts between two opens of the
    file even in one process, so an untrained, unclosed Run is named as this process's own."""
    from kbatch.training.run_files import run_lock

    folder = str(tmp_path / "run")
    first = run_lock.acquire(folder)
    with pytest.raises(ValueError, match=r"held by an earlier Run of this process .*call \.close\(\)"):
        run_lock.acquire(folder)
    first.release()
    run_lock.acquire(folder).release()
    new = str(tmp_path / "new")
    refused = run_lock.acquire(new)
    assert os.listdir(new) == [run_lock.LOCK_FILE]
    refused.release(discard_empty=True)  # a refused run leaves no folder it made behind
    assert not os.path.exists(new) and os.listdir(folder) == [run_lock.LOCK_FILE]
