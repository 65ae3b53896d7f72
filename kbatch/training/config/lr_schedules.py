"""The run's batch-size phases and learning-rate schedule, built from its `Settings` and the rule
that moves the rate across batch sizes (`recipe.RunRecipe` calls these with its resolved rule).

The recipe is given at `base_batch_size`. The run's global batch is `batch_size`, or changes by
phase (`batch_boundaries` / `batch_sizes`, or `anneal_batch`). Each phase's peak rate is the
base rate moved to its batch by `lr_scaling`; the shape of the schedule (warmup, then `decay`)
is a function of epochs, so runs at different batch sizes follow the same curve against
examples seen.
"""

import functools

import keras

from kbatch import scaling, schedules


def peak_learning_rate(settings, rule, base):
    """The base learning rate `base` moved to the run's (first) global batch by `rule`."""
    return scaling.scale_learning_rate(base, settings.base_batch_size, settings.batch_size, rule)


def batch_schedule(settings, rule, base, multiple_of=1):
    """The run's `BatchSizeSchedule`, with each phase's peak learning rate (`base` at
    `base_batch_size`, moved by `rule`).

    - `decay="step"`: the rate is divided by `decay_factor` at each of `decay_boundaries`; with
      `anneal_batch` the batch is multiplied instead (Smith et al. 2018), rounded to a multiple of
      `multiple_of` (replicas x accumulation steps), up to `max_batch_size`; with
      `batch_schedule="seesaw"` the batch is multiplied and the rate divided by the factor's
      square root (Meterez et al. 2025).
    - `batch_boundaries` / `batch_sizes`: phase i > 0 trains at `batch_sizes[i - 1]`, its rate
      moved from the base batch by `rule`.
    - otherwise one phase at `batch_size`.
    """
    s = settings
    if s.decay == "step":
        peak = peak_learning_rate(s, rule, base)
        if s.batch_schedule == "seesaw" or s.anneal_batch:
            grow = (
                schedules.BatchSizeSchedule.seesaw
                if s.batch_schedule == "seesaw"
                else functools.partial(schedules.BatchSizeSchedule.from_step_decay, rule=rule)
            )
            return grow(
                peak,
                s.batch_size,
                s.decay_boundaries,
                s.decay_factor,
                max_batch_size=s.max_batch_size,
                multiple_of=multiple_of,
            )
        return schedules.BatchSizeSchedule.step_decay(peak, s.batch_size, s.decay_boundaries, s.decay_factor)
    return schedules.BatchSizeSchedule.scaled(
        base, s.base_batch_size, [s.batch_size, *s.batch_sizes], s.batch_boundaries, rule=rule
    )


def epoch_schedule(settings):
    """The shape of the rate over (fractional) epochs, peak 1: warmup for `warmup_epochs`, then
    `decay`. Cosine and polynomial decays span the epochs after warmup and end at 0; "step" is
    in the batch schedule's per-phase rates, so here it is flat after warmup."""
    s = settings
    decay_epochs = s.num_epochs - s.warmup_epochs
    if s.decay == "cosine":
        after = keras.optimizers.schedules.CosineDecay(1.0, decay_epochs)
    elif s.decay in ("linear", "polynomial"):
        power = 1.0 if s.decay == "linear" else s.decay_power
        after = keras.optimizers.schedules.PolynomialDecay(1.0, decay_epochs, end_learning_rate=0.0, power=power)
    else:
        after = 1.0
    return schedules.Warmup(after, s.warmup_epochs, offset=s.decay != "step")


def learning_rate_schedule(settings, num_examples, batches):
    """The optimizer's schedule: `PhasedSchedule` over optimizer updates (one per global batch,
    accumulated micro-batches included) of `epoch_schedule` times each phase's peak rate (`batches`)."""
    return schedules.PhasedSchedule(batches, num_examples, epoch_schedule(settings))
