"""The TensorFlow backend: what the runner asks of `tf.distribute`, in one place.

The runner (`kbatch.training.runner`) calls only these methods; a second backend (Keras on JAX)
provides the same ones:

  num_replicas, is_chief            the data-parallel layout, and whether this process writes
  layout                            the layout in words, for the progress line
  multi_worker                      whether several processes train together
  describe_data()                   a `DatasetInfo` (sizes, input shape, classes)
  scope()                           where the model and optimizer are created
  start_phase(phase, start_example) -> loop(num_steps): {field: [num_steps] numpy array}
  evaluate()                        {field: sum over the evaluation split} (and `count`)
  average_moving_statistics()       one set of BN moving statistics on every replica
  restore() -> step, save(step)     checkpoints of the model, optimizer and step
  all_finite()                      whether every weight and optimizer slot is finite
  latest_checkpoint                 the newest checkpoint's path, or None
  preemption(save)                  a context yielding `check(step)`: save and stop if preempted
  summaries                         a `Summaries` writer for TensorBoard
  close()                           remove what only this process needed
"""

import contextlib
import glob
import os
import shutil

import numpy as np
import tensorflow as tf

from kbatch import data, distribute, layers
from kbatch.training import checkpoint_files, preemption, run_dir, tf_step, transforms
from kbatch.training.summaries import Summaries


class TensorFlowBackend:
    """One run's `tf.distribute` strategy, input streams, compiled loops and checkpoints."""

    def __init__(self, settings, strategy=None):
        if settings.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.settings = settings
        self.strategy = strategy or distribute.resolve_strategy(settings.strategy)
        self.num_replicas = self.strategy.num_replicas_in_sync
        self.layout = f"{self.num_replicas} replica(s)"  # what the progress line says of the devices
        self.is_chief = run_dir.is_chief(self.strategy)
        self.multi_worker = bool(getattr(getattr(self.strategy, "cluster_resolver", None), "task_type", None))
        self.summaries = Summaries(settings.model_dir, enabled=self.is_chief)
        self.write_dir = None  # where this process writes checkpoints: set by `attach`

    def noise_parts(self):
        """(parts, halves): how many gradients of a part of the global batch the noise scale
        compares with the whole (replicas x micro-batches), and whether that splits one batch."""
        parts, _ = tf_step.noise_parts(self.num_replicas, self.settings.accumulation_steps)
        return parts, self.num_replicas * self.settings.accumulation_steps == 1

    def describe_data(self):
        return data.describe(self.settings.dataset, self.settings.data_dir)

    def scope(self):
        return self.strategy.scope()

    def attach(self, model, optimizer, task):
        """The model, optimizer and task this backend trains; builds the optimizer's slots and
        the checkpoint (call inside `scope()`, once)."""
        self.model, self.optimizer, self.task = model, optimizer, task
        optimizer.build(model.trainable_variables)
        self._trained_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="trained_steps")
        # The transforms' state is optimizer variables: the checkpoint's `optimizer` holds it.
        self.chain = transforms.from_settings(self.settings, optimizer, model)
        guard = self.chain.get(transforms.SpikeGuard)
        guarded = {"loss_spike": list(guard.variables)} if guard else {}
        self._checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, trained_steps=self._trained_steps,
                                               **guarded)
        # On the chief, `model_dir/checkpoints`; elsewhere a temporary folder (a worker's saves
        # take part in the collective and are thrown away).
        self.write_dir = run_dir.writable_dir(self.settings.model_dir, self.strategy)
        self._manager = self._new_manager()

    def _new_manager(self):
        return tf.train.CheckpointManager(self._checkpoint, os.path.join(self.write_dir, "checkpoints"), max_to_keep=3)

    def restore(self):
        """The step of the chief's newest intact checkpoint, restored (0 when there is none). A
        damaged one is skipped, saying so, and no longer listed in the state file (it stays on
        disk); a ValueError when every one is damaged, or when they hold another model. Without a
        readable state file the checkpoint files themselves are found. Every worker restores the
        chief's: workers resuming from different steps would wait on each other."""
        directory = os.path.join(self.settings.model_dir, "checkpoints")
        listed = checkpoint_files.listed(directory)
        intact = list(listed)
        while intact:
            try:
                self._checkpoint.restore(intact[-1]).assert_existing_objects_matched()
                break
            except (AssertionError, ValueError) as error:  # the files read, but hold another model
                raise run_dir.checkpoint_mismatch(self.settings.model_dir, intact[-1], error) from None
            except (tf.errors.OpError, IndexError) as error:  # IndexError: truncated
                print(f"kbatch: checkpoint {intact[-1]} is damaged ({type(error).__name__}: "
                      f"{str(error).splitlines()[0][:120]}); trying the one before.", flush=True)
                intact.pop()
        if listed and not intact:
            raise ValueError(f"config.model_dir={self.settings.model_dir!r}: none of its checkpoints is intact; "
                             "move the folder away to start afresh.")
        if intact and intact != checkpoint_files.state_listing(directory) and self.is_chief:
            # TensorFlow's preemption handler restores the newest listed checkpoint itself.
            checkpoint_files.write_state(directory, intact)
            self._manager = self._new_manager()
        return int(self._trained_steps.numpy())

    def all_finite(self):
        """Whether every weight and optimizer variable is finite (what a checkpoint may hold)."""
        variables = [*self.model.weights, *self.optimizer.variables]
        return all(np.isfinite(v.numpy()).all() for v in variables
                   if np.issubdtype(np.dtype(v.dtype), np.floating))

    def save(self, step):
        """A checkpoint at `step`; an OSError when it cannot be written (a full disk), with its
        half-written files removed."""
        self._trained_steps.assign(step)
        try:
            self._manager.save(checkpoint_number=step)
        except tf.errors.OpError as error:
            folder = os.path.join(self.write_dir, "checkpoints")
            for partial in glob.glob(os.path.join(folder, f"ckpt-{step}.*")) + glob.glob(os.path.join(folder, f"ckpt-{step}_temp*")):
                shutil.rmtree(partial) if os.path.isdir(partial) else os.remove(partial)
            raise OSError(error.message.splitlines()[0][:200]) from None

    @property
    def latest_checkpoint(self):
        return self._manager.latest_checkpoint

    def start_phase(self, phase, start_example):
        """`loop(num_steps)` over the input stream of `phase` from `start_example` on, traced anew
        (the recipe's Python numbers, BN momenta among them, are read now)."""
        s = self.settings
        step = tf_step.make_train_step(self.strategy, self.model, self.optimizer, self.task, self.chain,
                                       transforms.Geometry(phase.batch_size, s.accumulation_steps), s.jit_compile)
        compiled = tf_step.make_train_loop(self.strategy, step)
        stream = data.train_dataset_fn(s.dataset, phase.batch_size, s.seed, s.data_dir, start_example=start_example)
        iterator = iter(data.distribute(self.strategy, stream))

        def loop(num_steps):
            records = compiled(iterator, tf.constant(num_steps, tf.int32))
            return {name: value.numpy() for name, value in records.items()}

        return loop

    def evaluate(self):
        """The task's values summed over the evaluation split, and `count` (built on first use)."""
        if not hasattr(self, "_evaluate"):
            s = self.settings
            eval_batch = s.batch_size // s.accumulation_steps
            self._eval_data = data.distribute(self.strategy, data.eval_dataset_fn(s.dataset, eval_batch, s.data_dir))
            self._evaluate = tf_step.make_eval_loop(self.strategy, self.model, self.task)
        return {name: float(value) for name, value in self._evaluate(self._eval_data).items()}

    def probe_batch(self, size):
        """The first `size` examples of the evaluation split (fewer if it has fewer), as NumPy
        `(x, y)`: the fixed batch the diagnostics measure on."""
        return data.first_eval_examples(self.settings.dataset, size, self.settings.data_dir)

    def average_moving_statistics(self):
        layers.average_moving_statistics(self.model, self.strategy)

    @contextlib.contextmanager
    def preemption(self, save, current_step):
        """Yields `check(step)`, which saves (with `save`) and raises `Preempted` once the machine
        is going away (TensorFlow's PreemptionCheckpointHandler watches)."""
        with preemption.handler(self.strategy, self._manager, save, current_step) as watcher:
            yield (lambda step: watcher.save_checkpoint_if_preempted(checkpoint_number=step)) if watcher else (
                lambda step: None)

    def close(self):
        self.summaries.flush()
        if not self.is_chief and self.write_dir:
            shutil.rmtree(self.write_dir, ignore_errors=True)
