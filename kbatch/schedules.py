"""Learning-rate schedules Keras lacks, as `keras.optimizers.schedules.LearningRateSchedule`s.

The `step` argument of every schedule here counts optimizer updates (`optimizer.iterations`);
kbatch's trainer applies one update per global batch, accumulated micro-batches included.
"""

import keras
from keras import ops


def _value(schedule_or_float, step):
    if isinstance(schedule_or_float, keras.optimizers.schedules.LearningRateSchedule):
        return schedule_or_float(step)
    return ops.convert_to_tensor(schedule_or_float, dtype="float32")


@keras.saving.register_keras_serializable(package="kbatch")
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Gradual warmup (Goyal et al. 2017, section 2.2) in front of any schedule.

    For `step < warmup_steps` the rate ramps linearly from `initial_learning_rate` to the value
    `after` has at the end of warmup; from then on it is `after`. The ramp ends exactly on that
    value, so the schedule is continuous.

    Args:
      after: a float, or any Keras schedule (CosineDecay, PiecewiseConstantDecay, a kbatch or a
        user schedule) to follow after warmup.
      warmup_steps: length of the ramp in optimizer updates (0 means no warmup).
      initial_learning_rate: the rate at step 0.
      offset: if True (the default), `after` is indexed from the end of warmup
        (`after(step - warmup_steps)`), so a decay schedule's full length follows the warmup;
        if False, `after` is indexed from step 0 (`after(step)`), so warmup overlays the
        beginning of `after`, the convention of `keras.optimizers.schedules.CosineDecay`.
    """

    def __init__(self, after, warmup_steps, initial_learning_rate=0.0, offset=True, name="Warmup"):
        super().__init__()
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}.")
        if initial_learning_rate < 0:
            raise ValueError(
                f"initial_learning_rate must be non-negative, got {initial_learning_rate!r}."
            )
        if isinstance(after, dict):
            after = keras.saving.deserialize_keras_object(after)
        self.after = after
        self.warmup_steps = warmup_steps
        self.initial_learning_rate = float(initial_learning_rate)
        self.offset = bool(offset)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(self.warmup_steps)
        after_step = ops.maximum(step - warmup, 0.0) if self.offset else step
        if self.warmup_steps == 0:
            return _value(self.after, after_step)
        target = _value(self.after, 0.0 if self.offset else warmup)
        fraction = ops.minimum(step / warmup, 1.0)
        ramp = self.initial_learning_rate + fraction * (target - self.initial_learning_rate)
        return ops.where(step < warmup, ramp, _value(self.after, after_step))

    def get_config(self):
        after = self.after
        if isinstance(after, keras.optimizers.schedules.LearningRateSchedule):
            after = keras.saving.serialize_keras_object(after)
        return {
            "after": after,
            "warmup_steps": self.warmup_steps,
            "initial_learning_rate": self.initial_learning_rate,
            "offset": self.offset,
            "name": self.name,
        }
