"""The one-line ValueErrors a source raises for data it cannot take, said when it is built."""

import numpy as np

from kbatch.data.sources import examples


def same_length(who, x, y, split):
    """A ValueError unless every feature of `x` and the labels `y` have one row per example."""
    lengths = (
        {f"{split} feature {key!r}": len(value) for key, value in x.items()}
        if isinstance(x, dict)
        else {f"x{split}": len(x)}
    )
    lengths[f"y{split}"] = len(y)
    if len(set(lengths.values())) > 1:
        said = ", ".join(f"{name} has {length}" for name, length in lengths.items())
        raise ValueError(f"{who}: the arrays have different lengths ({said}): give one row per example in each.")
    if not len(y):
        raise ValueError(f"{who}: y{split} is empty: give at least one example.")


def same_features(who, train, other, what):
    """A ValueError unless `other` has the features of `train` (the same keys, example shapes, dtypes)."""
    want, got = examples.spec(train), examples.spec(other)
    if isinstance(want, dict) and isinstance(got, dict) and set(want) - set(got):
        missing = ", ".join(repr(key) for key in sorted(set(want) - set(got)))
        raise ValueError(f"{who}: {what} lacks the feature(s) {missing}: each batch needs all of {sorted(want)}.")
    if want != got:
        raise ValueError(f"{who}: {what} has the features {got}, the training data {want}: they must match.")


def labels_in_range(who, labels, num_classes):
    """A ValueError unless the integer `labels` are in [0, num_classes)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise ValueError(
            f"{who}: label {bad} is out of range for num_classes={num_classes}: "
            f"labels must be integers in [0, {num_classes})."
        )


def eval_given(who, eval_data):
    """A ValueError when a source has no evaluation data."""
    if eval_data is None:
        raise ValueError(
            f"{who}: no evaluation data: give eval=(x_eval, y_eval) (kbatch evaluates every run; "
            "hold out part of the training data if there is no other)."
        )
