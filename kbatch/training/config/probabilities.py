"""Refusing a model that ends in probabilities where the task takes logits.

A task that takes logits (`Task.from_logits`: `Classification`, `NextToken`) applies the softmax
in its loss. Given a model ending in a softmax, it would apply a second one and silently optimize
another loss, so the run is refused before anything is written, with the layer and the fix named.
"""

import keras
import numpy as np

PROBABILITY_ACTIVATIONS = (("softmax", keras.activations.softmax), ("sigmoid", keras.activations.sigmoid))
# Rows that sum to 1 within this (bfloat16 outputs keep about 3 digits) are taken as probabilities.
SUM_TOLERANCE = 1e-2


def check_logits_not_probabilities(model, task, probe_inputs, who):
    """A ValueError of one line if `task` takes logits (`task.from_logits`) and `model` gives probabilities.

    Detected from the structure of a Sequential or functional model: an output made by a layer
    whose `activation` is softmax or sigmoid (`Dense(10, activation="softmax")`,
    `Activation("sigmoid")`), a `Softmax` layer, a `keras.ops.softmax`/`sigmoid` on the output, or
    the same at the end of a nested Sequential or functional model. Detected numerically for a
    subclassed model, whose structure is hidden: every output row of `probe_inputs()` (a few
    examples) non-negative and summing to 1. Not detected: a layer after the activation that keeps
    probabilities (a `Dropout`, a `Reshape`), a sigmoid inside a subclassed model (its rows need not
    sum to 1), or probabilities computed by a custom layer of a functional model.
    """
    if not getattr(task, "from_logits", False):
        return
    fix = (
        f"kbatch's {type(task).__name__} takes logits and applies the softmax in its loss: remove the final "
        "activation (Dense(10) gives logits), or pass a task of your own that takes probabilities."
    )
    outputs = getattr(model, "outputs", None)
    if outputs is None:
        if _rows_are_probabilities(model(probe_inputs(), training=False)):
            raise ValueError(
                f"{who} gives probabilities (each output row is non-negative and sums to 1 on the first "
                f"evaluation examples); {fix}"
            )
        return
    found = _probability_output(model)
    if found is not None:
        layer, activation = found
        raise ValueError(f"{who} ends in a {activation}: its layer {layer.name!r} ({type(layer).__name__}); {fix}")


def _probability_output(model):
    """(operation, "softmax" | "sigmoid") for the first output of a Sequential or functional
    `model` that an operation turning logits into probabilities makes, else None."""
    for output in keras.tree.flatten(model.outputs):
        operation = output._keras_history.operation
        if getattr(operation, "outputs", None) is not None and operation is not model:
            found = _probability_output(operation)  # a nested Sequential or functional model
        else:
            found = _probability_operation(operation)
        if found is not None:
            return found
    return None


def _probability_operation(operation):
    if isinstance(operation, keras.layers.Softmax):
        return operation, "softmax"
    for name, activation in PROBABILITY_ACTIVATIONS:
        if getattr(operation, "activation", None) is activation:
            return operation, name
    name = type(operation).__name__.lower()  # keras.ops.softmax / sigmoid applied in a functional model
    if not isinstance(operation, keras.layers.Layer) and name in ("softmax", "sigmoid"):
        return operation, name
    return None


def _rows_are_probabilities(outputs):
    """Whether every row (over the last axis) of `outputs` is non-negative and sums to 1."""
    values = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(outputs, "float32")))
    return bool(np.all(values >= 0) and np.allclose(values.sum(axis=-1), 1.0, rtol=0, atol=SUM_TOLERANCE))
