"""One set of moving statistics for the whole data after data-parallel training.

Under `tf.distribute` (MirroredStrategy, MultiWorkerMirroredStrategy, TPUStrategy), Keras 3
creates a layer's non-trainable variables as mirrored variables with `aggregation=NONE`. A
non-synchronized BatchNormalization assigns its moving mean and variance inside the replica
function, and an assignment with `aggregation=NONE` in replica context writes only that
replica's own copy: every replica tracks the statistics of its own shard of the data, the
copies diverge, and reading the variable outside `strategy.run` (evaluation, `get_weights()`,
`model.save`, checkpoints) gives replica 0's copy alone.
(It imports TensorFlow when called: the layers themselves run without it.)
"""

import weakref

_AVERAGES = weakref.WeakKeyDictionary()  # model -> {(strategy, variables): its tf.function}


def average_moving_statistics(model, strategy=None):
    """Sets every replica's copy of each moving statistic of `model` to the cross-replica mean.

    Call it outside `strategy.run` (cross-replica context), on every worker, at the end of
    training and before each evaluation or save. It averages every non-trainable floating-point
    variable of the model: the moving mean/variance of BatchNormalization (and renorm's moving
    statistics), GhostBatchNormalization and SwitchableNormalization, and any other per-replica
    state a user's layer keeps; a variable whose copies already agree keeps its value. With one
    replica it does nothing. The average of the per-replica moving means is the moving mean of
    the global batch; the average of the moving variances is the mean per-replica variance (the
    quantity each replica normalized by in training).
    """
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    variables = [v for v in model.non_trainable_variables if tf.as_dtype(v.dtype).is_floating]
    if strategy.num_replicas_in_sync == 1 or not variables:
        return
    # One traced function per model, strategy and variables: a new one at every call (before
    # each evaluation) made TensorFlow warn of excessive retracing.
    averages = _AVERAGES.setdefault(model, {})
    key = (id(strategy), tuple(id(v) for v in variables))
    if key not in averages:
        averages[key] = _average_fn(strategy, variables)
    averages[key]()


def _average_fn(strategy, variables):
    import tensorflow as tf

    @tf.function
    def average():
        # Read in replica context: each replica sees its own copy.
        local = strategy.run(lambda: [tf.identity(v.value) for v in variables])
        for variable, values in zip(variables, local):
            # Assign in cross-replica context: writes every replica's copy.
            variable.assign(strategy.reduce(tf.distribute.ReduceOp.MEAN, values, axis=None))

    return average
