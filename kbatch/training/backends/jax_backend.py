"""The JAX backend: Keras on JAX over `keras.distribution.DataParallel`, the live TPU path (and a
GPU one), under the `Backend` contract (`kbatch.training.backends.backend`).

Data parallel over the devices `config.strategy` names, with the TensorFlow backend's meaning:
`auto`/`tpu`/`mirrored` every device (TPU cores, GPUs), `one_device` the first, `cpu:N` N host
CPUs (forced with `XLA_FLAGS=--xla_force_host_platform_device_count=N`). The state lives on the devices between
loops and is written back to the Keras variables after each loop, so the model, evaluation and
`model.keras` see the trained weights. Input is the run's `kbatch.data.Source` in its NumPy form
(the built-in MNIST-1D with no TensorFlow; mnist, cifar10, cifar100 through TFDS, from
`config.data_dir`; a user's arrays or iterable). Checkpoints
are `checkpoints/ckpt-<step>.npz` (every weight and optimizer variable, and the step), written
whole or not at all; the newest intact one is restored. On SIGTERM the run saves after the loop
under way and raises `Preempted`. Several hosts: `jax.distributed.initialize()` before kbatch
runs (one process per host); not tested here.
"""

import contextlib
import glob
import os
import re
import shutil
import signal
import tempfile
import threading
import zipfile

import jax
import keras
import numpy as np
from jax.experimental import multihost_utils

from kbatch.training import stops, transforms
from kbatch.training.backends import backend, jax_input, jax_step
from kbatch.training.run_files import run_dir
from kbatch.training.run_files.event_writer import EventWriter

KEEP = 3  # checkpoints kept, as the TensorFlow backend's CheckpointManager
# Steps dispatched ahead of the newest finished one on several processes. On XLA:CPU with gloo
# collectives a loop of 50 steps dispatched at once hung in every try (2 processes x 2 devices),
# with at most 4 queued none did; two keep the devices busy while the host prepares the next.
QUEUED_STEPS = 2


def select_devices(strategy):
    """The devices `config.strategy` names on JAX; a one-line error for what JAX does otherwise."""
    if strategy in ("auto", "tpu", "mirrored"):
        return jax.devices()
    if strategy == "one_device":
        if jax.process_count() > 1:
            raise ValueError(
                f"config.strategy='one_device' trains on one device, but this job has {jax.process_count()} processes: "
                "use auto (every device of every process) or cpu:N."
            )
        return jax.devices()[:1]
    if strategy.startswith("cpu:"):
        count, cpus = int(strategy[4:]), jax.devices("cpu")
        if len(cpus) < count:
            raise ValueError(
                f"config.strategy={strategy!r} needs {count} host CPU devices, and JAX has {len(cpus)}: "
                f"start Python with XLA_FLAGS=--xla_force_host_platform_device_count={count}."
            )
        return cpus[:count]
    raise ValueError(
        f"config.strategy={strategy!r}: with config.backend='jax' must be auto, tpu, mirrored, "
        "one_device or cpu:N (several hosts join through jax.distributed.initialize(), then auto)."
    )


class JaxBackend(backend.Backend):
    """One run's device mesh, input stream, compiled step and checkpoints."""

    def __init__(self, settings, strategy=None):
        if strategy is not None:
            raise ValueError("config.backend='jax' takes no tf.distribute strategy: it uses every local device.")
        self.devices = select_devices(settings.strategy)
        self.distribution = keras.distribution.DataParallel(devices=self.devices)
        processes = jax.process_count()
        super().__init__(settings, len(self.devices), jax.process_index() == 0, EventWriter, processes > 1)
        if processes > 1:
            self.layout = f"{len(self.devices)} replica(s) on {processes} processes"
        if not self.is_chief:  # history.json is the chief's; the checkpoints are written by all
            self.write_dir = tempfile.mkdtemp(prefix=f"kbatch-process-{jax.process_index()}-")
        self._checkpoints = os.path.join(settings.model_dir, "checkpoints")

    def noise_parts(self):
        """(parts, halves): the micro-batches the noise scale compares with the whole batch (the
        jitted step sees the global batch, so the devices' shares are not separate gradients)."""
        k = self.settings.accumulation_steps
        return (2, True) if k == 1 else (k, False)

    def scope(self):
        return self.distribution.scope()

    def _attach_checkpoints(self):
        """Nothing to build: a checkpoint is the variables' values, written with NumPy."""

    def _state(self):
        return (
            [v.value for v in self.model.trainable_variables],
            [v.value for v in self.model.non_trainable_variables],
            [v.value for v in self.optimizer.variables],
        )

    def _write_back(self, state):
        for variables, values in zip(
            (self.model.trainable_variables, self.model.non_trainable_variables, self.optimizer.variables), state
        ):
            for variable, value in zip(variables, values):
                variable.assign(value)

    def _rows(self, global_batch_size):
        """The rows [start, stop) of a global batch this process's devices hold."""
        return jax_input.process_rows(
            self.distribution.get_data_layout((global_batch_size,)).backend_layout, global_batch_size
        )

    def _train_step(self, phase):
        s = self.settings
        return jax_step.make_train_step(
            self.model,
            self.optimizer,
            self.task,
            self.chain,
            transforms.Geometry(phase.batch_size, s.accumulation_steps),
        )

    def _loop(self, step, phase, start_example):
        s = self.settings
        size = phase.batch_size
        local = jax_input.local_train_batches(self.source, size, s.seed, start_example, self._rows(size))
        stream = jax_input.ahead(jax_input.global_arrays(self.distribution, size, batch) for batch in local)

        def loop(num_steps):
            # One jitted call per update, dispatched asynchronously; the records are read at the
            # end. (One `lax.scan` over all the loop's batches ran 13x slower on XLA:CPU, measured.)
            state, records = self._state(), []
            for _ in range(num_steps):
                state, record = step(state, *next(stream))
                if self.multi_worker and len(records) >= QUEUED_STEPS:
                    jax.block_until_ready(records[-QUEUED_STEPS])
                records.append(record)
            self._write_back(state)
            return {name: np.array([float(r[name]) for r in records], np.float32) for name in records[0]}

        return loop

    def _build_evaluation(self):
        """The jitted evaluation step over the evaluation split's batches, on the current weights."""
        step, s = jax_step.make_eval_step(self.model, self.task), self.settings
        size = s.batch_size // s.accumulation_steps

        def evaluate():
            trainable, non_trainable, _ = self._state()
            totals = {}
            for batch in jax_input.local_eval_batches(self.source, size, self._rows(size)):
                for name, value in step(
                    trainable, non_trainable, *jax_input.global_arrays(self.distribution, size, batch)
                ).items():
                    totals[name] = totals.get(name, 0.0) + float(value)
            return totals

        return evaluate

    def probe_batch(self, size):
        """The first `size` examples of the evaluation split (fewer if it has fewer), as NumPy
        `(x, y)`: the fixed batch the diagnostics measure on."""
        return self.source.probe_examples(size)

    def average_moving_statistics(self):
        """Nothing to do: under DataParallel every variable is one array (replicated)."""

    def save(self, step):
        """`ckpt-<step>.npz`, written whole or not at all; the oldest beyond `KEEP` removed."""
        arrays = {f"v{i}": np.asarray(v) for i, v in enumerate(self._variables())}
        if not self.is_chief:  # TEMPORARY until Orbax: one writer
            return
        os.makedirs(self._checkpoints, exist_ok=True)
        run_dir.write_atomically(
            os.path.join(self._checkpoints, f"ckpt-{step}.npz"), lambda tmp: np.savez(tmp, step=step, **arrays)
        )
        for old in self._checkpoint_candidates()[:-KEEP]:
            os.remove(old)

    def _checkpoint_candidates(self):
        found = glob.glob(os.path.join(self._checkpoints, "ckpt-*.npz"))
        return sorted(found, key=lambda p: int(re.search(r"ckpt-(\d+)\.npz$", p).group(1)))

    def _load_checkpoint(self, path):
        variables = self._variables()
        try:
            with np.load(path) as saved:
                arrays = {name: saved[name] for name in saved.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise backend.DamagedCheckpoint() from error
        values = [arrays.get(f"v{i}") for i in range(len(variables))]
        if len(arrays) != len(variables) + 1 or [np.shape(v) for v in values] != [tuple(v.shape) for v in variables]:
            raise backend.CheckpointMismatch() from ValueError(
                f"{len(arrays) - 1} arrays, this model has {len(variables)} variables, or their shapes differ"
            )
        for variable, value in zip(variables, values):
            variable.assign(value)
        return int(arrays["step"])

    @property
    def latest_checkpoint(self):
        paths = self._checkpoint_candidates()
        return paths[-1] if paths else None

    @contextlib.contextmanager
    def preemption(self, save, current_step):
        """Yields `check(step)`: once any process has had SIGTERM, every process saves at the same
        step and raises `Preempted` (signals are watched on the main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield lambda step: None
            return
        seen = []
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))

        def check(step):
            if self._anywhere(bool(seen)):
                save(step)
                raise stops.Preempted(step, self.latest_checkpoint)

        try:
            yield check
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _anywhere(self, flag):
        """Whether `flag` holds on any process (every process calls this at the same step)."""
        if not self.multi_worker:
            return flag
        return bool(multihost_utils.process_allgather(np.asarray(flag)).any())

    def close(self):
        super().close()
        if self.write_dir != self.settings.model_dir:
            shutil.rmtree(self.write_dir, ignore_errors=True)
