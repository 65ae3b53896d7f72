"""The TensorFlow backend's step: one update under `tf.distribute`, many in one `tf.function`.

One optimizer update (`train_step`, run on every replica by `strategy.run`):
  1. the replica's batch is split into `accumulation_steps` micro-batches; each one's gradient
     of sum(loss) / global_batch is added up, so the sum over micro-batches and replicas is the
     gradient of the mean loss over the global batch, exactly;
  2. the gradient transforms (`kbatch.training.transforms`: the global norm, clipping after the
     cross-replica sum, the loss-spike guard, the delay line, the noise record) run on the
     replica's gradients, their cross-replica sums (`ReplicaContext`) in one order on every replica;
  3. the optimizer sums the replicas' gradients and applies one update, so the LR schedule sees
     one step per global batch whatever the accumulation.

A step's record is a dict: each of the task's values summed over the global batch, `count`
(examples), `grad_norm` (NaN when not measured) and `learning_rate`; with a `NoiseRecord`, also
`small_grad_sq`, the mean over the update's parts (replicas x micro-batches; the two halves of the
batch when there is one part) of each part's squared gradient norm, for the noise scale
(`kbatch.diagnostics.noise_scale`); and what the chain's transforms record.
"""

import keras
import tensorflow as tf

from kbatch.training import transforms

# The same on every replica; every other record field adds up.
SHARED = ("grad_norm", "learning_rate", "spike_factor", "staleness", *transforms.adascale.RECORDS)


def _loss_scale(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return tf.cast(optimizer.dynamic_scale, tf.float32)
    return tf.constant(1.0)


def _sums(task, labels, outputs, weights=None):
    """The task's values summed over a micro-batch (float32 whatever the policy)."""
    values = _replica_values(task, labels, outputs, weights)
    if weights is None:
        return {name: tf.reduce_sum(tf.cast(v, tf.float32)) for name, v in values.items()}
    return {name: tf.reduce_sum(tf.cast(v, tf.float32) * weights) for name, v in values.items()}


def _replica_values(task, labels, outputs, weights=None):
    """The task's per-example values of this replica's examples. A task whose loss couples the
    examples of the global batch (`Task.over_batch`: a contrastive loss's negatives) is given every
    replica's labels and outputs (and evaluation `weights`) in the global batch's row order
    (`tf_adapter`: replica r holds rows [r b, (r + 1) b)), and this replica keeps its own rows' values."""
    if not task.over_batch:
        return task.per_example(labels, outputs)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return task.per_example(labels, outputs, **({} if weights is None else {"weights": weights}))
    gathered = {} if weights is None else {"weights": _gathered(context, weights)}
    values = task.per_example(_gathered(context, labels), _gathered(context, outputs), **gathered)
    rows = tf.shape(labels)[0]
    start = context.replica_id_in_sync_group * rows
    return {name: value[start : start + rows] for name, value in values.items()}


def _gathered(context, value):
    """Every replica's `value`, concatenated in replica order, as a sum: each replica puts its own
    in its slot of zeros (google-research/simclr's cross-replica concat). The sum's gradient is the
    summed gradient, so each replica's share of the loss reaches the replica whose outputs it used.
    (`ReplicaContext.all_gather` fails inside the loop's graph under MultiWorkerMirroredStrategy,
    TF 2.21: "destinations can not be empty".)"""
    slots = tf.one_hot(context.replica_id_in_sync_group, context.num_replicas_in_sync, dtype=value.dtype)
    placed = tf.reshape(slots, [-1] + [1] * len(value.shape)) * value[tf.newaxis]
    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, placed)
    return tf.reshape(summed, tf.concat([[-1], tf.shape(value)[1:]], 0))


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

    return (
        micro_gradients
        if _cross_replica_forward(strategy, model, task)
        else tf.function(micro_gradients, jit_compile=jit_compile)
    )


def _cross_replica_forward(strategy, model, task):
    # A forward pass or loss that talks to the other replicas (synchronized batch norm, a loss
    # over the global batch) may not sit in a nested tf.function or a graph loop: TF's
    # `merge_call` refuses both.
    return strategy.num_replicas_in_sync > 1 and (_has_synchronized_layers(model) or task.over_batch)


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


def _halves_of_the_global_loss(model, optimizer, task, global_batch_size):
    """For a task whose loss couples the batch (`Task.over_batch`) on one replica, the noise
    scale's two parts: the gradient of the global batch's loss through each half's outputs (one
    forward pass over the whole batch, its batch statistics and negatives included; two backward
    passes, each from the outputs' gradient on one half). They sum to the gradient, as the
    replicas' parts do. `gradient(x, labels) -> (grads, sums, squares)`."""
    variables = model.trainable_variables

    def gradient(x, labels):
        scale = _loss_scale(optimizer)
        with tf.GradientTape(persistent=True) as tape:
            outputs = model(x, training=True)
            regularizers = tf.add_n(model.losses) / 2 if model.losses else None  # one copy, split over the parts
            with tf.GradientTape() as on_outputs:
                on_outputs.watch(outputs)
                sums = _sums(task, labels, outputs)
                loss = sums["loss"] / global_batch_size * scale
        d_outputs = on_outputs.gradient(loss, outputs)
        first = tf.reshape(
            tf.range(tf.shape(outputs)[0]) < tf.shape(outputs)[0] // 2, [-1] + [1] * (outputs.shape.rank - 1)
        )
        parts = []
        for mask in (first, tf.logical_not(first)):
            part = tape.gradient(outputs, variables, output_gradients=d_outputs * tf.cast(mask, d_outputs.dtype))
            if regularizers is not None:
                part = [g + r for g, r in zip(part, tape.gradient(regularizers * scale, variables))]
            parts.append(part)
        del tape
        grads = [a + b for a, b in zip(*parts)]
        return grads, sums, squared_norm(parts[0]) + squared_norm(parts[1])

    return gradient


def _batch_gradients_fn(strategy, model, optimizer, task, chain, geometry, jit_compile):
    """`gradients(x, labels) -> (grads, sums, squares)` of one replica's batch, and the noise
    scale's parts: the micro-batches of accumulation (`squares`: their gradients' summed squared
    norms; None where nothing needs them), or the two halves of one replica's batch."""
    variables = model.trainable_variables
    replicas, accumulation_steps = strategy.num_replicas_in_sync, geometry.accumulation_steps
    halves = chain.needs_parts and replicas * accumulation_steps == 1
    if halves and task.over_batch:
        return _halves_of_the_global_loss(model, optimizer, task, geometry.global_batch_size)
    if chain.needs_parts:
        accumulation_steps = noise_parts(replicas, accumulation_steps)[1]
    micro_gradients = _micro_gradients_fn(
        strategy, model, optimizer, task, geometry.global_batch_size, accumulation_steps, jit_compile
    )
    # The two halves unrolled: a graph loop under XLA on a CPU ran the update 5.8x slower (measured).
    python_loop = _cross_replica_forward(strategy, model, task) or halves

    def gradients(x, labels):
        if accumulation_steps > 1:
            return _accumulate(micro_gradients, x, labels, variables, accumulation_steps, python_loop)
        grads, sums = micro_gradients(x, labels)
        return grads, sums, squared_norm(grads) if chain.needs_parts else None

    return gradients


def make_train_step(strategy, model, optimizer, task, chain, geometry, jit_compile=False):
    """The replica function of one optimizer update; returns its record (a dict). `chain`: the
    gradient transforms (`kbatch.training.transforms`) between the summed gradients and the
    optimizer; `geometry`: the global batch and its accumulation steps; `jit_compile`: XLA for the
    whole update on one replica, for the micro-batch gradient on several."""
    variables, replicas = model.trainable_variables, strategy.num_replicas_in_sync
    parts = (
        noise_parts(replicas, geometry.accumulation_steps)[0]
        if chain.needs_parts
        else replicas * geometry.accumulation_steps
    )
    gradients = _batch_gradients_fn(strategy, model, optimizer, task, chain, geometry, jit_compile)

    def train_step(batch):
        x, labels = batch
        context = ReplicaContext(optimizer, geometry, parts, replicas)
        first_reads = chain.start(context)
        if first_reads:
            with tf.control_dependencies(first_reads):  # the weights are read after these
                x = tf.identity(x)
        grads, sums, squares = gradients(x, labels)
        context.took(sums, squares)
        grads, record = chain.apply(grads, context)
        learning_rate = tf.cast(optimizer.learning_rate, tf.float32)
        optimizer.apply(context.ordered(grads), variables)
        chain.finish(context, variables)
        return {
            **sums,
            "count": tf.cast(tf.shape(labels)[0], tf.float32),
            "grad_norm": tf.constant(float("nan")),
            "learning_rate": learning_rate,
            **record,
        }

    if jit_compile and strategy.num_replicas_in_sync == 1:
        # One replica: no cross-replica sum inside, so XLA can compile the whole update,
        # optimizer included (as `model.fit(jit_compile=True)` does).
        return tf.function(train_step, jit_compile=True)
    return train_step


class ReplicaContext(transforms.Context):
    """What the transforms ask of one replica under `tf.distribute`: variables read and assigned,
    sums over the replicas as collectives, started in one order on every replica (each waits for
    the one before; the optimizer's own sum comes last, `ordered`)."""

    def __init__(self, optimizer, geometry, parts, replicas):
        super().__init__(optimizer, geometry, parts, loss_scale=_loss_scale(optimizer))
        self.replicas, self._last = replicas, []

    def all_reduce(self, values):
        if self.replicas == 1:
            return values
        with tf.control_dependencies(self._last):
            values = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, values)
        self._last = tf.nest.flatten(values)
        return values

    def ordered(self, grads):
        """`grads`, once every collective of the chain has run."""
        with tf.control_dependencies(self._last):
            return [tf.identity(g) for g in grads]

    def replica_share(self, grads):
        """Replica 0 gives the summed gradients, the others zeros."""
        if self.replicas == 1:
            return grads
        first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
        return [tf.where(first, g, tf.zeros_like(g)) for g in grads]

    def write(self, variable, value):
        variable.assign(value)


class CountStaleness(transforms.GradientTransform):
    """Asynchronous training (`ps_backend`): records `staleness`, how many more updates `updates`
    counts once the gradient is computed than when the weights were read, and counts this update
    once applied. The gradients wait for the second read, so the apply comes after it."""

    def __init__(self, updates):
        super().__init__()
        self.updates = updates

    def start(self, context):
        context.read_at = self.updates.read_value()
        return [context.read_at]

    def apply(self, grads, state, context):
        with tf.control_dependencies(grads):
            landed = self.updates.read_value()
        with tf.control_dependencies([landed]):
            grads = [tf.identity(g) for g in grads]
        return grads, state, {"staleness": tf.cast(landed - context.read_at, tf.float32)}

    def finish(self, context, variables):
        with tf.control_dependencies([v.value for v in variables]):  # read after the apply's writes
            self.updates.assign_add(1)


def reduce_record(strategy, per_replica):
    """A replica record for the whole global batch: sums added, shared fields from replica 0."""
    first = strategy.experimental_local_results(per_replica)[0]
    return {
        name: first[name] if name in SHARED else strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
        for name, value in per_replica.items()
    }


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
