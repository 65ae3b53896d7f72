"""Runs under Keras on JAX for tests/test_jax_backend.py (which runs on TensorFlow):

  python tests/jax_worker.py train MODEL_DIR JSON_OVERRIDES   # kbatch's runner, the smooth model
                                                              # ("model_fn": "linear" for softmax regression)
  python tests/jax_worker.py steps IN.npz OUT.npz             # jax_step updates from given weights
  python tests/jax_worker.py mock MODEL_DIR JSON_CONFIG N      # kbatch's runner on a config's own model,
                                                              # under tfds.testing.mock_data(num_examples=N)
  python tests/jax_worker.py legacy MODEL_DIR JSON_OVERRIDES  # the run's newest checkpoint in kbatch's
                                                              # format before Orbax (ckpt-<step>.npz) only

Start it with KERAS_BACKEND=jax (and XLA_FLAGS=--xla_force_host_platform_device_count=N).
"""

import glob
import json
import os
import shutil
import sys

import keras
import numpy as np
from smooth_model import linear_model, smooth_model

from kbatch import jax_job

assert keras.backend.backend() == "jax", "start with KERAS_BACKEND=jax"
jax_job.join()  # a process of a multi-process job (tests/test_jax_processes.py) joins it first


def _config(model_dir, overrides):
    """The runner's config and model_fn for `train` and `legacy`."""
    config = {
        "dataset": "mnist1d/original",
        "backend": "jax",
        "batch_size": 128,
        "base_batch_size": 128,
        "num_epochs": 1,
        "warmup_epochs": 0.5,
        "steps_per_loop": 10,
        "model_dir": model_dir,
        **json.loads(overrides),
    }
    return config, {"smooth": smooth_model, "linear": linear_model}[config.pop("model_fn", "smooth")]


def train(model_dir, overrides):
    """The result, and `resumed_at`: the step the run started from (its checkpoint's, 0 for none)."""
    from kbatch.training import build_run, stops

    config, model_fn = _config(model_dir, overrides)
    run = build_run(config, model_fn=model_fn)
    resumed_at = run.step
    try:
        result = {k: v for k, v in run.train(verbose=False).items() if k != "history"}
    except tuple(kind for kind, _ in stops.CODES) as stop:  # as kbatch-train exits: 42 preempted, 3 diverged, ...
        print(f"stopped: {stop}", file=sys.stderr)
        sys.exit(next(code for kind, code in stops.CODES if isinstance(stop, kind)))
    print(json.dumps({**result, "resumed_at": resumed_at}))


def legacy(model_dir, overrides):
    """The run's newest checkpoint as kbatch wrote it before Orbax: `ckpt-<step>.npz` holding `step`
    and `v<i>` for each of the model's weights, then the optimizer's variables; Orbax's folders removed."""
    from kbatch.training import build_run

    config, model_fn = _config(model_dir, overrides)
    run = build_run(config, model_fn=model_fn)
    variables = [*run.model.weights, *run.optimizer.variables]
    checkpoints = os.path.join(model_dir, "checkpoints")
    arrays = {f"v{i}": np.asarray(v) for i, v in enumerate(variables)}
    np.savez(os.path.join(checkpoints, f"ckpt-{run.step}.npz"), step=run.step, **arrays)
    run.close()
    for folder in glob.glob(os.path.join(checkpoints, "ckpt_*")):
        shutil.rmtree(folder)
    print(run.step)


def mock(model_dir, config, num_examples):
    """kbatch's runner on TFDS mock data (random examples of the real shapes): the config's model."""
    import tensorflow_datasets as tfds

    from kbatch.training import train as run

    with tfds.testing.mock_data(num_examples=int(num_examples)):
        result = run({**json.loads(config), "backend": "jax", "model_dir": model_dir}, verbose=False)
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))


def steps(source, target):
    """The updates of `make_train_step` on the batches of `source`, from its weights."""
    import jax

    from kbatch.data.names import DatasetInfo
    from kbatch.training import Classification
    from kbatch.training.backends import jax_step
    from kbatch.training.transforms import Chain, Geometry, GlobalNorm

    saved = np.load(source)
    xs, ys = saved["xs"], saved["ys"]
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    with distribution.scope():
        model = smooth_model(DatasetInfo("given", 0, 0, xs.shape[2:], 10))
        model.set_weights([saved[f"w{i}"] for i in range(len(model.weights))])
        optimizer = keras.optimizers.SGD(float(saved["learning_rate"]), momentum=0.9)
        optimizer.build(model.trainable_variables)
    step = jax_step.make_train_step(
        model,
        optimizer,
        Classification(),
        Chain([GlobalNorm()]),
        Geometry(xs.shape[1], int(saved["accumulation_steps"])),
    )
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    losses = []
    for x, y in zip(xs, ys):
        x, y = (jax.device_put(a, distribution.get_data_layout(a.shape).backend_layout) for a in (x, y))
        state, record = step(state, x, y)
        losses.append(float(record["loss"]) / float(record["count"]))
    np.savez(target, losses=np.array(losses), **{f"w{i}": np.asarray(w) for i, w in enumerate(state[0])})


COMMANDS = {"train": train, "steps": steps, "mock": mock, "legacy": legacy}

if __name__ == "__main__":
    jax_job.leaving_at_once_on_error(lambda argv: COMMANDS[argv[1]](*argv[2:]))(sys.argv)
