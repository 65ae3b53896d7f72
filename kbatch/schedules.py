"""Learning-rate and batch-size schedules Keras lacks.

- `Warmup`: a linear ramp in front of any Keras schedule or constant.
- `PerUpdate`: any schedule read at the optimizer update count under Keras's own
  `gradient_accumulation_steps` (which feeds schedules the micro-step count).
- `BatchSizeSchedule`: the global batch size, and optionally the learning rate, as
  piecewise-constant functions of epochs, with constructors for the rules in the literature.
- `PhasedSchedule`: a Keras schedule of optimizer steps that follows a rate given over epochs
  while the batch size, and so the number of steps per epoch, changes between phases.
"""

import bisect
import collections
import math
import numbers

import keras
from keras import ops

from kbatch import checks, scaling
from kbatch.ledger import StepLedger, check_phases, phase_epochs

_Schedule = keras.optimizers.schedules.LearningRateSchedule


def _schedule_or_float(name, value):
    if isinstance(value, dict):
        value = keras.saving.deserialize_keras_object(value)
    if isinstance(value, _Schedule):
        return value
    return checks.real(name, value, low=0)


def _serialize(value):
    return keras.saving.serialize_keras_object(value) if isinstance(value, _Schedule) else value


def _value(schedule_or_float, step):
    if isinstance(schedule_or_float, _Schedule):
        return ops.cast(schedule_or_float(step), "float32")
    return ops.convert_to_tensor(schedule_or_float, dtype="float32")


@keras.saving.register_keras_serializable(package="kbatch")
class Warmup(_Schedule):
    """Gradual warmup (Goyal et al. 2017, section 2.2) in front of any schedule.

    For `step < warmup_steps` the rate ramps linearly from `initial_learning_rate` to the value
    `after` has at the end of warmup; from then on it is `after`. The ramp ends exactly on that
    value, so the schedule is continuous, and it is monotone when `after` is.

    Args:
      after: a float, or any Keras schedule (CosineDecay, PiecewiseConstantDecay, a kbatch or a
        user schedule) to follow after warmup.
      warmup_steps: length of the ramp (0 means no warmup), in the unit `step` counts: optimizer
        updates when the optimizer calls it, epochs when a `PhasedSchedule` does. Under Keras's
        own `gradient_accumulation_steps=k` the optimizer calls it with the micro-step count
        (k per update): wrap it in `PerUpdate(schedule, k)` (`kbatch.optimizers.build` does).
      initial_learning_rate: the rate at step 0.
      offset: if True (the default), `after` is indexed from the end of warmup
        (`after(step - warmup_steps)`), so a decay schedule's full length follows the warmup;
        if False, `after` is indexed from step 0 (`after(step)`), so warmup overlays the
        beginning of `after` (right for boundaries given from the start of training).
    """

    def __init__(self, after, warmup_steps, initial_learning_rate=0.0, offset=True, name="Warmup"):
        super().__init__()
        self.after = _schedule_or_float("after", after)
        self.warmup_steps = checks.real("warmup_steps", warmup_steps, low=0)
        self.initial_learning_rate = checks.real("initial_learning_rate", initial_learning_rate, low=0)
        self.offset = bool(offset)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = self.warmup_steps
        after_step = ops.maximum(step - warmup, 0.0) if self.offset else step
        if warmup == 0:
            return _value(self.after, after_step)
        end = ops.zeros_like(step) if self.offset else ops.full_like(step, warmup)
        target = _value(self.after, end)
        fraction = ops.minimum(step / warmup, 1.0)
        ramp = self.initial_learning_rate + fraction * (target - self.initial_learning_rate)
        return ops.where(step < warmup, ramp, _value(self.after, after_step))

    def get_config(self):
        return {
            "after": _serialize(self.after),
            "warmup_steps": self.warmup_steps,
            "initial_learning_rate": self.initial_learning_rate,
            "offset": self.offset,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="kbatch")
class PerUpdate(_Schedule):
    """`schedule` read at the optimizer update count under Keras's own gradient accumulation.

    A Keras optimizer built with `gradient_accumulation_steps=k` calls its schedule with the
    micro-step count (`optimizer._iterations`: k per update; Keras's docstring: "Learning rate
    schedules will look at 'real' iterations value"), so a schedule written in updates
    (`Warmup(..., warmup_steps=5 * steps_per_epoch)`, a `PhasedSchedule`, Keras's `CosineDecay`)
    would run k times too fast. This one returns `schedule(step // k)`: update m, made at
    micro-steps m k .. m k + k - 1, uses `schedule(m)`, as it would without accumulation.

    Args:
      schedule: any Keras `LearningRateSchedule` whose step counts optimizer updates.
      gradient_accumulation_steps: k, the optimizer's `gradient_accumulation_steps`.
    """

    def __init__(self, schedule, gradient_accumulation_steps, name="PerUpdate"):
        super().__init__()
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        if not isinstance(schedule, _Schedule):
            checks.fail("schedule", schedule, "a keras.optimizers.schedules.LearningRateSchedule")
        self.schedule = schedule
        self.gradient_accumulation_steps = checks.positive_int(
            "gradient_accumulation_steps", gradient_accumulation_steps
        )
        self.name = name

    def __call__(self, step):
        return self.schedule(ops.floor_divide(step, self.gradient_accumulation_steps))

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "name": self.name,
        }


Phase = collections.namedtuple("Phase", "start_epoch end_epoch batch_size learning_rate start_step num_steps")
Phase.__doc__ = """One phase of a `BatchSizeSchedule`: epochs [start_epoch, end_epoch) at one global
batch size. `learning_rate` is None when the schedule has none; `start_step` and `num_steps`
(optimizer updates) are None unless `phases` was given `num_examples`."""


@keras.saving.register_keras_serializable(package="kbatch")
class BatchSizeSchedule:
    """The global batch size, and optionally the learning rate, as piecewise-constant functions
    of epochs.

    Phase i covers epochs [boundaries[i-1], boundaries[i]) (the first starts at 0, the last never
    ends) and trains at global batch `batch_sizes[i]` and, where given, rate `learning_rates[i]`.
    Its steps are counted on one stream of examples: phase i takes as many batches as it needs
    to reach its end boundary, the last batch may run past it, and the next phase starts where
    that batch ended. So after any step, epochs = examples seen / examples per epoch, exactly
    (`ledger(num_examples)` does that arithmetic: `kbatch.ledger.StepLedger`).

    It is not a Keras `LearningRateSchedule` (the trainer reads its phases); `PhasedSchedule` is
    the optimizer's rate for it. Registered, so it serializes with `get_config` / `from_config`.

    Args:
      batch_sizes: one positive integer per phase.
      boundaries: the epochs where phases change, positive and strictly increasing;
        `len(batch_sizes) - 1` of them.
      learning_rates: None, or one non-negative rate per phase.
    """

    def __init__(self, batch_sizes, boundaries=(), learning_rates=None):
        batch_sizes, boundaries = check_phases(batch_sizes, boundaries)
        if learning_rates is not None:
            learning_rates = [checks.real(f"learning_rates[{i}]", r, low=0) for i, r in enumerate(learning_rates)]
            if len(learning_rates) != len(batch_sizes):
                checks.fail(
                    "learning_rates", learning_rates, f"a list of one rate per phase ({len(batch_sizes)} phases)"
                )
        self.batch_sizes, self.boundaries, self.learning_rates = batch_sizes, boundaries, learning_rates

    def _phase(self, epoch):
        return bisect.bisect_right(self.boundaries, checks.real("epoch", epoch, low=0))

    def batch_size(self, epoch):
        """The global batch size at `epoch` (a boundary belongs to the phase it starts)."""
        return self.batch_sizes[self._phase(epoch)]

    def learning_rate(self, epoch):
        """The learning rate at `epoch`; a ValueError if the schedule has no learning rates."""
        if self.learning_rates is None:
            raise ValueError("this BatchSizeSchedule has no learning_rates.")
        return self.learning_rates[self._phase(epoch)]

    def ledger(self, num_examples):
        """The `kbatch.ledger.StepLedger` of this schedule over epochs of `num_examples` examples:
        updates <-> examples seen <-> epochs <-> phases."""
        return StepLedger(self.batch_sizes, self.boundaries, num_examples)

    def phases(self, num_epochs, num_examples=None):
        """The phases that start before `num_epochs`, the last one cut at `num_epochs`.

        With `num_examples` (training examples per epoch), each phase also says its first
        optimizer step and its number of steps; their sum is the run's number of updates.
        A phase can have 0 steps when the previous phase's last batch ran past it.
        """
        epochs = phase_epochs(self.boundaries, num_epochs)
        starts = counts = [None] * len(epochs)
        if num_examples is not None:
            step_ledger = self.ledger(num_examples)
            starts = [start.step for start in step_ledger.phase_starts]
            counts = step_ledger.phase_steps(num_epochs)
        rates = self.learning_rates or [None] * len(self.batch_sizes)
        return [
            Phase(begin, end, batch, rate, start, count)
            for (begin, end), batch, rate, start, count in zip(epochs, self.batch_sizes, rates, starts, counts)
        ]

    def examples_seen(self, step, num_examples):
        """The examples the first `step` updates consume (where a resumed input stream starts)."""
        return self.ledger(num_examples).examples_seen(step)

    def step_at(self, epoch, num_examples):
        """The first update that starts at or after `epoch` (for evaluations and warmup in steps)."""
        return self.ledger(num_examples).step_at(epoch)

    def check_divisible(self, num_replicas, accumulation_steps=1, num_epochs=None):
        """The per-replica micro-batch of every phase (of those before `num_epochs`, if given);
        a ValueError naming the first phase whose global batch does not divide by
        `num_replicas * accumulation_steps`."""
        parts = checks.positive_int("num_replicas", num_replicas) * checks.positive_int(
            "accumulation_steps", accumulation_steps
        )
        count = len(self.batch_sizes)
        if num_epochs is not None:
            count = len(phase_epochs(self.boundaries, num_epochs))
        for i, batch in enumerate(self.batch_sizes[:count]):
            if batch % parts:
                begin = self.boundaries[i - 1] if i else 0
                end = self.boundaries[i] if i < len(self.boundaries) else "end"
                raise ValueError(
                    f"batch schedule phase {i} (epochs {begin}-{end}): global batch {batch} does not "
                    f"divide by {num_replicas} replicas x accumulation_steps={accumulation_steps} = "
                    f"{parts}; use batch sizes that are multiples of {parts} "
                    f"(BatchSizeSchedule.from_step_decay(..., multiple_of={parts}) rounds to them)."
                )
        return [batch // parts for batch in self.batch_sizes[:count]]

    def decay_twin(self, rule="linear", batch_size=None):
        """The same training at one fixed batch (default: the first phase's): each phase's rate
        moved to that batch by `rule`, so both see the same lr / B (linear) or lr**2 / B (sqrt),
        lr**(1/alpha) / B in general, in every epoch (Smith et al. 2018's equivalence)."""
        if self.learning_rates is None:
            raise ValueError("decay_twin needs a BatchSizeSchedule with learning_rates.")
        twin = self.batch_sizes[0] if batch_size is None else checks.positive_int("batch_size", batch_size)
        rates = [scaling.scale_learning_rate(r, b, twin, rule) for r, b in zip(self.learning_rates, self.batch_sizes)]
        return type(self)([twin] * len(self.batch_sizes), self.boundaries, rates)

    @classmethod
    def step_decay(cls, learning_rate, batch_size, boundaries, factor):
        """A step schedule at a fixed batch: the rate is divided by `factor` at each boundary
        (Goyal et al. 2017 on ImageNet: factor 10 at epochs 30, 60, 80)."""
        learning_rate = checks.real("learning_rate", learning_rate, low=0)
        factor = checks.real("factor", factor, low=1, low_open=True)
        rates = [learning_rate / factor**i for i in range(len(boundaries) + 1)]
        return cls([batch_size] * len(rates), boundaries, rates)

    @classmethod
    def from_step_decay(
        cls,
        learning_rate,
        batch_size,
        boundaries,
        factor,
        max_batch_size=None,
        rule="linear",
        multiple_of=1,
        growth=None,
    ):
        """Smith et al. 2018, "Don't Decay the Learning Rate, Increase the Batch Size".

        Where `step_decay(learning_rate, batch_size, boundaries, factor)` divides the rate by
        `factor`, multiply the batch instead: phase i trains at B_i = batch_size * factor**(i/alpha)
        (rounded to a multiple of `multiple_of`, at most `max_batch_size`) and at the decayed rate
        moved from `batch_size` to B_i by `rule`. Until the cap the rate stays `learning_rate`;
        after it the rate decays instead. Every phase keeps the step schedule's lr**(1/alpha) / B
        (lr / B for the linear rule, lr**2 / B for "sqrt"); `decay_twin(rule)` is that schedule.
        `growth` (default 1 / alpha) sets the batch's growth apart: B_i = batch_size * factor**(i * growth)
        (`seesaw`).
        """
        alpha = scaling.scaling_exponent(rule)
        if alpha <= 0:
            checks.fail("rule", rule, "a rule that grows the rate with the batch (alpha > 0)")
        learning_rate = checks.real("learning_rate", learning_rate, low=0)
        factor = checks.real("factor", factor, low=1, low_open=True)
        batch_size = checks.positive_int("batch_size", batch_size)
        multiple_of = checks.positive_int("multiple_of", multiple_of)
        cap = math.inf if max_batch_size is None else checks.positive_int("max_batch_size", max_batch_size)
        for name, value in (("batch_size", batch_size), ("max_batch_size", cap)):
            if value != math.inf and value % multiple_of:
                checks.fail(name, value, f"a multiple of multiple_of={multiple_of}")
        if cap < batch_size:
            checks.fail("max_batch_size", max_batch_size, f"at least batch_size={batch_size}")
        batches, rates = [], []
        growth = 1 / alpha if growth is None else checks.real("growth", growth, low=0, low_open=True)
        for i in range(len(boundaries) + 1):
            grown = multiple_of * max(1, round(batch_size * factor ** (i * growth) / multiple_of))
            batches.append(int(min(grown, cap)))
            rates.append(scaling.scale_learning_rate(learning_rate / factor**i, batch_size, batches[-1], rule))
        return cls(batches, boundaries, rates)

    @classmethod
    def seesaw(cls, learning_rate, batch_size, boundaries, factor=2.0, max_batch_size=None, multiple_of=1):
        """Meterez et al. 2025, "Seesaw": where `step_decay` divides the rate by `factor`, multiply
        the batch by `factor` and divide the rate by sqrt(factor) only. Phase i trains at
        B_i = batch_size * factor**i (rounded to a multiple of `multiple_of`, at most
        `max_batch_size`) and at the step schedule's rate moved from `batch_size` to B_i by the
        square-root rule, learning_rate / factor**i * sqrt(B_i / batch_size): past the cap the
        rate decays as the step schedule's. Their claim: the loss per example of the step (or
        cosine) schedule with fewer updates, ~36% less wall-clock where a larger batch costs
        little more time per update."""
        return cls.from_step_decay(
            learning_rate, batch_size, boundaries, factor, max_batch_size, "sqrt", multiple_of, growth=1.0
        )

    @classmethod
    def scaled(cls, learning_rate, base_batch_size, batch_sizes, boundaries=(), rule="linear"):
        """A batch that changes by phase, with the rate moved to each phase's batch by `rule`:
        lr_i = learning_rate * (B_i / base_batch_size)**alpha. "linear" keeps lr / B constant
        (the noise scale lr N / B of Smith & Le 2018); "sqrt" keeps the update variance
        lr**2 / B constant, i.e. B_i = B_0 (lr_i / lr_0)**2 (Krizhevsky 2014; Malladi et al. 2022
        for Adam)."""
        rates = [scaling.scale_learning_rate(learning_rate, base_batch_size, b, rule) for b in batch_sizes]
        return cls(batch_sizes, boundaries, rates)

    def get_config(self):
        return {
            "batch_sizes": list(self.batch_sizes),
            "boundaries": list(self.boundaries),
            "learning_rates": None if self.learning_rates is None else list(self.learning_rates),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(**{self.get_config()})"


@keras.saving.register_keras_serializable(package="kbatch")
class PhasedSchedule(_Schedule):
    """The optimizer's learning rate when the batch size changes between phases.

    `step` counts optimizer updates (`optimizer.iterations`), one per global batch whatever its
    size (accumulated micro-batches are one update; under Keras's own
    `gradient_accumulation_steps` wrap it in `PerUpdate`). The update at `step` in phase p (first step
    s_p, examples seen before it e_p, batch B_p) starts at epoch
        epoch(step) = (e_p + (step - s_p) * B_p) / num_examples,
    the phases counted as in `BatchSizeSchedule.phases`. The rate is
        epoch_schedule(epoch(step)) * learning_rates[p]
    where `epoch_schedule` is a float or any Keras schedule indexed by (fractional) epochs, e.g.
    `Warmup(CosineDecay(peak, decay_steps=num_epochs - 5), warmup_steps=5)`, and the factor
    `learning_rates[p]` is there only if `batch_schedule` has learning rates (then give
    `epoch_schedule` peak 1, e.g. `Warmup(1.0, 5, offset=False)`). The phase is found from
    the integer step, so a rate change lands exactly on the phase's first update.

    Args:
      batch_schedule: a `BatchSizeSchedule`, or an int for one global batch size throughout.
      num_examples: training examples per epoch.
      epoch_schedule: a float or an epoch-indexed Keras schedule (default 1.0).
    """

    def __init__(self, batch_schedule, num_examples, epoch_schedule=1.0, name="PhasedSchedule"):
        super().__init__()
        if isinstance(batch_schedule, dict):
            batch_schedule = keras.saving.deserialize_keras_object(batch_schedule)
        if isinstance(batch_schedule, numbers.Integral) and not isinstance(batch_schedule, bool):
            batch_schedule = BatchSizeSchedule([checks.positive_int("batch_schedule", batch_schedule)])
        if not isinstance(batch_schedule, BatchSizeSchedule):
            checks.fail("batch_schedule", batch_schedule, "a BatchSizeSchedule or a positive integer")
        self.batch_schedule = batch_schedule
        self.num_examples = checks.positive_int("num_examples", num_examples)
        self.epoch_schedule = _schedule_or_float("epoch_schedule", epoch_schedule)
        self.name = name
        rates = batch_schedule.learning_rates or [1.0] * len(batch_schedule.batch_sizes)
        starts = batch_schedule.ledger(self.num_examples).phase_starts
        self._phases = [
            (start.step, start.examples / self.num_examples, batch / self.num_examples, rate)
            for start, batch, rate in zip(starts, batch_schedule.batch_sizes, rates)
        ]

    def _epoch_and_rate(self, step):
        # Phases are found in the step's own dtype: exact for integer steps of any size.
        step = ops.convert_to_tensor(step)
        epoch = rate = None
        for start, start_epoch, epochs_per_step, phase_rate in self._phases:
            start = ops.cast(start, step.dtype)
            phase_epoch = start_epoch + ops.cast(step - start, "float32") * epochs_per_step
            phase_rate = ops.full_like(phase_epoch, phase_rate)
            if epoch is None:
                epoch, rate = phase_epoch, phase_rate
            else:
                inside = step >= start
                epoch, rate = ops.where(inside, phase_epoch, epoch), ops.where(inside, phase_rate, rate)
        return epoch, rate

    def epoch(self, step):
        """The epoch (examples seen / examples per epoch) at which the update `step` starts."""
        return self._epoch_and_rate(step)[0]

    def __call__(self, step):
        epoch, rate = self._epoch_and_rate(step)
        return _value(self.epoch_schedule, epoch) * rate

    def get_config(self):
        return {
            "batch_schedule": keras.saving.serialize_keras_object(self.batch_schedule),
            "num_examples": self.num_examples,
            "epoch_schedule": _serialize(self.epoch_schedule),
            "name": self.name,
        }
