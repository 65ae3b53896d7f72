"""BN's coupling of a batch's examples, measured: the loss's gradient through batch normalization's
batch statistics against its gradient with the same statistics held fixed.

In training, BN normalizes each example by its batch's mean and variance, and backpropagation goes
through them (Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network Training by
Reducing Internal Covariate Shift", section 3, the gradients with respect to mu_B and sigma_B^2;
section 2: a step that ignores them lets a bias grow while the loss stays put). Per channel, the
gradient that reaches BN's input x is (gamma / sigma) (g - mean(g) - x_hat mean(g x_hat)) with g the
gradient at the output: the parts along the batch mean and along x_hat are taken out, every
example's gradient depends on the others, and it can be much smaller than the fixed-statistics
gradient (gamma / sigma) g: at batch 2, x_hat = +-sqrt(sigma^2 / (sigma^2 + eps)) and only
eps / (sigma^2 + eps) of (g_1 - g_2) / 2 passes.

Counted: `keras.layers.BatchNormalization` and its subclasses, i.e. kbatch's norms "batch",
"sync_batch", "batch_renorm" and "ghost_batch" (each ghost batch's statistics held fixed). Not
counted: `SwitchableNormalization`, whose batch statistics are mixed with per-example ones; in a
model that has both, its gradient goes through them in both measurements.

Both gradients are of `loss_fn(y, model(x))` (the task's loss, regularizers left out) with every
layer in training mode, at the model's weights and state as they are (`stateless_call`: the same
dropout masks in both, the moving statistics left alone), over all trainable weights, BN's gamma
and beta included (the last BN's are equal in both; an earlier one's differ by what the BNs after
it pass back). The statistics are held fixed by `stop_gradient` on what each counted layer's moments
method returns (Keras's `_moments`, `GhostBatchNormalization._ghost_moments`) while the gradient is
traced, so the forward values are the same ones: the two losses are checked equal. Works on Keras's
TensorFlow and JAX backends.
"""

import collections
import contextlib

import keras
import numpy as np

from kbatch.layers.ghost_batch_norm import GhostBatchNormalization

Coupling = collections.namedtuple("Coupling", "ratio cosine loss")


def batch_norms(model):
    """The layers of `model` whose batch statistics are held fixed (see the module); a one-line
    ValueError when it has none."""
    found = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    if not found:
        raise ValueError(
            f"model {model.name!r} has no batch normalization layer (keras.layers.BatchNormalization or a "
            "subclass: kbatch's norms batch, sync_batch, batch_renorm, ghost_batch): there is no coupling to measure."
        )
    return found


def _moments_method(layer):
    return "_ghost_moments" if isinstance(layer, GhostBatchNormalization) else "_moments"


@contextlib.contextmanager
def _held_fixed(norms, fixed):
    """Within (when `fixed`), each of `norms` normalizes by its batch statistics as constants to the gradient."""
    for layer in norms if fixed else ():
        moments = getattr(layer, _moments_method(layer))
        layer.__dict__[_moments_method(layer)] = lambda *args, _moments=moments, **kwargs: tuple(
            keras.ops.stop_gradient(s) for s in _moments(*args, **kwargs)
        )
    try:
        yield
    finally:
        for layer in norms if fixed else ():
            del layer.__dict__[_moments_method(layer)]  # the class's method again


def _pair_tensorflow(model, loss_fn, norms):
    import tensorflow as tf

    def gradient(trainable, non_trainable, x, y, fixed):
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            with _held_fixed(norms, fixed):
                outputs, _ = model.stateless_call(trainable, non_trainable, x, training=True)
            loss = loss_fn(y, outputs)
        return loss, tape.gradient(loss, trainable)

    return tf.function(lambda *args: [gradient(*args, fixed) for fixed in (False, True)])


def _pair_jax(model, loss_fn, norms):
    import jax

    def loss(trainable, non_trainable, x, y, fixed):
        with _held_fixed(norms, fixed):
            outputs, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, outputs)

    gradient = jax.value_and_grad(loss)
    return jax.jit(lambda *args: [gradient(*args, fixed) for fixed in (False, True)])


def gradient_pair(model, loss_fn):
    """`pair(x, y) -> (loss, g_batch, g_fixed)` at the model's weights as they are when it is called
    (build it once, call it as training goes on; it is traced once per batch shape): the mean loss
    and its gradients through the batch statistics and with them held fixed, lists of float64 arrays
    shaped like `model.trainable_variables`. A ValueError for a model without a counted BN layer."""
    norms = batch_norms(model)
    traced = (_pair_jax if keras.backend.backend() == "jax" else _pair_tensorflow)(model, loss_fn, norms)

    def pair(x, y):
        trainable = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
        non_trainable = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]
        (loss, g_batch), (loss_fixed, g_fixed) = traced(trainable, non_trainable, x, y)
        loss, loss_fixed = float(loss), float(loss_fixed)
        if not np.isclose(loss, loss_fixed, rtol=1e-6, atol=0):
            raise RuntimeError(f"the forward losses differ, {loss} and {loss_fixed}: the statistics changed value.")
        return loss, [np.asarray(g, np.float64) for g in g_batch], [np.asarray(g, np.float64) for g in g_fixed]

    return pair


def compare(g_batch, g_fixed):
    """`(|g_batch| / |g_fixed|, cos(g_batch, g_fixed))` over lists of arrays (nan where a norm is 0)."""
    dot = sum(np.sum(a * b) for a, b in zip(g_batch, g_fixed))
    norm_batch = np.sqrt(sum(np.sum(a * a) for a in g_batch))
    norm_fixed = np.sqrt(sum(np.sum(b * b) for b in g_fixed))
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(norm_batch / norm_fixed), float(dot / (norm_batch * norm_fixed))


def coupling(model, loss_fn, batch):
    """`Coupling(ratio, cosine, loss)` of `model` on `batch`, an `(x, y)` pair, `loss_fn` a Keras
    loss (or any `f(y_true, y_pred)` giving the mean): `compare` of `gradient_pair`'s gradients."""
    loss, g_batch, g_fixed = gradient_pair(model, loss_fn)(*batch)
    return Coupling(*compare(g_batch, g_fixed), loss)
