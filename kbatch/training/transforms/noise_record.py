"""The step's record for the gradient noise scale (`kbatch.diagnostics.noise_scale`, McCandlish et
al. 2018): `small_grad_sq`, the squared gradient norms of the update's parts (replicas x
micro-batches, or the two halves of one batch), each part's gradient taken as `parts` times its
share of the global one, summed over the replicas: the parts' mean."""

from keras import ops

from kbatch.diagnostics import noise_scale
from kbatch.training.transforms.base import GradientTransform


class NoiseRecord(GradientTransform):
    """Records `noise_scale.RECORD` from `context.part_sq`; the gradients pass unchanged."""

    needs_parts = True

    def apply(self, grads, state, context):
        return grads, state, {noise_scale.RECORD: context.part_sq * context.parts / ops.square(context.loss_scale)}
