"""The JAX backend: Keras on JAX over `keras.distribution.DataParallel`, the live TPU path (and a
GPU one), under the `Backend` contract (`kbatch.training.backends.backend`).

Data parallel over the devices `config.strategy` names, with the TensorFlow backend's meaning:
`auto`/`tpu`/`mirrored` every device (TPU cores, GPUs), `one_device` the first, `cpu:N` N host
CPUs (forced with `XLA_FLAGS=--xla_force_host_platform_device_count=N`). The state lives on the devices between
loops and is written back to the Keras variables after each loop, so the model, evaluation and
`model.keras` see the trained weights. Input is the run's `kbatch.data.Source` in its NumPy form
(the built-in MNIST-1D with no TensorFlow; mnist, cifar10, cifar100 through TFDS, from
`config.data_dir`; a user's arrays or iterable). Checkpoints
are Orbax's, `checkpoints/ckpt_<step>/` (every weight and optimizer variable; `orbax_checkpoints`),
committed whole or not at all, asynchronous with `config.async_checkpoints`; the newest intact
one is restored, onto however many devices this run has. On SIGTERM the run saves after the loop
under way and raises `Preempted`. Several hosts: `jax.distributed.initialize()` before kbatch
runs (one process per host); not tested here.
"""

import contextlib
import os
import signal
import threading

import jax
import keras
import numpy as np

from kbatch.training import stops, transforms
from kbatch.training.backends import backend, jax_step, orbax_checkpoints
from kbatch.training.run_files import run_dir
from kbatch.training.run_files.event_writer import EventWriter

KEEP = 3  # checkpoints kept, as the TensorFlow backend's CheckpointManager
PARTS = ("trainable", "non_trainable", "optimizer")  # the state's parts, named in the checkpoint


def select_devices(strategy):
    """The devices `config.strategy` names on JAX; a one-line error for what JAX does otherwise."""
    if strategy in ("auto", "tpu", "mirrored"):
        return jax.devices()
    if strategy == "one_device":
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
        super().__init__(settings, len(self.devices), jax.process_index() == 0, EventWriter)
        self._checkpoints = orbax_checkpoints.OrbaxCheckpoints(
            os.path.join(settings.model_dir, "checkpoints"), KEEP, settings.async_checkpoints
        )

    def noise_parts(self):
        """(parts, halves): the micro-batches the noise scale compares with the whole batch (the
        jitted step sees the global batch, so the devices' shares are not separate gradients)."""
        k = self.settings.accumulation_steps
        return (2, True) if k == 1 else (k, False)

    def scope(self):
        return self.distribution.scope()

    def _attach_checkpoints(self):
        """Nothing to build: a checkpoint is the state's arrays, written by Orbax."""

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

    def _batch(self, *arrays):
        """Host arrays of a global batch, split along the batch axis over the devices."""
        return [jax.device_put(a, self.distribution.get_data_layout(a.shape).backend_layout) for a in arrays]

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
        stream = self.source.train_batches(phase.batch_size, s.seed, start_example)

        def loop(num_steps):
            # One jitted call per update, dispatched asynchronously; the records are read at the
            # end. (One `lax.scan` over all the loop's batches ran 13x slower on XLA:CPU, measured.)
            state, records = self._state(), []
            for _ in range(num_steps):
                state, record = step(state, *self._batch(*next(stream)))
                records.append(record)
            self._write_back(state)
            return {name: np.array([float(r[name]) for r in records], np.float32) for name in records[0]}

        return loop

    def _build_evaluation(self):
        """The jitted evaluation step over the evaluation split's batches, on the current weights."""
        step, s = jax_step.make_eval_step(self.model, self.task), self.settings

        def evaluate():
            trainable, non_trainable, _ = self._state()
            totals = {}
            for batch in self.source.eval_batches(s.batch_size // s.accumulation_steps):
                for name, value in step(trainable, non_trainable, *self._batch(*batch)).items():
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
        """`ckpt_<step>`, committed whole or not at all (every process saves its shards); the oldest
        beyond `KEEP` removed."""
        self._checkpoints.save(step, dict(zip(PARTS, self._state())))

    def _checkpoint_candidates(self):
        return self._checkpoints.candidates()

    def _load_checkpoint(self, path):
        if orbax_checkpoints.is_legacy(path):
            return orbax_checkpoints.read_legacy(path, self._variables())
        step, state = self._checkpoints.load(path, dict(zip(PARTS, self._state())))
        self._write_back([state[part] for part in PARTS])
        return step

    def _restored(self, intact):
        """The damaged checkpoints newer than the restored one are deleted: their steps are saved again."""
        self._checkpoints.discard_after(intact[-1])

    @property
    def latest_checkpoint(self):
        """The newest checkpoint's path (once a save in flight is written), or None."""
        paths = self._checkpoint_candidates()
        return paths[-1] if paths else None

    def close(self):
        """Also wait for a checkpoint in flight (before a preempted process exits); one line if it failed."""
        super().close()
        with run_dir.writing(self.settings.model_dir, "a checkpoint in the background", lambda: self.latest_checkpoint):
            self._checkpoints.close()

    @contextlib.contextmanager
    def preemption(self, save, current_step):
        """Yields `check(step)`: after SIGTERM, save and raise `Preempted` (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield lambda step: None
            return
        seen = []
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))

        def check(step):
            if seen:
                save(step)
                raise stops.Preempted(step, self.latest_checkpoint)

        try:
            yield check
        finally:
            signal.signal(signal.SIGTERM, previous)
