"""What the component tests need from the Keras backend that runs them, TensorFlow or JAX: a
compiled function, a compiled training call of a layer, gradients, and optimizer updates, each
the way that backend's users (and kbatch's two trainers) compile them: `tf.function` (with and
without XLA) on TensorFlow, `jax.jit` of the stateless calls on JAX."""

import inspect

import keras
import numpy as np

BACKEND = keras.backend.backend()
# How a function can run: eagerly, or compiled as the backend compiles it.
COMPILE_MODES = ("eager", "function", "xla") if BACKEND == "tensorflow" else ("eager", "jit")
# The dtypes an optimizer's step counter can have (JAX without x64 has no int64).
STEP_DTYPES = ("int32", "int64", "float32") if BACKEND == "tensorflow" else ("int32", "float32")

if BACKEND == "tensorflow":
    import tensorflow as tf
else:
    import jax


def compiled(fn, mode):
    """`fn` (of tensors, returning tensors), run as `mode` of COMPILE_MODES says."""
    if mode == "eager":
        return fn
    if BACKEND == "tensorflow":
        return tf.function(fn, jit_compile=mode == "xla")
    return jax.jit(fn)


def compiled_training_call(layer, feature_shape):
    """`layer(x, training=True)` compiled with XLA for any batch size, updating its moving
    statistics: a `tf.function` with an unknown batch dimension on TensorFlow; on JAX (where
    shapes are static) a jitted `stateless_call`, its new non-trainable state written back."""
    if BACKEND == "tensorflow":
        spec = tf.TensorSpec((None, *feature_shape), tf.float32)
        return tf.function(lambda x: layer(x, training=True), input_signature=[spec], jit_compile=True)
    step = jax.jit(lambda trainable, non_trainable, x: layer.stateless_call(trainable, non_trainable, x, training=True))

    def call(x):
        outputs, non_trainable = step(_values(layer.trainable_variables), _values(layer.non_trainable_variables), x)
        for variable, value in zip(layer.non_trainable_variables, non_trainable):
            variable.assign(value)
        return outputs

    return call


def gradients(layer, x, loss_of_outputs):
    """d loss / d x and [d loss / d w for w in layer.trainable_variables] as NumPy arrays, where
    loss = loss_of_outputs(layer(x, training=True)) (the layer's state is left as it was)."""
    x = np.asarray(x, "float32")
    if BACKEND == "tensorflow":
        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = loss_of_outputs(layer(x, training=True))
        grads = tape.gradient(loss, [x, *layer.trainable_variables])
        return grads[0].numpy(), [g.numpy() for g in grads[1:]]
    if not layer.built:
        layer.build(x.shape)
    non_trainable = _values(layer.non_trainable_variables)
    # `stateless_call` passes `training` on to `call`, which not every layer takes.
    training = {"training": True} if "training" in inspect.signature(layer.call).parameters else {}

    def loss(x, trainable):
        return loss_of_outputs(layer.stateless_call(trainable, non_trainable, x, **training)[0])

    grad_x, grad_w = jax.grad(loss, argnums=(0, 1))(x, _values(layer.trainable_variables))
    return np.asarray(grad_x), [np.asarray(g) for g in grad_w]


def apply_gradients(optimizer, variables, gradient_steps, mode):
    """`optimizer.apply` of each list of gradients in turn to `variables`, as `mode` says: the
    stateful call (in a `tf.function` on TensorFlow), or on JAX the jitted `stateless_apply`
    kbatch's JAX trainer uses, its results written back to the variables."""
    if mode == "eager" or BACKEND == "tensorflow":
        apply = compiled(lambda grads: optimizer.apply(grads, variables), mode)
        for grads in gradient_steps:
            apply([keras.ops.convert_to_tensor(g) for g in grads])
        return
    optimizer.build(variables)
    apply = jax.jit(optimizer.stateless_apply)
    optimizer_values, values = _values(optimizer.variables), _values(variables)
    for grads in gradient_steps:
        values, optimizer_values = apply(optimizer_values, grads, values)
    for variable, value in zip([*variables, *optimizer.variables], [*values, *optimizer_values]):
        variable.assign(value)


def _values(variables):
    return [v.value for v in variables]


def dense_hessian(model, loss_fn, x, y):
    """The whole Hessian of `loss_fn(y, model(x, training=False))` in the model's flattened
    trainable weights, as a float64 NumPy matrix: a Jacobian of the gradient (TensorFlow) or
    `jax.hessian` (JAX), formed densely, independently of Hessian-vector products."""
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    sizes = [int(np.prod(s)) for s in shapes]
    flat = np.concatenate([np.ravel(np.asarray(v.value)) for v in model.trainable_variables]).astype("float32")

    def unflatten(vector, split):
        return [split(piece, shape) for piece, shape in zip(_pieces(vector, sizes), shapes)]

    non_trainable = _values(model.non_trainable_variables)
    if BACKEND == "tensorflow":
        weights = tf.Variable(flat)
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                outputs, _ = model.stateless_call(unflatten(weights, tf.reshape), non_trainable, x, training=False)
                loss = loss_fn(y, outputs)
            gradient = inner.gradient(loss, weights)
        return np.asarray(outer.jacobian(gradient, weights), np.float64)

    def loss(vector):
        outputs, _ = model.stateless_call(unflatten(vector, jax.numpy.reshape), non_trainable, x, training=False)
        return loss_fn(y, outputs)

    return np.asarray(jax.hessian(loss)(flat), np.float64)


def _pieces(vector, sizes):
    offsets = np.cumsum([0, *sizes])
    return [vector[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
