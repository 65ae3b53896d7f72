"""Sharpness: the top eigenvalue lambda_max of the loss Hessian with respect to the trainable
weights, by power iteration on Hessian-vector products (Pearlmutter 1994: one HVP costs about two
gradients, and the Hessian itself is never formed).

Why a batch size cares: gradient descent on a quadratic diverges once lr > 2 / lambda_max, heavy
ball with momentum m once lr > (2 + 2m) / lambda_max (`kbatch.scaling.max_stable_learning_rate`);
the linear scaling rule raises lr with the batch until it meets this bound (Cohen et al. 2021,
"Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability"), and large
batches end in sharper minima (Keskar et al. 2017).

The loss is the model in inference mode (BN by its moving statistics, no dropout), so it is a
function of the weights alone, on a fixed batch. Works on Keras's TensorFlow and JAX backends.
"""

import keras
import numpy as np

from kbatch import checks


def _hvp_tensorflow(model, loss_fn, x, y):
    import tensorflow as tf

    variables = model.trainable_variables

    @tf.function
    def hvp(vector):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = loss_fn(y, model(x, training=False))
            grads = inner.gradient(loss, variables)
            projection = tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32) * v) for g, v in zip(grads, vector)])
        return outer.gradient(projection, variables)

    return lambda vector: [np.asarray(h, np.float64) for h in hvp([tf.constant(v, tf.float32) for v in vector])]


def _hvp_jax(model, loss_fn, x, y):
    import jax

    def loss(trainable, non_trainable):
        outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return loss_fn(y, outputs)

    gradient = jax.grad(loss)
    hvp = jax.jit(
        lambda trainable, non_trainable, vector: jax.jvp(lambda w: gradient(w, non_trainable), (trainable,), (vector,))[
            1
        ]
    )

    def product(vector):  # at the model's weights as they are now
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        return [np.asarray(h, np.float64) for h in hvp(trainable, non_trainable, [np.float32(v) for v in vector])]

    return product


def hessian_vector_product(model, loss_fn, batch):
    """`hvp(vector) -> H @ vector` at the model's weights as they are when it is called (build it
    once, call it as training goes on), vectors as lists of arrays shaped like
    `model.trainable_variables`; H is the Hessian of `loss_fn(y, model(x, training=False))`."""
    x, y = batch
    make = _hvp_jax if keras.backend.backend() == "jax" else _hvp_tensorflow
    return make(model, loss_fn, x, y)


def sharpness(model, loss_fn, batch, *, iterations=50, tolerance=1e-4, seed=0):
    """lambda_max of the Hessian of `loss_fn(y, model(x, training=False))` at the model's
    weights, `batch` an `(x, y)` pair and `loss_fn` a Keras loss (or any `f(y_true, y_pred)`):
    `top_eigenvalue` of `hessian_vector_product(model, loss_fn, batch)`."""
    hvp = hessian_vector_product(model, loss_fn, batch)
    return top_eigenvalue(
        hvp, [v.shape for v in model.trainable_variables], iterations=iterations, tolerance=tolerance, seed=seed
    )


def top_eigenvalue(hvp, shapes, *, iterations=50, tolerance=1e-4, seed=0):
    """The eigenvalue of largest magnitude of the symmetric operator `hvp` on lists of arrays of
    `shapes`, with its sign (early in training the loss's can be negative), by power iteration
    from a seeded random direction: until the Rayleigh quotient moves by less than `tolerance`
    (relative) or after `iterations` products."""
    iterations = checks.positive_int("iterations", iterations)
    tolerance = checks.real("tolerance", tolerance, low=0)
    rng = np.random.default_rng(seed)
    vector = [rng.normal(size=shape) for shape in shapes]
    eigenvalue = None
    for _ in range(iterations):
        norm = np.sqrt(sum(np.sum(v * v) for v in vector))
        vector = [v / norm for v in vector]
        product = hvp(vector)
        previous, eigenvalue = eigenvalue, float(sum(np.sum(v * h) for v, h in zip(vector, product)))
        vector = product
        if previous is not None and abs(eigenvalue - previous) <= tolerance * abs(eigenvalue):
            break
    return eigenvalue
