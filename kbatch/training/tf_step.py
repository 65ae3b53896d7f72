"""The TensorFlow backend's step: one update under `tf.distribute`, many in one `tf.function`.

One optimizer update (`train_step`, run on every replica by `strategy.run`):
  1. the replica's batch is split into `accumulation_steps` micro-batches; each one's gradient
     of sum(loss) / global_batch is added up, so the sum over micro-batches and replicas is the
     gradient of the mean loss over the global batch, exactly;
  2. the global gradient's norm is taken after the cross-replica sum (Keras 3 clips per replica,
     before the sum: a different update under data parallelism); with `clip_global_norm` the
     update is scaled by min(1, clip / norm), the same factor on every replica;
  3. the optimizer sums the replicas' gradients and applies one update, so the LR schedule sees
     one step per global batch whatever the accumulation.

A step's record is a dict: each of the task's values summed over the global batch, `count`
(examples), `grad_norm` (NaN when not measured) and `learning_rate`; with `measure_noise`, also
`small_grad_sq`, the mean over the update's parts (replicas x micro-batches; the two halves of the
batch when there is one part) of each part's squared gradient norm, for the noise scale
(`kbatch.diagnostics.noise_scale`).
"""

import tensorflow as tf
import keras

from kbatch.diagnostics import noise_scale
from kbatch.training import spike_guard as guard_lib
from kbatch.training import staleness

SHARED = ("grad_norm", "learning_rate", "spike_factor", "staleness")  # the same on every replica; every other record field adds up


def _loss_scale(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return tf.cast(optimizer.dynamic_scale, tf.float32)
    return tf.constant(1.0)


def _sums(task, labels, outputs, weights=None):
    """The task's values summed over a micro-batch (float32 whatever the policy)."""
    values = task.per_example(labels, outputs)
    if weights is None:
        return {name: tf.reduce_sum(tf.cast(v, tf.float32)) for name, v in values.items()}
    return {name: tf.reduce_sum(tf.cast(v, tf.float32) * weights) for name, v in values.items()}


def _has_synchronized_layers(model):
    return any(getattr(layer, "synchronized", False) for layer in model._flatten_layers())


def _micro_gradients_fn(strategy, model, optimizer, task, global_batch_size, accumulation_steps, jit_compile):
    variables = model.trainable_variables

    def micro_gradients(x, labels):
        with tf.GradientTape() as tape:
            sums = _sums(task, labels, model(x, training=True))
            loss = sums["loss"] / global_batch_size
            if model.losses:  # regularizers: one global copy per update, split over the parts
                parts = strategy.num_replicas_in_sync * accumulation_steps
                loss += tf.add_n(model.losses) / parts
            scaled = loss * _loss_scale(optimizer)
        return tape.gradient(scaled, variables), sums

    return micro_gradients if _cross_replica_forward(strategy, model) else tf.function(
        micro_gradients, jit_compile=jit_compile)


def _cross_replica_forward(strategy, model):
    # A forward pass that talks to the other replicas (synchronized batch norm) may not sit in
    # a nested tf.function or a graph loop: TF's `merge_call` refuses both.
    return strategy.num_replicas_in_sync > 1 and _has_synchronized_layers(model)


def squared_norm(grads):
    return tf.add_n([tf.reduce_sum(tf.square(tf.cast(g, tf.float32))) for g in grads])


def noise_parts(replicas, accumulation_steps):
    """The parts whose gradients the noise scale compares with the whole: (parts, micro-batches
    per replica); one replica without accumulation is split into two halves."""
    k = 2 if replicas * accumulation_steps == 1 else accumulation_steps
    return replicas * k, k


def _accumulate(micro_gradients, x, labels, variables, accumulation_steps, python_loop):
    """The summed gradients and sums of `accumulation_steps` micro-batches, one at a time, and
    the sum of the micro-batch gradients' squared norms."""
    micro = tf.shape(x)[0] // accumulation_steps
    xs = tf.reshape(x, tf.concat([[accumulation_steps, micro], tf.shape(x)[1:]], 0))
    ys = tf.reshape(labels, tf.concat([[accumulation_steps, micro], tf.shape(labels)[1:]], 0))
    grads, sums, squares = [tf.zeros_like(v) for v in variables], None, tf.constant(0.0)
    for i in range(accumulation_steps) if python_loop else tf.range(accumulation_steps):
        # One micro-batch at a time: without this dependency TF runs up to 10 loop iterations
        # at once (they are independent), with 10 micro-batches' activations in memory,
        # measured: 9x the memory of one (benchmarks/bench_accumulation_memory.py).
        with tf.control_dependencies(grads):
            micro_grads, micro_sums = micro_gradients(xs[i], ys[i])
        grads = [g + m for g, m in zip(grads, micro_grads)]
        squares += squared_norm(micro_grads)
        sums = micro_sums if sums is None else {k: sums[k] + v for k, v in micro_sums.items()}
    return grads, sums, squares


def make_train_step(strategy, model, optimizer, task, *, global_batch_size, accumulation_steps=1,
                    clip_global_norm=None, log_gradient_norm=True, jit_compile=False, measure_noise=False,
                    spike_guard=(None, None), delay_line=(), updates=None):
    """The replica function of one optimizer update; returns its record (a dict). `spike_guard`:
    (k, the variables of `spike_guard.add_statistics`), or k None for no guard; `delay_line`: the
    variables of `staleness.add_delay_line` (none: no staleness); `updates`: a variable counting
    the updates applied, for asynchronous training (`ps_backend`): the record's `staleness` is
    how many more it counts once the gradient is computed than when the weights were read, and
    it counts this update once applied."""
    spike_threshold, spike_statistics = spike_guard
    variables = model.trainable_variables
    clip = float(clip_global_norm) if clip_global_norm else None
    halves = measure_noise and strategy.num_replicas_in_sync * accumulation_steps == 1
    if measure_noise:
        parts, accumulation_steps = noise_parts(strategy.num_replicas_in_sync, accumulation_steps)
        log_gradient_norm = True
    micro_gradients = _micro_gradients_fn(strategy, model, optimizer, task, global_batch_size,
                                          accumulation_steps, jit_compile)
    # The two halves unrolled: a graph loop under XLA on a CPU ran the update 5.8x slower (measured).
    python_loop = _cross_replica_forward(strategy, model) or halves

    def train_step(batch):
        x, labels = batch
        if updates is not None:
            read_at = updates.read_value()
            with tf.control_dependencies([read_at]):  # the weights are read after the count
                x = tf.identity(x)
        if accumulation_steps == 1:
            grads, sums = micro_gradients(x, labels)
            squares = squared_norm(grads) if measure_noise else None
        else:
            grads, sums, squares = _accumulate(micro_gradients, x, labels, variables, accumulation_steps, python_loop)
        if measure_noise:  # a part's gradient is parts x its share of the global one; summed over replicas
            sums[noise_scale.RECORD] = squares * parts / tf.square(_loss_scale(optimizer))
        grad_norm = tf.constant(float("nan"))
        if clip is not None or log_gradient_norm:
            total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
            grad_norm = tf.linalg.global_norm(total) / _loss_scale(optimizer)
            if clip is not None:
                factor = tf.minimum(1.0, clip / tf.maximum(grad_norm, 1e-12))
                grads = [g * tf.cast(factor, g.dtype) for g in grads]
            # Collectives must start in the same order on every replica: the optimizer's sum
            # comes after this one.
            with tf.control_dependencies([grad_norm]):
                grads = [tf.identity(g) for g in grads]
        learning_rate = tf.cast(optimizer.learning_rate, tf.float32)
        guarded = {}
        if spike_threshold:
            with tf.control_dependencies([grad_norm]):  # the collectives in one order on every replica
                loss_sum = tf.identity(sums["loss"])
            grads, guarded = _guard(loss_sum, grads, global_batch_size, spike_threshold, spike_statistics)
        if delay_line:
            grads = _delayed(grads, delay_line, optimizer, strategy.num_replicas_in_sync)
        if updates is not None:
            grads, guarded["staleness"] = _staleness(updates, read_at, grads)
        optimizer.apply(grads, variables)
        if updates is not None:
            with tf.control_dependencies([v.value for v in variables]):  # read after the apply's writes
                updates.assign_add(1)
        return {**sums, "count": tf.cast(tf.shape(labels)[0], tf.float32), "grad_norm": grad_norm,
                "learning_rate": learning_rate, **guarded}

    if jit_compile and strategy.num_replicas_in_sync == 1:
        # One replica: no cross-replica sum inside, so XLA can compile the whole update,
        # optimizer included (as `model.fit(jit_compile=True)` does).
        return tf.function(train_step, jit_compile=True)
    return train_step


def _guard(loss_sum, grads, global_batch_size, threshold, statistics):
    """The loss-spike guard's scaled gradients and record (`kbatch.training.spike_guard`)."""
    total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, loss_sum)
    factor, new = guard_lib.guard(total / global_batch_size, [v.value for v in statistics], threshold)
    for variable, value in zip(statistics, new):
        variable.assign(value)
    return [g * tf.cast(factor, g.dtype) for g in grads], {"spike_factor": factor}


def _staleness(updates, read_at, grads):
    """(grads, staleness): the updates counted since `read_at`, read once the gradients exist;
    the gradients wait for that read, so the apply comes after it."""
    with tf.control_dependencies(grads):
        landed = updates.read_value()
    with tf.control_dependencies([landed]):
        grads = [tf.identity(g) for g in grads]
    return grads, tf.cast(landed - read_at, tf.float32)


def _delayed(grads, line, optimizer, replicas):
    """The global gradient of tau updates ago (`kbatch.training.staleness`) in place of this one's:
    this update's sum over the replicas goes into the line; replica 0 applies the delayed one and
    the others zeros, so the optimizer's cross-replica sum is it exactly."""
    context = tf.distribute.get_replica_context()
    if replicas > 1:
        with tf.control_dependencies(grads):  # the collectives in one order on every replica
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    applied, written = staleness.delay(grads, [v.value for v in line], optimizer.iterations)
    for variable, value in zip(line, written):
        variable.assign(value)
    if replicas == 1:
        return applied
    first = tf.equal(context.replica_id_in_sync_group, 0)
    return [tf.where(first, g, tf.zeros_like(g)) for g in applied]


def reduce_record(strategy, per_replica):
    """A replica record for the whole global batch: sums added, shared fields from replica 0."""
    first = strategy.experimental_local_results(per_replica)[0]
    return {name: first[name] if name in SHARED else strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for name, value in per_replica.items()}


def _by_name(names, stacked):
    """{name: column} of a [n, len(names)] tensor."""
    return {name: stacked[:, j] for j, name in enumerate(names)}


def make_train_loop(strategy, train_step):
    """`loop(iterator, num_steps)`: `num_steps` updates in one `tf.function` call (the Orbit /
    steps_per_execution idea: one host round trip for many device steps). Returns the records
    as a dict of [num_steps] tensors."""

    @tf.function
    def loop(iterator, num_steps):
        names = []  # the record's fields, read when the loop body is traced
        records = tf.TensorArray(tf.float32, size=num_steps)
        for i in tf.range(num_steps):
            record = reduce_record(strategy, strategy.run(train_step, args=(next(iterator),)))
            names[:] = list(record)
            records = records.write(i, tf.stack(list(record.values())))
        return _by_name(names, records.stack())

    return loop


def make_eval_loop(strategy, model, task):
    """`evaluate(dataset)`: the task's values summed over one pass of a distributed dataset of
    `(x, y, weight)` batches, and `count`, the sum of the weights."""

    def eval_step(batch):
        x, labels, weights = batch
        sums = _sums(task, labels, model(x, training=False), weights)
        return {**sums, "count": tf.reduce_sum(weights)}

    @tf.function
    def evaluate(dataset):
        names = []
        parts = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        for batch in dataset:
            record = reduce_record(strategy, strategy.run(eval_step, args=(batch,)))
            names[:] = list(record)
            parts = parts.write(parts.size(), tf.stack(list(record.values())))
        totals = tf.reduce_sum(parts.stack(), axis=0)
        return {name: totals[j] for j, name in enumerate(names)}

    return evaluate
