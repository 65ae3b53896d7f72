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
one is restored, onto however many devices and processes this run has. On SIGTERM the run saves
after the loop under way and raises `Preempted`.

Several processes (the hosts of a TPU pod slice; `tools/launch_local.py --jax_processes=N` here):
each joins the job first (`kbatch.jax_job.join`), the mesh spans every process's devices, each
process reads only its devices' rows of a global batch (`jax_input`), every process saves its
shards of a checkpoint together, process 0 alone writes the run's other files, and a SIGTERM on
any process is agreed on after each loop, so every process saves at the same step.
"""

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import types

import jax
import keras
import numpy as np
from jax.experimental import multihost_utils

from kbatch.training import stops, transforms
from kbatch.training.backends import backend, jax_input, jax_step, orbax_checkpoints
from kbatch.training.run_files import run_dir
from kbatch.training.run_files.event_writer import EventWriter

KEEP = 3  # checkpoints kept, as the TensorFlow backend's CheckpointManager
# Calls dispatched ahead of the newest finished one on several processes. On XLA:CPU with gloo
# collectives a loop of 50 single-update calls dispatched at once hung in every try (2 processes x
# 2 devices), with at most 4 queued none did; two keep the devices busy while the host prepares the next.
QUEUED_CALLS = 2
PARTS = ("trainable", "non_trainable", "optimizer")  # the state's parts, named in the checkpoint


def _abstract(array):
    """The shape, dtype and sharding of `array`, for compiling without its values."""
    return jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=array.sharding)


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
        self._checkpoints = orbax_checkpoints.OrbaxCheckpoints(
            os.path.join(settings.model_dir, "checkpoints"), KEEP, settings.async_checkpoints
        )

    def noise_parts(self, accumulation_steps):
        """(parts, halves): the micro-batches the noise scale compares with the whole batch (the
        jitted step sees the global batch, so the devices' shares are not separate gradients)."""
        return (2, True) if accumulation_steps == 1 else (accumulation_steps, False)

    def memory_budget_bytes(self):
        """`device_memory_gib`, else the first device's `bytes_limit` (GPU, TPU; None on CPU)."""
        if self.settings.device_memory_gib:
            return self.settings.device_memory_gib * 2**30
        stats = self.devices[0].memory_stats() or {}
        return stats.get("bytes_limit")

    def step_memory_bytes(self, micro_batch):
        """What XLA's buffer assignment gives one update of two accumulated micro-batches of
        `micro_batch` examples per device (arguments + outputs - the donated state they share +
        temporaries; more steps loop over the same buffers), compiled, not run."""
        size = 2 * micro_batch * self.num_replicas
        compiled = (
            self._train_step(types.SimpleNamespace(batch_size=size), 2)
            .lower(jax.tree.map(_abstract, self._state()), *self._abstract_batch(size))
            .compile()
        )
        stats = compiled.memory_analysis()
        arguments = stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
        return arguments + stats.temp_size_in_bytes

    def _abstract_batch(self, size):
        """Shapes, dtypes and shardings of a global batch of `size` (x, labels), as the loop sends it."""
        shapes = []
        for example in self.probe_batch(1):
            shape = (size, *np.shape(example)[1:])
            sharding = self.distribution.get_data_layout(shape).backend_layout
            shapes.append(jax.ShapeDtypeStruct(shape, np.asarray(example).dtype, sharding=sharding))
        return shapes

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

    def _rows(self, global_batch_size):
        """The rows [start, stop) of a global batch this process's devices hold."""
        return jax_input.process_rows(
            self.distribution.get_data_layout((global_batch_size,)).backend_layout, global_batch_size
        )

    def _train_step(self, phase, accumulation_steps):
        geometry = transforms.Geometry(phase.batch_size, accumulation_steps)
        return jax_step.make_train_step(self.model, self.optimizer, self.task, self.chain, geometry)

    def _loop(self, step, phase, start_example):
        s = self.settings
        size = phase.batch_size
        local = jax_input.local_train_batches(self.source, size, s.seed, start_example, self._rows(size))
        count = jax_step.updates_per_call(s.updates_per_call, phase.num_steps)
        calls = {n: jax_step.unrolled(step, n) for n in {count, 1}}

        def batches(n):
            return jax_input.stacked_global_arrays(self.distribution, size, [next(local) for _ in range(n)])

        def loop(num_steps):
            # Calls of `count` updates, dispatched asynchronously: the next call's batches
            # are read and sent while the current one runs; the records are read at the end.
            sizes = jax_step.call_sizes(num_steps, count)
            state, records, ahead = self._state(), [], batches(sizes[0])
            for i, n in enumerate(sizes):
                state, record = calls[n](state, *ahead)
                if self.multi_worker and len(records) >= QUEUED_CALLS:
                    jax.block_until_ready(records[-QUEUED_CALLS])
                records.append(record)
                if i + 1 < len(sizes):
                    ahead = batches(sizes[i + 1])
            self._write_back(state)
            records = jax.device_get(records)
            return {name: np.concatenate([r[name] for r in records]).astype(np.float32) for name in records[0]}

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
        if self.write_dir != self.settings.model_dir:
            shutil.rmtree(self.write_dir, ignore_errors=True)

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
