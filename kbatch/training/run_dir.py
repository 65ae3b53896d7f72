"""The run directory: what a run writes where, and the refusal to mix two runs in one folder.

`model_dir/config.json` is the resolved config. A `model_dir` that already holds a config.json
is resumed only when the config is the same; a folder with other files is never written into.
In multi-worker training only the chief writes to `model_dir`; the other workers write their
(required) checkpoint copies into a temporary folder of their own.
"""

import datetime
import json
import os
import tempfile

from kbatch.training import schema

CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"
MODEL_FILE = "model.keras"


def default_model_dir(settings):
    """`runs/<model>-<dataset>-b<batch>-<time>`."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{settings.model}-{settings.dataset.replace('/', '_')}-b{settings.batch_size}-{stamp}")


def check(model_dir, config):
    """Raise a ValueError if `model_dir` holds something this run must not touch; `config` is
    the run's config (a ConfigDict, a dict or `Settings`), compared as `config.json` holds it.

    Returns True if it holds an earlier run of the same config (to be resumed)."""
    if not os.path.exists(model_dir):
        return False
    if not os.path.isdir(model_dir):
        raise ValueError(f"config.model_dir={model_dir!r} exists and is not a directory.")
    saved_path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(saved_path):
        if os.listdir(model_dir):
            raise ValueError(
                f"config.model_dir={model_dir!r} holds files that are not a kbatch run; "
                "choose an empty or new directory."
            )
        return False
    with open(saved_path) as f:
        saved = json.load(f)
    current = json.loads(json.dumps(schema.as_json(schema.resolve(config))))
    if saved != current:
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:6])
        raise ValueError(
            f"config.model_dir={model_dir!r} holds a run with a different config ({details}); "
            "refusing to mix them: choose another model_dir."
        )
    return True


def finished_result(config):
    """The result of a finished run of `config` in its `model_dir`, or None if there is none yet
    (`check` refuses a folder holding a different run)."""
    settings = schema.resolve(config)
    path = os.path.join(settings.model_dir, RESULT_FILE)
    if check(settings.model_dir, settings) and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


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
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
