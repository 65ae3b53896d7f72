"""Asynchronous training with parameter servers (`strategy="parameter_server"`).

TensorFlow's `ParameterServerStrategy` keeps the variables on the parameter servers; its
`ClusterCoordinator` (this process, TF_CONFIG task "chief") sends each update to whichever worker
is free, and the workers never wait for each other: a worker reads the weights, computes its
batch's gradient and applies it, while the others apply theirs (Dean et al. 2012, "Large Scale
Distributed Deep Networks"). So update k's gradient was computed on the weights of some earlier
update: its staleness, which this backend measures for every update.

What stays as in synchronous training:
- update k takes global batch k of the same stream (`data.train_examples_at`: the coordinator
  hands out stream positions; every worker holds the training split in memory), so a run sees
  each example once per epoch and a resumed run goes on where it stopped;
- the plan, evaluations (on the coordinator), checkpoints (written by the coordinator) and logs.
What does not: the order in which updates land, so runs are not bitwise reproducible.

Staleness of an update = the updates applied between its read of the weights and its own apply
(the backend counts them in a variable, with an atomic add once each update is applied, and reads
it before the forward pass and again once the gradient is computed): tau of the delayed-SGD model
(Lian et al. 2015) and of `config.staleness`. Keras counts `optimizer.iterations` with a read and
a write, which two workers can interleave (a lost count), so the backend sets it to k before
update k applies (the learning-rate schedule sees k) and to the exact count after each loop.
"""

import contextlib

import numpy as np
import tensorflow as tf

from kbatch import data, distribute
from kbatch.data.sources.builtin import BuiltinSource
from kbatch.training import transforms
from kbatch.training.backends import tf_backend, tf_step


class ParameterServerBackend(tf_backend.TensorFlowBackend):
    """`TensorFlowBackend` with updates scheduled on workers, one global batch each."""

    def __init__(self, settings, strategy=None):
        super().__init__(settings, strategy)
        self.coordinator = tf.distribute.coordinator.ClusterCoordinator(self.strategy)
        self.multi_worker = False  # nothing collective: the coordinator alone saves and evaluates
        cluster = distribute.read_tf_config("parameter_server")["cluster"]
        self.layout = f"{len(cluster['worker'])} asynchronous worker(s) and {len(cluster['ps'])} parameter server(s)"

    def use_source(self, source):
        if not isinstance(source, BuiltinSource):
            raise ValueError(
                "config.strategy='parameter_server': its workers read batches by stream position from a "
                "built-in data set held in memory (kbatch.data.facts); train a source of your own under "
                "a synchronous strategy."
            )
        super().use_source(source)

    def attach(self, model, optimizer, task):
        super().attach(model, optimizer, task)
        self._applied = tf.Variable(0, dtype=tf.int64, trainable=False, name="applied_updates")

    def restore(self):
        step = super().restore()
        self._applied.assign(step)
        return step

    def _train_step(self, phase, accumulation_steps):
        chain = transforms.Chain([*self.chain, tf_step.CountStaleness(self._applied)])
        return tf_step.make_train_step(
            self.strategy, self.model, self.optimizer, self.task, chain, transforms.Geometry(phase.batch_size)
        )

    def _loop(self, step, phase, start_example):
        """`loop(num_steps)`: `num_steps` updates scheduled on the workers, waited for, and their
        records (each with `staleness`) in the order they were scheduled."""
        s = self.settings
        tables = iter(self.coordinator.create_per_worker_dataset(data.train_table_fn(s.dataset, s.data_dir)))
        update = self._update_fn(step, phase.batch_size)
        phase_start = int(self._applied.numpy())  # update phase_start reads the stream at start_example

        def loop(num_steps):
            first = int(self._applied.numpy())
            position = start_example + (first - phase_start) * phase.batch_size
            futures = [
                self.coordinator.schedule(
                    update,
                    args=(
                        tables,
                        tf.constant(position + i * phase.batch_size, tf.int64),
                        tf.constant(first + i, tf.int64),
                    ),
                )
                for i in range(num_steps)
            ]
            self.coordinator.join()
            self.optimizer.iterations.assign(first + num_steps)  # exact again, whatever the race
            records = [future.fetch() for future in futures]
            return {name: np.array([r[name] for r in records], np.float32) for name in records[0]}

        return loop

    def _update_fn(self, step, batch):
        """The function each worker runs for update `index`: the global batch at `first_position`
        of the stream, one step, its record."""
        strategy, optimizer, dataset, seed = self.strategy, self.optimizer, self.settings.dataset, self.settings.seed

        @tf.function
        def update(table, first_position, index):
            positions = first_position + tf.range(batch, dtype=tf.int64)
            examples = data.train_examples_at(dataset, next(table), positions, seed)
            optimizer.iterations.assign(index)  # the learning rate of update `index`
            return tf_step.reduce_record(strategy, strategy.run(step, args=(examples,)))

        return update

    def _evaluation_strategy(self):
        """The coordinator's own (the default strategy): it reads the weights from the parameter servers."""
        return tf.distribute.get_strategy()

    def average_moving_statistics(self):
        """One copy of each variable, on the parameter servers: nothing to average."""

    def preemption(self, save, current_step):
        """No preemption notice: TensorFlow's handler does not serve this strategy. A worker that
        goes away has its updates rescheduled by the coordinator; the run resumes from its last
        checkpoint when the coordinator or a parameter server goes."""
        return contextlib.nullcontext(lambda step: None)
