"""The distributed train and eval steps, and the loop that runs many steps in one `tf.function`.

One optimizer update (`train_step`, run on every replica by `strategy.run`):
  1. the replica's batch is split into `accumulation_steps` micro-batches; each one's gradient
     of sum(loss) / global_batch is added up, so the sum over micro-batches and replicas is the
     gradient of the mean loss over the global batch, exactly;
  2. the global gradient's norm is taken after the cross-replica sum (Keras 3 clips per replica,
     before the sum: a different update under data parallelism); with `clip_global_norm` the
     update is scaled by min(1, clip / norm), the same factor on every replica;
  3. the optimizer sums the replicas' gradients and applies one update, so the LR schedule sees
     one step per global batch whatever the accumulation.
"""

import tensorflow as tf
import keras

RECORD_FIELDS = ("loss_sum", "correct", "count", "grad_norm", "learning_rate")


def _loss_scale(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return tf.cast(optimizer.dynamic_scale, tf.float32)
    return tf.constant(1.0)


def _sums(labels, logits):
    """Summed cross-entropy and correct predictions of a micro-batch (float32 whatever the policy)."""
    logits = tf.cast(logits, tf.float32)
    per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=labels.dtype), labels), tf.float32)
    return tf.reduce_sum(per_example), tf.reduce_sum(correct)


def _has_synchronized_layers(model):
    return any(getattr(layer, "synchronized", False) for layer in model._flatten_layers())


def make_train_step(strategy, model, optimizer, *, global_batch_size, accumulation_steps=1,
                    clip_global_norm=None, log_gradient_norm=True, jit_compile=False):
    """The replica function of one optimizer update; returns a record of `RECORD_FIELDS` sums."""
    variables = model.trainable_variables
    clip = float(clip_global_norm) if clip_global_norm else None
    need_global_gradient = clip is not None or log_gradient_norm

    def micro_gradients(x, labels):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss_sum, correct = _sums(labels, logits)
            loss = loss_sum / global_batch_size
            if model.losses:  # regularizers: one global copy per update, split over the parts
                parts = strategy.num_replicas_in_sync * accumulation_steps
                loss += tf.add_n(model.losses) / parts
            scaled = loss * _loss_scale(optimizer)
        return tape.gradient(scaled, variables), loss_sum, correct

    # A forward pass that talks to the other replicas (synchronized batch norm) may not sit in
    # a nested tf.function or a graph loop: TF's `merge_call` refuses both.
    cross_replica_forward = strategy.num_replicas_in_sync > 1 and _has_synchronized_layers(model)
    if not cross_replica_forward:
        micro_gradients = tf.function(micro_gradients, jit_compile=jit_compile)

    def train_step(batch):
        x, labels = batch
        if accumulation_steps == 1:
            grads, loss_sum, correct = micro_gradients(x, labels)
        else:
            micro = tf.shape(x)[0] // accumulation_steps
            xs = tf.reshape(x, tf.concat([[accumulation_steps, micro], tf.shape(x)[1:]], 0))
            ys = tf.reshape(labels, [accumulation_steps, micro])
            grads = [tf.zeros_like(v) for v in variables]
            loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
            micro_steps = range(accumulation_steps) if cross_replica_forward else tf.range(accumulation_steps)
            for i in micro_steps:
                # One micro-batch at a time: without this dependency TF runs up to 10 loop
                # iterations at once (they are independent), with 10 micro-batches' activations
                # in memory, measured: 9x the memory of one (benchmarks/bench_accumulation_memory.py).
                with tf.control_dependencies(grads):
                    micro_grads, micro_loss, micro_correct = micro_gradients(xs[i], ys[i])
                grads = [g + m for g, m in zip(grads, micro_grads)]
                loss_sum += micro_loss
                correct += micro_correct
        learning_rate = tf.cast(optimizer.learning_rate, tf.float32)
        grad_norm = tf.constant(float("nan"))
        if need_global_gradient:
            replica = tf.distribute.get_replica_context()
            total = replica.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            grad_norm = tf.linalg.global_norm(total) / _loss_scale(optimizer)
            if clip is not None:
                factor = tf.minimum(1.0, clip / tf.maximum(grad_norm, 1e-12))
                grads = [g * tf.cast(factor, g.dtype) for g in grads]
            # Collectives must start in the same order on every replica: the optimizer's sum
            # comes after this one.
            with tf.control_dependencies([grad_norm]):
                grads = [tf.identity(g) for g in grads]
        optimizer.apply(grads, variables)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.stack([loss_sum, correct, count, grad_norm, learning_rate])

    if jit_compile and strategy.num_replicas_in_sync == 1:
        # One replica: no cross-replica sum inside, so XLA can compile the whole update,
        # optimizer included (as `model.fit(jit_compile=True)` does).
        return tf.function(train_step, jit_compile=True)
    return train_step


def make_train_loop(strategy, train_step):
    """`loop(iterator, num_steps)`: `num_steps` updates in one `tf.function` call (the Orbit /
    steps_per_execution idea: one host round trip for many device steps). Returns a
    [num_steps, len(RECORD_FIELDS)] tensor: per update, the sums over the global batch, the
    global gradient norm and the learning rate used."""

    @tf.function
    def loop(iterator, num_steps):
        records = tf.TensorArray(tf.float32, size=num_steps)
        for i in tf.range(num_steps):
            per_replica = strategy.run(train_step, args=(next(iterator),))
            summed = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            first = strategy.experimental_local_results(per_replica)[0]
            # Sums add across replicas; the norm and LR are the same on every replica.
            records = records.write(i, tf.concat([summed[:3], first[3:]], 0))
        return records.stack()

    return loop


def make_eval_loop(strategy, model):
    """`evaluate(dataset)`: (loss_sum, correct, count) over one pass of a distributed dataset."""

    def eval_step(batch):
        x, labels = batch
        loss_sum, correct = _sums(labels, model(x, training=False))
        return tf.stack([loss_sum, correct, tf.cast(tf.shape(labels)[0], tf.float32)])

    @tf.function
    def evaluate(dataset):
        totals = tf.zeros([3])
        for batch in dataset:
            per_replica = strategy.run(eval_step, args=(batch,))
            totals += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        return totals

    return evaluate
