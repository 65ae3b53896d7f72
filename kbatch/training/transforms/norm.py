"""The global gradient norm, and clipping to it after the cross-replica sum.

Keras 3 clips each replica's gradient before the sum (`global_clipnorm`): a different update under
data parallelism. Here the norm is that of the summed gradient, and every replica scales its share
by the same factor min(1, clip / norm) (Pascanu et al. 2013, "On the difficulty of training
recurrent neural networks")."""

from keras import ops

from kbatch.training.transforms.base import GradientTransform


def global_norm(grads):
    """sqrt(sum of every gradient's squared entries), in float32."""
    return ops.sqrt(sum(ops.sum(ops.square(ops.cast(g, "float32"))) for g in grads))


class GlobalNorm(GradientTransform):
    """Records `grad_norm`, the norm of the gradient summed over the replicas (loss scale removed)."""

    def apply(self, grads, state, context):
        norm = global_norm(context.all_reduce(grads)) / context.loss_scale
        return grads, state, {"grad_norm": norm}


class ClipByGlobalNorm(GradientTransform):
    """Scales the update by min(1, clip / grad_norm); reads the `GlobalNorm` before it."""

    def __init__(self, clip):
        super().__init__()
        self.clip = float(clip)

    def apply(self, grads, state, context):
        factor = ops.minimum(1.0, self.clip / ops.maximum(context.record["grad_norm"], 1e-12))
        return [g * ops.cast(factor, g.dtype) for g in grads], state, {}
