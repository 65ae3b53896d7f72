"""Self-training's data (pseudo-labels: Lee 2013; a teacher labelling unlabelled data for a student:
Xie et al. 2020, "Self-training with Noisy Student"): a labelled subset of a source's training
examples, and the rest labelled by a teacher where it is confident.

`split(source, labelled)`: the source's training examples in a fixed order (the stream of seed 0,
epoch 0), the first `labelled` keeping their labels, the rest unlabelled. A teacher trained on
the labelled part alone (`labelled_examples` without a `teacher`) and its student split alike.
`pseudo_labelled(source, labelled, predict, threshold)`: the labelled part and, of the rest, the
examples whose teacher's top class probability is at least `threshold`, with that class as the
label, as one `from_arrays` source evaluated on the source's own evaluation split.
"""

import dataclasses

import numpy as np

from kbatch.data.sources import examples
from kbatch.data.sources.arrays import from_arrays
from kbatch.data.sources.base import PositionalSource

SPLIT_SEED = 0  # the order that decides which examples are labelled: the same for every run
CHUNK = 2048  # examples the teacher labels at once


@dataclasses.dataclass(frozen=True)
class PseudoLabels:
    """What the teacher gave: how many examples were labelled, offered and kept, and how many of the
    kept ones agree with the source's own labels (the pseudo-labels' noise, where those are known)."""

    labelled: int
    unlabelled: int
    kept: int
    kept_right: int

    @property
    def noise(self):
        """The fraction of kept pseudo-labels that differ from the source's labels."""
        return 1.0 - self.kept_right / self.kept if self.kept else 0.0


def split(source, labelled):
    """((x, y) labelled, (x, y) unlabelled with their true labels) of `source`'s training examples."""
    if not isinstance(source, PositionalSource):
        raise ValueError(
            f"config.labelled_examples={labelled}: self-training splits the training examples by position, and "
            f"this source ({type(source).__name__}) does not say which example each position holds."
        )
    total = source.describe().num_train_examples
    if not 0 < labelled < total:
        raise ValueError(
            f"config.labelled_examples={labelled}: must be between 1 and {total - 1} (the training examples - 1)."
        )
    x, y = source.examples_at(0, total, SPLIT_SEED)
    return (examples.take(x, slice(0, labelled)), y[:labelled]), (examples.take(x, slice(labelled, None)), y[labelled:])


def labelled_only(source, labelled):
    """The source's first `labelled` examples (see `split`) as a source: the teacher's data."""
    (x, y), _ = split(source, labelled)
    return _with_eval(source, x, y, f"{source.name}-labelled{labelled}")


def pseudo_labelled(source, labelled, predict, threshold):
    """(source, `PseudoLabels`): the labelled part and the confident part of the rest (see the
    module's docstring); `predict(x) -> [n, classes]` class probabilities."""
    (x, y), (x_rest, y_rest) = split(source, labelled)
    probabilities = np.concatenate(
        [predict(examples.take(x_rest, slice(i, i + CHUNK))) for i in range(0, len(y_rest), CHUNK)]
    )
    confident = probabilities.max(axis=1) >= threshold
    labels = probabilities.argmax(axis=1)[confident].astype(y.dtype)
    report = PseudoLabels(len(y), len(y_rest), int(confident.sum()), int(np.sum(labels == y_rest[confident])))
    x_all = examples.join([x, examples.take(x_rest, np.flatnonzero(confident))])
    name = f"{source.name}-labelled{labelled}-pseudo{threshold:g}"
    return _with_eval(source, x_all, np.concatenate([y, labels]), name), report


def _with_eval(source, x, y, name):
    eval_parts = list(source.eval_chunks())
    x_eval = examples.join([p[0] for p in eval_parts])
    y_eval = np.concatenate([p[1] for p in eval_parts])
    return from_arrays(x, y, eval=(x_eval, y_eval), num_classes=source.describe().num_classes, name=name)
