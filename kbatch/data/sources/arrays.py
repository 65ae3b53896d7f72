"""A source over NumPy arrays held in memory: `kbatch.data.from_arrays(x, y, eval=(x_eval, y_eval))`.

Position p holds example `permutation(seed, epoch)[p mod N]`, epoch = p // N, a fresh NumPy
permutation each epoch (`EpochShuffle`, as `kbatch.data.numpy_source` shuffles the built-in sets):
the stream is a pure function of (seed, position), so every guarantee holds.
"""

import numpy as np

from kbatch.data.names import DatasetInfo
from kbatch.data.sources import checks, examples
from kbatch.data.sources.base import Guarantees, PositionalSource
from kbatch.data.sources.shuffle import EpochShuffle

WHO = "kbatch.data.from_arrays"


def from_arrays(x, y, eval=None, num_classes=None, name="arrays"):  # noqa: A002 (the documented spelling)
    """A `Source` of the arrays `x` (or a dict of named features) and labels `y`, evaluated on
    `eval=(x_eval, y_eval)`. Integer labels are classes: `num_classes` (default: the largest label
    + 1) bounds them; `num_classes=0` says the labels are not classes (regression targets)."""
    checks.eval_given(WHO, eval)
    x, y = examples.as_arrays(x), np.asarray(y)
    x_eval, y_eval = examples.as_arrays(eval[0]), np.asarray(eval[1])
    checks.same_length(WHO, x, y, "")
    checks.same_length(WHO, x_eval, y_eval, "_eval")
    checks.same_features(WHO, x, x_eval, "x_eval")
    classes = num_classes
    if np.issubdtype(y.dtype, np.integer) and num_classes != 0:
        classes = num_classes or int(max(y.max(), y_eval.max())) + 1
        checks.labels_in_range(WHO, y, classes)
        checks.labels_in_range(WHO, y_eval, classes)
    return ArraySource(x, y, x_eval, y_eval, classes or None, name)


class ArraySource(PositionalSource):
    """Training and evaluation arrays, shuffled by epoch statelessly (see the module's docstring)."""

    def __init__(self, x, y, x_eval, y_eval, num_classes, name):
        self.x, self.y, self.x_eval, self.y_eval = x, y, x_eval, y_eval
        self.num_classes, self.name = num_classes, name
        self._shuffle = EpochShuffle(len(y))

    def describe(self):
        input_spec = examples.spec(self.x)
        return DatasetInfo(
            name=self.name,
            num_train_examples=len(self.y),
            num_eval_examples=len(self.y_eval),
            input_shape=examples.shapes(input_spec),
            num_classes=self.num_classes,
            input_spec=input_spec,
            label_spec=examples.spec(self.y),
        )

    def guarantees(self):
        return Guarantees(exact_resume=True, same_across_strategies=True, same_across_backends=True)

    def indices(self, start, stop, seed):
        """The training example numbers at stream positions [start, stop)."""
        return self._shuffle.indices(start, stop, seed)

    def examples_at(self, start, stop, seed):
        index = self.indices(start, stop, seed)
        return examples.take(self.x, index), self.y[index]

    def eval_chunks(self):
        yield self.x_eval, self.y_eval
