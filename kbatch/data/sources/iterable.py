"""A source over a Python iterable of NumPy batches `(x, y)`: the input a grain or NumPy pipeline
gives, for the JAX backend (and, through `tf_adapter`, the TensorFlow one).

The source cannot say which example a position holds; it re-cuts the batches it is given into
global batches in order. Given a function that returns a fresh iterable, the same each call,
global batch t is rows [tB, (t + 1)B) of the concatenated passes and a resumed run re-creates
it and skips the rows already seen: every guarantee holds. Given a one-shot iterable, a resumed
run takes the rows where the iterable is: none holds.
"""

import itertools

from kbatch.data.names import DatasetInfo
from kbatch.data.sources import checks, examples
from kbatch.data.sources.base import Guarantees, Source

WHO = "kbatch.data.from_iterable"


def from_iterable(train, eval, num_train_examples, num_classes=None, name="iterable"):  # noqa: A002
    """A `Source` of `train` (an iterable of `(x, y)` NumPy batches, or a function returning a
    fresh one each call) evaluated on `eval` (a list of batches, or a function returning an
    iterable of them); `num_train_examples` is one epoch (the schedules count epochs)."""
    checks.eval_given(WHO, eval)
    if not (callable(eval) or iter(eval) is not eval):
        raise ValueError(
            f"{WHO}: eval is a one-shot iterator; it is read at every evaluation: give a list of "
            "batches or a function that returns a fresh iterable."
        )
    if not isinstance(num_train_examples, int) or num_train_examples < 1:
        raise ValueError(
            f"{WHO}: num_train_examples={num_train_examples!r}: must be a positive integer (the examples of one epoch)."
        )
    return IterableSource(train, eval, num_train_examples, num_classes, name)


class IterableSource(Source):
    """Batches from a user's iterable, re-cut to global batches (see the module's docstring)."""

    def __init__(self, train, eval_data, num_train_examples, num_classes, name):
        self.recreatable = callable(train)
        self._eval, self._spec_batch = eval_data, None
        self.num_train_examples, self.num_classes, self.name = num_train_examples, num_classes, name
        first = next(iter(train() if self.recreatable else train), None)
        if first is None:
            raise ValueError(f"{WHO}: the training iterable is empty: give at least one batch (x, y).")
        self._train = train if self.recreatable else itertools.chain([first], train)
        self._checked(first, "the first training batch")

    def _fresh(self):
        """The training batches from the start (re-created) or from where the one-shot iterable is."""
        return self._train() if self.recreatable else self._train

    def _checked(self, batch, what):
        x, y = examples.as_arrays(batch[0]), examples.as_arrays(batch[1])
        checks.same_length(WHO, x, y, "")
        if self._spec_batch is not None:
            checks.same_features(WHO, self._spec_batch[0], x, what)
        if self.num_classes:
            checks.labels_in_range(WHO, y, self.num_classes)
        self._spec_batch = self._spec_batch or (x, y)
        return x, y

    def describe(self):
        x, y = self._spec_batch
        input_spec = examples.spec(x)
        num_eval = sum(len(batch[1]) for batch in self.eval_chunks())
        return DatasetInfo(
            name=self.name,
            num_train_examples=self.num_train_examples,
            num_eval_examples=num_eval,
            input_shape=examples.shapes(input_spec),
            num_classes=self.num_classes,
            input_spec=input_spec,
            label_spec=examples.spec(y),
        )

    def guarantees(self):
        return Guarantees(
            exact_resume=self.recreatable,
            same_across_strategies=self.recreatable,
            same_across_backends=self.recreatable,
        )

    def _passes(self):
        """The training batches, checked: pass after pass where re-creatable, else until they run out."""
        while True:
            for batch in self._fresh():
                yield self._checked(batch, "a training batch")
            if not self.recreatable:
                raise ValueError(
                    f"{WHO}: the training iterable ran out: give an endless one, or a function that "
                    "returns a fresh iterable each call."
                )

    def train_batches(self, global_batch_size, seed, start_example=0):
        del seed  # the user's pipeline shuffles
        rows = examples.skip(self._passes(), start_example) if self.recreatable else self._passes()
        return examples.recut(rows, global_batch_size)

    def eval_chunks(self):
        for batch in self._eval() if callable(self._eval) else self._eval:
            yield self._checked(batch, "an evaluation batch")
