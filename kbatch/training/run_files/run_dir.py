"""The run directory: what a run writes where, and the refusal to mix two runs in one folder.

`model_dir/config.json` is the resolved config. A `model_dir` that already holds a config.json
is resumed only when the config is the same; a folder with other files is never written into.
In multi-worker training only the chief writes to `model_dir`; the other workers write their
(required) checkpoint copies into a temporary folder of their own.
"""

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile

from kbatch.training.config import schema
from kbatch.training.run_files import run_lock

ESSENTIAL_FIELDS = ("dataset", "model", "batch_size", "num_epochs")  # written by every kbatch run
CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"
MODEL_FILE = "model.keras"


def default_model_dir(settings):
    """`runs/<model>-<dataset>-b<batch>-<config hash>`: the same config, the same folder, so the
    same command run again resumes (or finds the run finished); another config, another folder."""
    fields = {k: v for k, v in schema.as_json(settings).items() if k not in schema.MAY_CHANGE_ON_RESUME}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]
    name = f"{settings.model}-{settings.dataset.replace('/', '_')}-b{settings.batch_size}-{digest}"
    return os.path.join("runs", name)


def read_json(path, kind=dict):
    """The JSON in `path`, a `kind`; a ValueError naming the file when it is not readable JSON
    of that kind."""
    try:
        with open(path) as f:
            payload = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path} is not readable ({error}): it was damaged or not written by kbatch; move it away to start afresh."
        ) from None
    if not isinstance(payload, kind):
        raise ValueError(
            f"{path} holds a JSON {type(payload).__name__}, not the {kind.__name__} kbatch writes: "
            "it was damaged or not written by kbatch; move it away to start afresh."
        )
    return payload


def check(model_dir, config):
    """Raise a ValueError if `model_dir` holds something this run must not touch; `config` is
    the run's config (a ConfigDict, a dict or `Settings`), compared as `config.json` holds it.

    Returns None when there is no earlier run to resume, else {field: (saved, now)} for the fields
    that changed since (those of `schema.MAY_CHANGE_ON_RESUME`; `model_dir` itself is not
    compared, so a moved folder is the same run): {} when nothing changed."""
    if not os.path.exists(model_dir):
        _check_creatable(model_dir)
        return None
    if not os.path.isdir(model_dir):
        raise ValueError(f"config.model_dir={model_dir!r} exists and is not a directory.")
    saved_path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(saved_path):
        if set(os.listdir(model_dir)) - {run_lock.LOCK_FILE}:
            raise ValueError(
                f"config.model_dir={model_dir!r} holds files that are not a kbatch run; "
                "choose an empty or new directory."
            )
        return None
    saved = schema.completed(_saved_config(saved_path))
    current = json.loads(json.dumps(schema.as_json(schema.resolve(config))))
    changed = {
        k: (saved.get(k), current.get(k))
        for k in sorted(set(saved) | set(current))
        if k != "model_dir" and saved.get(k) != current.get(k)
    }
    fixed = [k for k in changed if k not in schema.MAY_CHANGE_ON_RESUME]
    if fixed:
        details = ", ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in fixed[:6])
        raise ValueError(
            f"config.model_dir={model_dir!r} holds a run with a different config ({details}); "
            "refusing to mix them: choose another model_dir (a resumed run may change only "
            f"{', '.join(schema.MAY_CHANGE_ON_RESUME)})."
        )
    return changed


def _saved_config(path):
    """`config.json` as saved; a ValueError if it is not a kbatch run's config (an empty dict,
    a list, fields missing that every kbatch run writes)."""
    saved = read_json(path)
    missing = [name for name in ESSENTIAL_FIELDS if name not in saved]
    if missing:
        raise ValueError(
            f"{path} is not a kbatch run's config (no {', '.join(missing)}): it was damaged or not "
            "written by kbatch; move the folder away to start afresh."
        )
    return saved


def _check_creatable(model_dir):
    """A ValueError unless `model_dir` can be made: its nearest existing parent is a folder."""
    parent = os.path.dirname(os.path.abspath(model_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"config.model_dir={model_dir!r} cannot be made: {parent!r} is a file.")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"config.model_dir={model_dir!r} cannot be made: {parent!r} is not writable.")


def finished_result(config):
    """The result of a finished run of `config` in its `model_dir`, or None if there is none yet,
    or if its `result.json` or `model.keras` is missing or damaged (`final_files_problems`: the
    run then writes them again from its last checkpoint). `check` refuses a folder holding a
    different run."""
    settings = schema.resolve(config)
    if check(settings.model_dir, settings) is None:
        return None
    return intact_result(settings.model_dir)


def intact_result(model_dir):
    """`result.json` of the run in `model_dir` when it and `model.keras` are there and intact, else None."""
    path = os.path.join(model_dir, RESULT_FILE)
    if not os.path.exists(path) or final_files_problems(model_dir):
        return None
    return read_json(path)


def final_files_problems(model_dir):
    """What is wrong with a finished run's `result.json` and `model.keras`, in words ([] when
    both are intact, or when the run has not finished: no `result.json` and none expected)."""
    path, model = os.path.join(model_dir, RESULT_FILE), os.path.join(model_dir, MODEL_FILE)
    if not os.path.exists(path):
        return []
    problems = []
    try:
        result = read_json(path)
        if "steps" not in result:
            problems.append(f"{RESULT_FILE} is not a kbatch result")
    except ValueError:
        problems.append(f"{RESULT_FILE} is damaged")
    if not os.path.exists(model):
        problems.append(f"{MODEL_FILE} is missing")
    elif not _intact_zip(model):
        problems.append(f"{MODEL_FILE} is damaged")
    return problems


def _intact_zip(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def checkpoint_mismatch(model_dir, checkpoint, error):
    """The ValueError for a checkpoint that reads but holds another model's variables."""
    text = str(error).strip()
    first = text.splitlines()[0][:160] if text else type(error).__name__
    return ValueError(
        f"config.model_dir={model_dir!r}: checkpoint {os.path.basename(checkpoint)} holds another model "
        f"({first}): the model or model_fn changed since this run started; train it with the "
        "model it started with, or choose another model_dir."
    )


def check_one_process(strategy):
    """A ValueError when TF_CONFIG describes a cluster of several tasks but `strategy` trains in
    one process: every task would train its own copy into the same model_dir."""
    if strategy in ("multiworker", "parameter_server") or not os.environ.get("TF_CONFIG"):
        return
    try:
        cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster") or {}
        tasks = sum(len(addresses) for addresses in cluster.values())
    except (ValueError, AttributeError, TypeError):
        return  # not a cluster description: nothing here reads it
    if tasks > 1:
        raise ValueError(
            f"config.strategy={strategy!r} trains in one process, but TF_CONFIG describes a cluster of {tasks} tasks: "
            "each would train its own copy into one model_dir; use strategy=multiworker (or parameter_server), "
            "or unset TF_CONFIG."
        )


def is_chief(strategy):
    """Whether this process writes the run's files (always, outside multi-worker training)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None) if resolver else None
    if not task_type:
        return True
    if task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def writable_dir(model_dir, strategy):
    """`model_dir` on the chief; a worker's own temporary folder elsewhere."""
    if is_chief(strategy):
        return model_dir
    resolver = strategy.cluster_resolver
    return tempfile.mkdtemp(prefix=f"kbatch-{resolver.task_type}-{resolver.task_id}-")


def write_json(path, payload):
    """Write JSON atomically: a reader never sees half a file."""
    write_atomically(path, lambda tmp: _dump(payload, tmp))


def _dump(payload, path):
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")


def write_atomically(path, write):
    """`write(tmp)` writes the file under a temporary name beside `path`, which then replaces
    `path` in one step: a kill at any point leaves the old file or the new one, never half."""
    base, ext = os.path.splitext(path)
    tmp = f"{base}.partial{ext}"  # the extension kept: Keras checks it when it saves a model
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def writing(model_dir, what, resume_from):
    """Turn a failed write into `model_dir` (a full disk, a folder made read-only) into one
    ValueError line saying what was being written and where the same command resumes from
    (`resume_from()`, called only then)."""
    try:
        yield
    except OSError as error:
        raise ValueError(
            f"config.model_dir={model_dir!r}: writing {what} failed ({error.strerror or error}); "
            f"make room or fix the folder, then run the same command to resume from "
            f"{resume_from() or 'the start'}."
        ) from None
