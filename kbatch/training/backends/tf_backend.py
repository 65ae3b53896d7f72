"""The TensorFlow backend: `tf.distribute` under the `Backend` contract (`kbatch.training.backends.backend`
says what the runner asks of a backend).

Its own parts: the strategy and its layout, `tf.data` input distributed over the replicas, the
step and loop compiled with `tf.function` (`tf_step`), `tf.train` checkpoints in
`model_dir/checkpoints` (the files themselves when the state file is gone: `checkpoint_files`),
and TensorFlow's preemption handler.
"""

import contextlib
import glob
import os
import shutil

import tensorflow as tf

from kbatch import data, distribute, layers
from kbatch.training import transforms
from kbatch.training.backends import backend, checkpoint_files, preemption, tf_step
from kbatch.training.run_files import run_dir
from kbatch.training.run_files.summaries import Summaries


class TensorFlowBackend(backend.Backend):
    """One run's `tf.distribute` strategy, input streams, compiled loops and checkpoints."""

    def __init__(self, settings, strategy=None):
        if settings.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.strategy = strategy or distribute.resolve_strategy(settings.strategy)
        multi_worker = bool(getattr(getattr(self.strategy, "cluster_resolver", None), "task_type", None))
        super().__init__(
            settings, self.strategy.num_replicas_in_sync, run_dir.is_chief(self.strategy), Summaries, multi_worker
        )

    def noise_parts(self, accumulation_steps):
        """(parts, halves): replicas x micro-batches, and whether that splits one batch."""
        parts, _ = tf_step.noise_parts(self.num_replicas, accumulation_steps)
        return parts, self.num_replicas * accumulation_steps == 1

    def use_source(self, source):
        source.tf_prepare()
        super().use_source(source)

    def scope(self):
        return self.strategy.scope()

    def _attach_checkpoints(self):
        self._trained_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="trained_steps")
        # The transforms' state is optimizer variables: the checkpoint's `optimizer` holds it.
        guard = self.chain.get(transforms.SpikeGuard)
        guarded = {"loss_spike": list(guard.variables)} if guard else {}
        self._checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, trained_steps=self._trained_steps, **guarded
        )
        # On the chief, `model_dir/checkpoints`; elsewhere a temporary folder (a worker's saves
        # take part in the collective and are thrown away).
        self.write_dir = run_dir.writable_dir(self.settings.model_dir, self.strategy)
        self._manager = self._new_manager()

    def _new_manager(self):
        return tf.train.CheckpointManager(self._checkpoint, os.path.join(self.write_dir, "checkpoints"), max_to_keep=3)

    def _checkpoint_directory(self):
        return os.path.join(self.settings.model_dir, "checkpoints")

    def _checkpoint_candidates(self):
        """The chief's checkpoints: those its state file lists, or without a readable state file
        the checkpoint files themselves. Every worker restores the chief's: workers resuming from
        different steps would wait on each other."""
        return checkpoint_files.listed(self._checkpoint_directory())

    def _load_checkpoint(self, path):
        try:
            self._checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError) as error:  # the files read, but hold another model
            raise backend.CheckpointMismatch() from error
        except (tf.errors.OpError, IndexError) as error:  # IndexError: truncated
            raise backend.DamagedCheckpoint() from error
        return int(self._trained_steps.numpy())

    def _restored(self, intact):
        """A damaged checkpoint is no longer listed in the state file (it stays on disk), and a
        missing state file is written again."""
        directory = self._checkpoint_directory()
        if intact != checkpoint_files.state_listing(directory) and self.is_chief:
            # TensorFlow's preemption handler restores the newest listed checkpoint itself.
            checkpoint_files.write_state(directory, intact)
            self._manager = self._new_manager()

    def save(self, step):
        """A checkpoint at `step`; an OSError when it cannot be written (a full disk), with its
        half-written files removed."""
        self._trained_steps.assign(step)
        try:
            self._manager.save(checkpoint_number=step)
        except tf.errors.OpError as error:
            folder = os.path.join(self.write_dir, "checkpoints")
            for pattern in (f"ckpt-{step}.*", f"ckpt-{step}_temp*"):
                for partial in glob.glob(os.path.join(folder, pattern)):
                    shutil.rmtree(partial) if os.path.isdir(partial) else os.remove(partial)
            raise OSError(error.message.splitlines()[0][:200]) from None

    @property
    def latest_checkpoint(self):
        return self._manager.latest_checkpoint

    def _train_step(self, phase, accumulation_steps):
        return tf_step.make_train_step(
            self.strategy,
            self.model,
            self.optimizer,
            self.task,
            self.chain,
            transforms.Geometry(phase.batch_size, accumulation_steps),
            self.settings.jit_compile,
        )

    def _loop(self, step, phase, start_example):
        """`step` compiled into one `tf.function` loop over the distributed input stream."""
        s = self.settings
        compiled = tf_step.make_train_loop(self.strategy, step)
        stream = self.source.tf_train_dataset_fn(phase.batch_size, s.seed, start_example)
        iterator = iter(data.distribute(self.strategy, stream))

        def loop(num_steps):
            records = compiled(iterator, tf.constant(num_steps, tf.int32))
            return {name: value.numpy() for name, value in records.items()}

        return loop

    def _evaluation_strategy(self):
        """The strategy the evaluation runs under."""
        return self.strategy

    def _build_evaluation(self):
        s, strategy = self.settings, self._evaluation_strategy()
        eval_data = data.distribute(strategy, self.source.tf_eval_dataset_fn(s.batch_size // s.accumulation_steps))
        evaluate = tf_step.make_eval_loop(strategy, self.model, self.task)
        return lambda: evaluate(eval_data)

    def probe_batch(self, size):
        return self.source.tf_probe_examples(size)

    def average_moving_statistics(self):
        layers.average_moving_statistics(self.model, self.strategy)

    @contextlib.contextmanager
    def preemption(self, save, current_step):
        """TensorFlow's PreemptionCheckpointHandler watches for the notice."""
        with preemption.handler(self.strategy, self._manager, save, current_step) as watcher:
            yield (
                (lambda step: watcher.save_checkpoint_if_preempted(checkpoint_number=step))
                if watcher
                else (lambda step: None)
            )

    def close(self):
        super().close()
        if not self.is_chief and self.write_dir != self.settings.model_dir:
            shutil.rmtree(self.write_dir, ignore_errors=True)
