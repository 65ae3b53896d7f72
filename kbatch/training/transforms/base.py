"""What every gradient transform is, and what it may ask of the step it runs in.

A transform (the Optax idea, in Keras ops) maps the update's gradients to new gradients and
a record: `apply(grads, state, context) -> (grads, new state, record)`, a pure function of the
values it is given, so the TensorFlow step (variables read and assigned) and the JAX step (values
threaded through `stateless_apply`) run the same code. Its state is a list of optimizer variables,
created once by `build` with `optimizer.add_variable`, so checkpoints hold it and a resumed run goes
on exactly.
"""

import abc
import collections

Geometry = collections.namedtuple("Geometry", ["global_batch_size", "accumulation_steps"], defaults=[1])
Geometry.__doc__ = """The batch of one update: the global batch size and the micro-batches it is taken in."""


class GradientTransform(abc.ABC):
    """One step of the chain between the summed micro-batch gradients and `optimizer.apply`."""

    needs_parts = False  # whether the step must take the update's parts' squared norms (`Context.part_sq`)

    def __init__(self):
        self.variables = []

    def build(self, optimizer, trainable_variables):
        """Create the state as `optimizer` variables (after `optimizer.build`); none by default."""

    @abc.abstractmethod
    def apply(self, grads, state, context):
        """(grads, new state, record): the values of this update; `state` the values of `variables`."""

    def start(self, context):
        """Tensors the forward pass must wait for. A hook of the TensorFlow step alone, for
        asynchronous training (`tf_step.CountStaleness`); a pure program has no order to keep."""
        return []

    def finish(self, context, variables):
        """Called by the TensorFlow step once `optimizer.apply` has updated `variables`."""
        return None  # a body of its own: AutoGraph cannot convert a function that is only a docstring


class Context:
    """One update as a single program sees it (the JAX step, and the unit tests): the state is a
    mapping from optimizer variables to values, read and written here; sums across devices are
    already in the values. The TensorFlow step's replica context overrides `all_reduce`,
    `replica_share`, `read` and `write`."""

    def __init__(self, optimizer, geometry, parts, values=None, loss_scale=1.0):
        self.optimizer, self.geometry, self.parts, self.loss_scale = optimizer, geometry, parts, loss_scale
        self.values = {id(v): value for v, value in values} if values is not None else None
        self.written = {}
        self.sums, self.part_sq, self.record = {}, None, {}

    def took(self, sums, part_sq=None):
        """The update's summed task values and its parts' summed squared gradient norms."""
        self.sums, self.part_sq = sums, part_sq

    def all_reduce(self, values):
        """`values` summed over the replicas."""
        return values

    def replica_share(self, grads):
        """What this replica gives the optimizer of gradients already summed over the replicas."""
        return grads

    def read(self, variable):
        return self.values[id(variable)] if self.values is not None else variable.value

    def write(self, variable, value):
        self.written[id(variable)] = value

    @property
    def iterations(self):
        return self.read(self.optimizer.iterations)
