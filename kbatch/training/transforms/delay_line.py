"""Exact, reproducible staleness (`config.staleness = tau`): every update applies the gradient that
was computed tau updates earlier, on the weights of that time.

Asynchronous training with parameter servers never waits for the slowest worker, but each
gradient arrives computed on weights that are already some updates old (Dean et al. 2012; the
delayed-SGD model of Lian et al. 2015, w_{t+1} = w_t - lr g(w_{t-tau})). Real asynchrony makes the
delay random and the run irreproducible; this makes it a fixed tau, the same on every strategy,
backend and resume, so what a delay costs can be measured.

The gradient of update t (after clipping and the loss-spike guard: exactly what the update would
have applied) goes into a delay line of tau slots, and the update applies the one that went in
tau updates before; the first tau updates apply a zero gradient (the line is filling, as a
parameter server's first round waits for its workers' first gradients). The line is a set of
optimizer variables, one per trainable variable with a leading axis of tau, written at slot
`iterations mod tau`, so checkpoints hold it and a resumed run goes on exactly. tau = 0 creates no
line: the step is the synchronous one, bitwise. `DelayLine` is the chain's transform.
"""

import keras

from kbatch.training.transforms.base import GradientTransform


def add_delay_line(optimizer, variables, staleness):
    """The delay line of `staleness` slots for `variables` (the trainable variables), created as
    `optimizer` variables after `build`; [] for staleness 0."""
    if not staleness:
        return []
    return [
        optimizer.add_variable(
            (staleness,) + tuple(v.shape),
            initializer="zeros",
            dtype=v.dtype,
            aggregation="only_first_replica",
            name=f"stale_{i}",
        )
        for i, v in enumerate(variables)
    ]


def delay(gradients, line, iterations):
    """(the gradients to apply now, the line's new values): the gradients put in the line tau
    updates ago, and the line with `gradients` in their place; `line` the values of the delay
    line's variables, `iterations` the optimizer's update count."""
    ops = keras.ops
    slot = ops.mod(ops.cast(iterations, "int32"), line[0].shape[0])
    applied = [ops.take(slots, slot, axis=0) for slots in line]
    written = []
    for slots, g in zip(line, gradients):
        here = ops.reshape(ops.equal(ops.arange(slots.shape[0]), slot), (-1,) + (1,) * len(g.shape))
        written.append(ops.where(here, ops.expand_dims(ops.cast(g, slots.dtype), 0), slots))
    return applied, written


class DelayLine(GradientTransform):
    """Applies the global gradient of `staleness` updates ago in place of this one's: this update's
    sum over the replicas goes into the line, and each replica gives the optimizer its share of
    the delayed one (`Context.replica_share`), so the optimizer's sum is it exactly."""

    def __init__(self, staleness):
        super().__init__()
        self.staleness = int(staleness)

    def build(self, optimizer, trainable_variables):
        self.variables = add_delay_line(optimizer, trainable_variables, self.staleness)

    def apply(self, grads, state, context):
        applied, state = delay(context.all_reduce(grads), state, context.iterations)
        return context.replica_share(applied), state, {}
