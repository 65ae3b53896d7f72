"""The loss-spike guard (`config.loss_spike_guard = k`): an update whose loss is more than k
standard deviations above the running mean of the updates' losses takes a smaller step.

By the central limit theorem a minibatch's mean loss is about normal around the current loss,
with a spread that shrinks as 1 / sqrt(B); an update far in the upper tail is more likely a bad
region (or a bad batch) than noise, and a full step from it is how large-batch runs at high
learning rates blow up. The guard keeps exponential moving averages of the loss and of its
square (decay `DECAY`, from the first update; it guards from update `WARMUP` on), and for a loss
z = (loss - mean) / std > k standard deviations up it scales that update's change of the weights
by k / z, by scaling its gradient (after clipping): for SGD, with or without momentum, that is the
learning rate of that update scaled by k / z (Adam and LARS normalize the gradient, so kbatch
refuses the guard with them). The averages take in
a spike at mean + k std, so one outlier does not widen the band. `SpikeGuard`, a transform of the
chain, calls `guard` inside the compiled update; its three statistics are optimizer variables, so
they are checkpointed and a resumed run goes on exactly.
"""

import keras

from kbatch.training.transforms.base import GradientTransform

DECAY = 0.99
WARMUP = 20
NAMES = ("loss_spike_mean", "loss_spike_mean_square", "loss_spike_count")


def add_statistics(optimizer):
    """The guard's three scalars, created as `optimizer` variables (call once, after `build`)."""
    return [
        optimizer.add_variable((), initializer="zeros", dtype="float32", aggregation="only_first_replica", name=name)
        for name in NAMES
    ]


def guard(loss, statistics, threshold):
    """(factor, new statistics) for an update of mean loss `loss`: factor k / z for a spike of z > k
    standard deviations, else 1; `statistics` the values of `add_statistics`'s variables."""
    ops = keras.ops
    mean, mean_square, count = statistics
    std = ops.sqrt(ops.maximum(mean_square - mean * mean, 0.0))
    z = (loss - mean) / ops.maximum(std, 1e-12)
    spike = ops.logical_and(count >= WARMUP, z > threshold)
    factor = ops.where(spike, threshold / ops.maximum(z, 1e-12), 1.0)
    taken = ops.where(spike, mean + threshold * std, loss)
    first = count == 0
    new_mean = ops.where(first, taken, DECAY * mean + (1 - DECAY) * taken)
    new_square = ops.where(first, taken * taken, DECAY * mean_square + (1 - DECAY) * taken * taken)
    return factor, [new_mean, new_square, count + 1]


class SpikeGuard(GradientTransform):
    """Scales the update's gradient by `guard`'s factor for the global batch's mean loss, and
    records it as `spike_factor`."""

    def __init__(self, threshold):
        super().__init__()
        self.threshold = float(threshold)

    def build(self, optimizer, trainable_variables):
        self.variables = add_statistics(optimizer)

    def apply(self, grads, state, context):
        loss = context.all_reduce(context.sums["loss"]) / context.geometry.global_batch_size
        factor, state = guard(loss, state, self.threshold)
        return [g * keras.ops.cast(factor, g.dtype) for g in grads], state, {"spike_factor": factor}
