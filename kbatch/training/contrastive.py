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


class Contrastive(Task):
    """NT-Xent over the two views of each example; an example's "loss" is the mean of its two
    views' losses (so the batch's mean is SimCLR's mean over 2N views) and its "accuracy" the
    fraction of its views whose nearest other view is the partner. Labels are not used."""

    monitor = "loss"
    mode = "min"
    over_batch = True

    def __init__(self, temperature=0.1):
        if not temperature > 0:
            raise ValueError(f"Contrastive: temperature must be > 0, got {temperature!r}.")
        self.temperature = temperature

    def per_example(self, labels, outputs):
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
        logits = logits - 1e9 * ops.eye(2 * n, dtype="float32")  # a view is not its own negative
        partner = ops.concatenate([ops.arange(n) + n, ops.arange(n)], axis=0)
        picked = ops.take_along_axis(logits, ops.expand_dims(partner, -1), axis=-1)[:, 0]
        loss = ops.logsumexp(logits, axis=-1) - picked
        nearest = ops.argmax(logits, axis=-1)
        correct = ops.cast(ops.equal(nearest, ops.cast(partner, nearest.dtype)), "float32")
        return {"loss": _per_example(loss), "accuracy": _per_example(correct)}


def _per_example(per_view):
    """[2N] values of the first views, then the second, as [N] means of each example's two."""
    return ops.mean(ops.reshape(per_view, (2, -1)), axis=0)


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
