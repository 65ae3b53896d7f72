"""What the runner asks of a backend, and what every backend does the same way.

`Backend` is the contract (`kbatch.training.runner` and `actions` call only its members) and the
shared parts: restoring the newest intact checkpoint, `all_finite`, the evaluation built on first
use, the layout attributes, the summaries and `close`. Each backend's file holds only its own
step, loop, checkpoint format and preemption notice (TensorFlow `tf_backend`, parameter servers
`ps_backend`, JAX `jax_backend`), as Keras's `Trainer` holds what `JAXTrainer` and
`TensorFlowTrainer` share. No TensorFlow or JAX here: kbatch imports under Keras on JAX.
"""

import abc

import numpy as np

from kbatch.training import transforms
from kbatch.training.run_files import run_dir


class DamagedCheckpoint(Exception):
    """A checkpoint that cannot be read (truncated, corrupt): the one before it is tried.
    Raised by `Backend._load_checkpoint` from the backend's own error."""


class CheckpointMismatch(Exception):
    """A checkpoint that reads but holds another model's variables: the run stops, saying so.
    Raised by `Backend._load_checkpoint` from the backend's own error."""


class Backend(abc.ABC):
    """One run's devices, input stream, compiled loops and checkpoints.

    Attributes the runner and actions read (set by `__init__`):
      settings        the run's `Settings`
      num_replicas    the data-parallel replicas an update's global batch is split over
      is_chief        whether this process writes the run folder (checkpoints, logs, results)
      multi_worker    whether several processes train in step (a collective: no Ctrl-C save)
      layout          the layout in words, for the progress line
      summaries       a `GroupWriters` for TensorBoard (a no-op off the chief)
      write_dir       the folder this process writes `checkpoints/` and `history.json` into
                      (set by `attach` when it differs from `model_dir`)
    and, once `attach`ed, `model`, `optimizer` and `task`.
    """

    def __init__(self, settings, num_replicas, is_chief, summaries_type, multi_worker=False):
        self.settings = settings
        self.num_replicas, self.is_chief, self.multi_worker = num_replicas, is_chief, multi_worker
        self.layout = f"{num_replicas} replica(s)"
        self.summaries = summaries_type(settings.model_dir, enabled=is_chief)
        self.write_dir = settings.model_dir
        self._evaluation, self.source, self._info = None, None, None

    @abc.abstractmethod
    def noise_parts(self, accumulation_steps):
        """(parts, halves): how many gradients of a part of the global batch the noise scale
        compares with the whole at `accumulation_steps`, and whether that splits one batch into halves."""

    def use_source(self, source):
        """The `kbatch.data.Source` this backend trains and evaluates on (set once, before `describe_data`)."""
        self.source = source

    def describe_data(self):
        """The source's `DatasetInfo` (sizes, input and label specs, classes), read once."""
        if self._info is None:
            self._info = self.source.describe()
        return self._info

    @abc.abstractmethod
    def scope(self):
        """A context in which the model and optimizer are created (their variables placed)."""

    def attach(self, model, optimizer, task):
        """The model, optimizer and task this backend trains: builds the optimizer's slots, the
        gradient pipeline's transforms (their state is optimizer variables), then the checkpoint
        (call inside `scope()`, once)."""
        self.model, self.optimizer, self.task = model, optimizer, task
        optimizer.build(model.trainable_variables)
        self.chain = transforms.from_settings(self.settings, optimizer, model, self.describe_data().num_train_examples)
        self._attach_checkpoints()

    @abc.abstractmethod
    def _attach_checkpoints(self):
        """What this backend needs to save and restore the attached model and optimizer."""

    def start_phase(self, phase, start_example, accumulation_steps):
        """`loop(num_steps)` -> {field: [num_steps] NumPy array}: `num_steps` updates at `phase`'s
        batch size in `accumulation_steps` micro-batches over the input stream from `start_example`
        on, one record each. Built anew per phase (the recipe's Python numbers, BN momenta among
        them, are read now)."""
        return self._loop(self._train_step(phase, accumulation_steps), phase, start_example)

    @abc.abstractmethod
    def _train_step(self, phase, accumulation_steps):
        """One update at `phase`'s batch size, as this backend's `_loop` runs it."""

    def memory_budget_bytes(self):
        """The bytes one update may take on a device (`device_memory_gib`, else the device's own
        limit where the backend knows it), or None: no bound."""
        return None

    def step_memory_bytes(self, micro_batch):
        """The bytes one update takes on a device with micro-batches of `micro_batch` examples
        there, from the compiled step (only backends with `memory_budget_bytes` measure it)."""
        raise NotImplementedError(f"{type(self).__name__} does not measure a step's memory.")

    @abc.abstractmethod
    def _loop(self, step, phase, start_example):
        """`loop(num_steps)` running `step` over the stream of `phase` from `start_example` on."""

    def evaluate(self):
        """{value name: sum over the evaluation split} of the task's values, and `count` (the
        evaluation is built on first use)."""
        if self._evaluation is None:
            self._evaluation = self._build_evaluation()
        return {name: float(value) for name, value in self._evaluation().items()}

    @abc.abstractmethod
    def _build_evaluation(self):
        """A function of no argument returning {value name: sum over the evaluation split}."""

    @abc.abstractmethod
    def probe_batch(self, size):
        """The first `size` examples of the evaluation split (fewer if it has fewer), as NumPy
        `(x, y)`: the fixed batch the diagnostics measure on."""

    @abc.abstractmethod
    def average_moving_statistics(self):
        """One set of BN moving statistics on every replica (before an evaluation or a save)."""

    @abc.abstractmethod
    def save(self, step):
        """A checkpoint of the model, optimizer and `step`; an OSError when it cannot be written."""

    @property
    @abc.abstractmethod
    def latest_checkpoint(self):
        """The newest checkpoint's path, or None."""

    @abc.abstractmethod
    def preemption(self, save, current_step):
        """A context yielding `check(step)`, which saves (with `save`) and raises
        `stops.Preempted` once the machine is going away; `current_step()` is the step now."""

    def restore(self):
        """The step of the newest intact checkpoint, restored (0 when there is none). A damaged
        one is skipped, saying so; a ValueError in one line when every one is damaged, or when
        one that reads holds another model."""
        candidates = self._checkpoint_candidates()
        for newest in range(len(candidates), 0, -1):
            path = candidates[newest - 1]
            try:
                step = self._load_checkpoint(path)
            except CheckpointMismatch as error:
                raise run_dir.checkpoint_mismatch(self.settings.model_dir, path, error.__cause__ or error) from None
            except DamagedCheckpoint as error:
                print(
                    f"kbatch: checkpoint {path} is damaged ({_first_line(error.__cause__ or error)}); trying the one "
                    "before.",
                    flush=True,
                )
                continue
            self._restored(candidates[:newest])
            return step
        if candidates:
            raise ValueError(
                f"config.model_dir={self.settings.model_dir!r}: none of its checkpoints is intact; "
                "move the folder away to start afresh."
            )
        return 0

    def has_checkpoint(self):
        """Whether the run folder holds a checkpoint to resume from (intact or not)."""
        return bool(self._checkpoint_candidates())

    @abc.abstractmethod
    def _checkpoint_candidates(self):
        """The checkpoints to try, oldest first (the chief's: every worker restores the same)."""

    @abc.abstractmethod
    def _load_checkpoint(self, path):
        """Restore the checkpoint at `path` and return its step; `DamagedCheckpoint` when it does
        not read, `CheckpointMismatch` when it holds another model (each `from` the cause)."""

    def _restored(self, intact):
        """Called after a restore with the candidates up to the restored one, oldest first (the
        newer ones were damaged)."""

    def _variables(self):
        """Every weight and optimizer variable: what a checkpoint holds."""
        return [*self.model.weights, *self.optimizer.variables]

    def all_finite(self):
        """Whether every floating weight and optimizer variable is finite (what a checkpoint may hold)."""
        return all(
            np.isfinite(np.asarray(v)).all() for v in self._variables() if np.issubdtype(np.dtype(v.dtype), np.floating)
        )

    def release_input(self):
        """Drop the evaluation's input stream (rebuilt at the next `evaluate`)."""
        self._evaluation = None

    def close(self):
        """Flush the summaries and remove what only this process needed."""
        self.summaries.flush()


def _first_line(error):
    """`Type: first line of the message` (the type alone when there is no message)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:120]}" if text else type(error).__name__
