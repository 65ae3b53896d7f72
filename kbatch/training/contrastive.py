"""SimCLR's contrastive task (Chen et al. 2020, "A Simple Framework for Contrastive Learning of
Visual Representations", eq. 1): NT-Xent, the normalized temperature-scaled cross-entropy.

Each example comes as two augmented views, and the model maps them to two projections: outputs
[batch, 2, dim]. Over the 2N views of a global batch of N examples, view i's loss is the
cross-entropy of picking its partner (the other view of its example) among the 2N - 1 other
views, by cosine similarity over a temperature:

    loss_i = -log( exp(s(i, partner) / t) / sum_{k != i} exp(s(i, k) / t) )

Every other view of the batch is a negative, so the loss couples the examples (`over_batch`): the
trainer gives `per_example` the whole global batch on every backend, the negatives of every
replica included, which is what makes the loss a function of the global batch size.
"""

from keras import ops

from kbatch.data.sources.views import two_views
from kbatch.training.tasks import Task

NEGATIVES = ("global", "replica")


class Contrastive(Task):
    """NT-Xent over the two views of each example. An example's "loss" is the mean of its two
    views' losses (so the batch's mean is SimCLR's mean over 2N views) and its "partner_accuracy"
    the fraction of its views whose nearest other view is the partner. Labels are not used.

    The run's "accuracy" is the linear probe's (`kbatch.training.actions.LinearProbe`, which a
    `task="contrastive"` config runs at each evaluation): the monitor that picks the best
    evaluation, that `target_accuracy`, sweeps and LR searches read.

    Args:
      temperature: t above.
      groups: 1 (SimCLR): every view of the global batch is a negative. G > 1: the batch's rows
        in G consecutive groups, and only the views of a view's own group are its negatives, which
        is what a loss over each replica's own batch computes on G replicas (replica r holds rows
        [r b, (r + 1) b)): the comparison that shows what gathering the negatives is worth.
      probe: False for a run without the linear probe (its source has no labels, or its model no
        `represent`): the contrastive loss is then the monitor.
    """

    monitor = "accuracy"
    mode = "max"
    monitor_from = "LinearProbe"
    over_batch = True

    def __init__(self, temperature=0.1, groups=1, probe=True):
        if not temperature > 0:
            raise ValueError(f"Contrastive: temperature must be > 0, got {temperature!r}.")
        if not (isinstance(groups, int) and groups >= 1):
            raise ValueError(f"Contrastive: groups must be a positive integer, got {groups!r}.")
        self.temperature, self.groups = temperature, groups
        if not probe:  # no labelled examples to probe with, or a model without `represent`
            self.monitor, self.mode, self.monitor_from = "loss", "min", None

    def per_example(self, labels, outputs, weights=None):
        """`weights` [batch] (None: all 1): an example of weight 0 (the evaluation's padding) is
        nobody's negative."""
        del labels
        if len(outputs.shape) != 3 or outputs.shape[1] != 2:
            raise ValueError(
                f"Contrastive: the model's outputs must be [batch, 2, dim], the projections of two views, "
                f"got shape {tuple(outputs.shape)}."
            )
        z = ops.cast(outputs, "float32")
        z = z / ops.maximum(ops.sqrt(ops.sum(z * z, axis=-1, keepdims=True)), 1e-12)
        views = ops.concatenate([z[:, 0], z[:, 1]], axis=0)  # [2N, dim]: the first views, then the second
        n = ops.shape(z)[0]
        logits = ops.matmul(views, ops.transpose(views)) / self.temperature
        logits = logits - 1e9 * self._not_negatives(n, weights)
        partner = ops.concatenate([ops.arange(n) + n, ops.arange(n)], axis=0)
        picked = ops.take_along_axis(logits, ops.expand_dims(partner, -1), axis=-1)[:, 0]
        loss = ops.logsumexp(logits, axis=-1) - picked
        nearest = ops.argmax(logits, axis=-1)
        correct = ops.cast(ops.equal(nearest, ops.cast(partner, nearest.dtype)), "float32")
        return {"loss": _per_example(loss), "partner_accuracy": _per_example(correct)}

    def _not_negatives(self, n, weights):
        """[2N, 2N]: 1 where view k is not view i's to compare with: itself, a view of weight 0, or
        (with `groups`) a view of another group."""
        excluded = ops.eye(2 * n, dtype="float32")
        if weights is not None:
            absent = 1.0 - ops.cast(ops.concatenate([weights, weights], axis=0), "float32")
            excluded = ops.maximum(excluded, ops.expand_dims(absent, 0))
        if self.groups > 1:
            group = ops.tile(ops.arange(n) * self.groups // n, 2)  # row i of n in group floor(i G / n)
            apart = ops.not_equal(ops.expand_dims(group, 0), ops.expand_dims(group, 1))
            excluded = ops.maximum(excluded, ops.cast(apart, "float32"))
        return excluded


def _per_example(per_view):
    """[2N] values of the first views, then the second, as [N] means of each example's two."""
    return ops.mean(ops.reshape(per_view, (2, -1)), axis=0)


def task_of(settings, replicas):
    """The `Contrastive` task of a `task="contrastive"` config: `negatives="replica"` keeps each
    replica's negatives to its own examples (`groups` = the replicas)."""
    return Contrastive(settings.temperature, groups=replicas if settings.negatives == "replica" else 1)


def views_of(settings, source):
    """`source` as two augmented views of each example for `task="contrastive"` (its inputs' rank
    picks the augmentation: a signal [length, channels] or an image [height, width, channels]);
    `source` itself for any other task."""
    if settings.task != "contrastive":
        return source
    shape = source.describe().input_shape
    augment = {2: "signal", 3: "image"}.get(len(shape) if isinstance(shape, tuple) else None)
    if augment is None:
        raise ValueError(
            f"config.task='contrastive' augments signals [length, channels] and images [height, width, channels]; "
            f"config.dataset={settings.dataset!r} has inputs of shape {shape}: pass two views of your own "
            "(data=kbatch.data.two_views(source, augment=your_function))."
        )
    return two_views(source, augment)
