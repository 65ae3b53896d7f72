"""The JAX backend's step: one update as a pure function of the state, `jax.jit`-compiled over a
`keras.distribution.DataParallel` mesh.

The state is (trainable, non-trainable, optimizer variables). The batch arrives sharded along
the mesh's batch axis and the program is written for the global batch: XLA inserts the
cross-device sums, so the gradient is that of the mean loss over the global batch, and batch
statistics (BatchNormalization) are the global batch's. With `accumulation_steps` k the batch is
split into k micro-batches, taken one after the other (`lax.scan`, so one micro-batch's
activations are alive at a time), their gradients of sum(loss) / global batch added: exactly the
full batch's gradient for a model without batch statistics. The gradient transforms
(`kbatch.training.transforms`, the TensorFlow step's chain) run on it, their state read from and
written into the optimizer variables of the state, and the optimizer applies one update
(`stateless_apply`). A step's record is the TensorFlow step's: the task's values summed, `count`,
`grad_norm` (NaN when not measured), `learning_rate`, and with a `NoiseRecord` `small_grad_sq`, the
mean squared gradient norm of the micro-batches (of the two halves of the batch without
accumulation: the devices' shares are not separate gradients here).
"""

import jax
import jax.numpy as jnp
import keras

from kbatch.training import transforms


def _sums(task, labels, outputs, weights=None):
    if task.over_batch and weights is not None:  # its padding must not act on the others
        values = task.per_example(labels, outputs, weights=weights)
    else:
        values = task.per_example(labels, outputs)
    if weights is None:
        return {name: jnp.sum(v.astype("float32")) for name, v in values.items()}
    return {name: jnp.sum(v.astype("float32") * weights) for name, v in values.items()}


def _gradient_fn(model, task, global_batch_size, accumulation_steps):
    def loss(trainable, non_trainable, x, labels):
        outputs, non_trainable, losses = model.stateless_call(
            trainable, non_trainable, x, training=True, return_losses=True
        )
        sums = _sums(task, labels, outputs)
        total = sums["loss"] / global_batch_size
        if losses:  # regularizers: one copy per update, split over the micro-batches
            total = total + sum(losses) / accumulation_steps
        return total, (sums, non_trainable)

    return jax.grad(loss, has_aux=True)


def _squared_norm(grads):
    return sum(jnp.sum(jnp.square(g.astype("float32"))) for g in grads)


def _accumulate(gradient, trainable, non_trainable, x, labels, k, unroll=False):
    """Summed gradients, sums and gradients' squared norms of k micro-batches, one after the other."""
    xs = x.reshape((k, x.shape[0] // k) + x.shape[1:])
    ys = labels.reshape((k, labels.shape[0] // k) + labels.shape[1:])

    def micro(carry, batch):
        grads, sums, squares, non_trainable = carry
        micro_grads, (micro_sums, non_trainable) = gradient(trainable, non_trainable, *batch)
        grads = jax.tree.map(jnp.add, grads, micro_grads)
        sums = jax.tree.map(jnp.add, sums, micro_sums)
        return (grads, sums, squares + _squared_norm(micro_grads), non_trainable), None

    first_grads, (first_sums, non_trainable) = gradient(trainable, non_trainable, xs[0], ys[0])
    carry = (first_grads, first_sums, _squared_norm(first_grads), non_trainable)
    (grads, sums, squares, non_trainable), _ = jax.lax.scan(micro, carry, (xs[1:], ys[1:]), unroll=unroll)
    return grads, sums, squares, non_trainable


def _halves_of_the_global_loss(model, task, global_batch_size):
    """For a task whose loss couples the batch (`Task.over_batch`), the noise scale's two parts:
    the gradient of the global batch's loss through each half's outputs (one forward pass over the
    whole batch, its batch statistics and negatives included; two backward passes, each from the
    outputs' cotangent of one half). They sum to the gradient, as a replica's part does on
    TensorFlow. Returns `gradient(...) -> (grads, sums, squares, non_trainable)`."""

    def forward(trainable, non_trainable, x):
        outputs, non_trainable, losses = model.stateless_call(
            trainable, non_trainable, x, training=True, return_losses=True
        )
        regularizers = sum(losses) if losses else jnp.zeros((), "float32")
        return (outputs, jnp.asarray(regularizers, "float32")), non_trainable

    def loss_of_outputs(outputs, labels):
        sums = _sums(task, labels, outputs)
        return sums["loss"] / global_batch_size, sums

    def gradient(trainable, non_trainable, x, labels):
        (outputs, _), backward, non_trainable = jax.vjp(lambda t: forward(t, non_trainable, x), trainable, has_aux=True)
        d_outputs, sums = jax.grad(loss_of_outputs, has_aux=True)(outputs, labels)
        first = (jnp.arange(outputs.shape[0]) < outputs.shape[0] // 2).reshape((-1,) + (1,) * (outputs.ndim - 1))
        one_half = jnp.asarray(0.5, "float32")  # the regularizers: one copy per update, split over the parts
        parts = [backward((d_outputs * mask.astype(d_outputs.dtype), one_half))[0] for mask in (first, ~first)]
        grads = jax.tree.map(jnp.add, *parts)
        return grads, sums, sum(_squared_norm(part) for part in parts), non_trainable

    return gradient


def make_train_step(model, optimizer, task, chain, geometry):
    """`step(state, x, labels) -> (state, record)`, jitted, the state's buffers donated. `chain`:
    the gradient transforms (`kbatch.training.transforms`), their optimizer variables threaded
    through the state; `geometry`: the global batch and its accumulation steps."""
    accumulation_steps = geometry.accumulation_steps
    halves = chain.needs_parts and accumulation_steps == 1
    if halves:
        accumulation_steps = 2  # the two halves, unrolled (a loop of 2 is slow on XLA:CPU)
    gradient = _gradient_fn(model, task, geometry.global_batch_size, accumulation_steps)
    over_batch_halves = (
        halves and task.over_batch and _halves_of_the_global_loss(model, task, geometry.global_batch_size)
    )

    def step(state, x, labels):
        trainable, non_trainable, optimizer_variables = state
        context = transforms.Context(
            optimizer, geometry, accumulation_steps, values=zip(optimizer.variables, optimizer_variables)
        )
        if over_batch_halves:
            grads, sums, squares, non_trainable = over_batch_halves(trainable, non_trainable, x, labels)
            context.took(sums, squares)
        elif accumulation_steps == 1:
            grads, (sums, non_trainable) = gradient(trainable, non_trainable, x, labels)
            context.took(sums)
        else:
            grads, sums, squares, non_trainable = _accumulate(
                gradient, trainable, non_trainable, x, labels, accumulation_steps, unroll=halves
            )
            context.took(sums, squares)
        grads, record = chain.apply(grads, context)
        # The transforms' writes first: the rate may read them (AdaScale's gain and progress).
        optimizer_variables = [
            context.written.get(id(v), value) for v, value in zip(optimizer.variables, optimizer_variables)
        ]
        with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, optimizer_variables))):
            learning_rate = jnp.asarray(optimizer.learning_rate, "float32")
        trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, grads, trainable)
        record = {
            **sums,
            "count": jnp.asarray(labels.shape[0], "float32"),
            "grad_norm": jnp.asarray(jnp.nan, "float32"),
            "learning_rate": learning_rate,
            **record,
        }
        return (trainable, non_trainable, optimizer_variables), record

    return jax.jit(step, donate_argnums=0)


# `updates_per_call=0`: this many updates to a call in a phase of at least `LONG_PHASE` updates,
# where the longer compile (about 1 s more for five on the MNIST-1D CNN, XLA:CPU) is paid back by
# the dispatches saved (about 0.5 ms an update there); one in a shorter phase.
UPDATES_PER_CALL, LONG_PHASE = 5, 1000


def updates_per_call(setting, phase_updates):
    """The updates of one compiled call: `setting`, or for 0 the choice above by the phase's length."""
    if setting:
        return setting
    return UPDATES_PER_CALL if phase_updates >= LONG_PHASE else 1


def call_sizes(num_steps, updates_per_call):
    """The updates of each compiled call of a loop of `num_steps`: calls of `updates_per_call`,
    then single updates for the rest (a loop ends where the run's plan stops)."""
    whole, rest = divmod(num_steps, updates_per_call)
    return [updates_per_call] * whole + [1] * rest


def unrolled(step, updates):
    """`call(state, xs, labels) -> (state, records)`: `updates` updates of `step` in one compiled
    program, over `updates` batches stacked along a leading axis; each record field stacked
    ([updates]). Fewer, longer programs: on XLA:CPU each execution costs about half a
    millisecond of its own (MNIST-1D CNN, batch 256: 7.5 ms per update alone, 7.1 ms five to a
    call); a `lax.scan` over the updates instead ran 17x slower there. The result equals single
    updates to float rounding (XLA fuses across the updates), not bitwise."""

    def call(state, xs, labels):
        records = []
        for i in range(updates):
            state, record = step(state, xs[i], labels[i])
            records.append(record)
        return state, {name: jnp.stack([r[name] for r in records]) for name in records[0]}

    return jax.jit(call, donate_argnums=0)


def make_eval_step(model, task):
    """`evaluate(trainable, non_trainable, x, labels, weights) -> sums` (and `count`), jitted."""

    def evaluate(trainable, non_trainable, x, labels, weights):
        outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return {**_sums(task, labels, outputs, weights), "count": jnp.sum(weights)}

    return jax.jit(evaluate)
