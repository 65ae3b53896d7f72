"""The gradient pipeline: transforms applied in order, their records collected.

The order `from_settings` builds: the global norm (a record, and what clipping reads), the noise
record, clipping to the global norm, the loss-spike guard, the staleness delay line. The next ones
go where their meaning puts them: a gain on the rate (AdaScale) after the records it reads, a
cross-replica gather before anything that needs the global batch. A new transform is one
`GradientTransform` subclass with its own test, added here by `from_settings`.
"""


class Chain:
    """Transforms applied one after the other; a later one reads the earlier ones' records
    (`context.record`)."""

    def __init__(self, transforms=()):
        self.transforms = list(transforms)

    def build(self, optimizer, trainable_variables):
        """Every transform's state, as optimizer variables (once, after `optimizer.build`)."""
        for transform in self.transforms:
            transform.build(optimizer, trainable_variables)
        return self

    def __iter__(self):
        return iter(self.transforms)

    def get(self, kind):
        """The chain's transform of class `kind`, or None."""
        return next((t for t in self.transforms if isinstance(t, kind)), None)

    @property
    def needs_parts(self):
        return any(t.needs_parts for t in self.transforms)

    def start(self, context):
        return [tensor for t in self.transforms for tensor in t.start(context)]

    def apply(self, grads, context):
        """(grads, record): the update's gradients through every transform, state read and
        written through `context`."""
        context.record = {}
        for transform in self.transforms:
            state = [context.read(v) for v in transform.variables]
            grads, state, record = transform.apply(list(grads), state, context)
            for variable, value in zip(transform.variables, state):
                context.write(variable, value)
            context.record.update(record)
        return grads, context.record

    def finish(self, context, variables):
        for transform in self.transforms:
            transform.finish(context, variables)
