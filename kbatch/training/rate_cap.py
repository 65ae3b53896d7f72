"""The stability cap (`config.stability_cap = c`): the learning rate never above c times the largest
rate that is stable on a quadratic of the measured sharpness lambda_max,

    lr <= c x a*(tau, m) / lambda_max,   a*(0, m) = 2 + 2m,  a*(tau, m) = (2 + 2m) F(tau, m),

heavy ball's limit (Cohen et al. 2021) lowered for gradients tau updates late (`staleness`;
`kbatch.scaling.max_stable_learning_rate`, Levin & May 1976 without momentum). With the linear rule
this is the rule docs/results/staleness.md found its data asks for: min(linear rate, c F(tau, m) x
(2 + 2m) / lambda_max), the linear rate where the loss is flat enough, the cap where it is sharp.

The cap is an optimizer variable (checkpointed: a resumed run goes on with it), +inf until the first
measurement; `CappedSchedule` is the optimizer's rate, the run's schedule bounded by it, so the
compiled step reads the cap the last measurement set (`actions.CapTheRate`, at the start and at
every sharpness point).
"""

import math

import keras
from keras import ops

from kbatch import optimizers, scaling

NAME = "stability_cap"


class CappedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """min(`schedule`(step), the value of `cap`, a variable)."""

    def __init__(self, schedule, cap):
        super().__init__()
        self.schedule, self.cap = schedule, cap

    def __call__(self, step):
        rate = ops.cast(self.schedule(step) if callable(self.schedule) else self.schedule, "float32")
        return ops.minimum(rate, ops.convert_to_tensor(self.cap))

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule)}


def add_cap(optimizer, schedule):
    """The cap's variable (+inf: no cap yet), created on `optimizer` (after `build`, in the backend's
    scope), and the optimizer's rate set to `schedule` bounded by it."""
    cap = optimizer.add_variable(
        (),
        initializer=keras.initializers.Constant(math.inf),
        dtype="float32",
        aggregation="only_first_replica",
        name=NAME,
    )
    optimizers.unwrap(optimizer).learning_rate = CappedSchedule(schedule, cap)
    return cap


def cap_value(fraction, sharpness, momentum, staleness):
    """c x the largest stable rate at `sharpness` for heavy ball with `momentum`, `staleness` updates
    late; +inf (no cap) where the top eigenvalue found is not positive (the loss curves down most
    there: no quadratic limit) or not a number."""
    if not sharpness > 0:
        return math.inf
    return fraction * scaling.max_stable_learning_rate(sharpness, momentum, staleness)
