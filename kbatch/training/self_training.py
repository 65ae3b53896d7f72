"""Self-training from a config (`kbatch.data.sources.pseudo_labels`): `labelled_examples` alone
trains on the first N training examples only (a teacher); with `teacher` (a finished run's folder
or a .keras file) the teacher labels the rest, and the examples it gives a class probability of
at least `pseudo_label_threshold` join the labelled ones with that class.

The square-root rule is the documented scaling here (`configs/self_training_mnist1d.py`): while
the pseudo-labels are noisy, what should stay constant across batch sizes is the noise of each
update, lr x sqrt(tr Sigma / B), which gives lr ~ sqrt(B) (Krizhevsky 2014; Hoffer et al. 2017),
not the linear rule's constant lr / B. docs/results/self_training.md measures both.
"""

import keras
import numpy as np

from kbatch.data.sources import pseudo_labels
from kbatch.training.run_files import init_from


def source_of(settings, source, say=print):
    """`source` as the config's self-training asks: unchanged, its labelled part, or that part and
    the teacher's confident pseudo-labels (a line saying how many, and how many are right)."""
    if settings.teacher is None:
        if not settings.labelled_examples:
            return source
        return pseudo_labels.labelled_only(source, settings.labelled_examples)
    teacher = init_from.load(settings.teacher, "teacher")
    check_teacher(teacher, source.describe(), settings.teacher)
    data, report = pseudo_labels.pseudo_labelled(
        source, settings.labelled_examples, probabilities_of(teacher), settings.pseudo_label_threshold
    )
    say(
        f"kbatch: self-training: {report.labelled:,} labelled examples and {report.kept:,} of {report.unlabelled:,} "
        f"labelled by the teacher (class probability >= {settings.pseudo_label_threshold:g}; "
        f"{100 * report.noise:.1f}% of them differ from the data set's labels)",
        flush=True,
    )
    return data


def check_teacher(teacher, info, path):
    """A ValueError in one line when the teacher's classes or inputs are not the data set's."""
    classes = teacher.output_shape[-1]
    if classes != info.num_classes:
        raise ValueError(
            f"config.teacher={path!r}: the teacher predicts {classes} classes, the data set has {info.num_classes}: "
            "a teacher must be trained on the same classes."
        )
    if tuple(teacher.input_shape[1:]) != tuple(info.input_shape):
        raise ValueError(
            f"config.teacher={path!r}: the teacher takes inputs of shape {tuple(teacher.input_shape[1:])}, the data "
            f"set's are {tuple(info.input_shape)}."
        )


def probabilities_of(teacher):
    """`predict(x) -> [n, classes]` class probabilities of the teacher (its logits' softmax; a
    teacher that already ends in a softmax is taken as it is)."""

    def predict(x):
        outputs = np.asarray(keras.ops.convert_to_numpy(teacher(x, training=False)), np.float64)
        is_probability = np.all(outputs >= 0) and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-4)
        if is_probability:
            return outputs
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    return predict
