"""Fine-tuning: a built model starts from another model's weights (`config.init_from`, all but
those `config.init_exclude` matches) and keeps those `config.freeze` matches as they are.

A weight is named by its key: its layer's path in the model's layer tree, then its own name
(`conv1/kernel`, `body/dense_1/bias`). Keras's own `variable.path` is not stable across a save:
a `Sequential` model's weights are `sequential/dense/kernel` when it is built and `dense/kernel`
once `keras.models.load_model` has read it back (a nested model loses its prefix the same way).
Weights are paired in order, as Keras's `load_weights` pairs them, so a layer Keras numbered
(`dense_1` in the saved model, `dense_7` in a process that built other models first) still finds
its partner; a pattern matches a weight when `re.search` finds it in the key the weight has here
or in the source model.

Freezing sets `variable.trainable = False`, so the optimizer never sees the weight (its slots are
built for the trainable variables) on every backend, the gradient transforms never see it, and
the checkpoints hold it as a model weight. A layer whose every weight is frozen is set
`trainable=False` as a whole: a frozen BatchNormalization then normalizes with its moving
statistics and keeps them, as in Keras's transfer-learning guide.
"""

import re

import keras
import numpy as np


def weight_keys(model):
    """[key of each of `model.weights`], in that order: the layer tree's path, then the weight's
    name inside its layer (a sublayer's weights keep the sublayer: `attention/query/kernel`)."""
    keys = {}
    _walk(model, "", keys)
    return [keys.get(id(v), v.path) for v in model.weights]


def _walk(layer, prefix, keys):
    for sublayer in layer.layers if isinstance(layer, keras.Model) else ():
        path = f"{prefix}{sublayer.name}"
        if isinstance(sublayer, keras.Model):
            _walk(sublayer, f"{path}/", keys)
            continue
        for variable in sublayer.weights:
            keys.setdefault(id(variable), "/".join([path, *_inside(variable, sublayer)]))


def _inside(variable, layer):
    """The weight's path inside `layer`: what follows the layer's name in its Keras path."""
    parts = variable.path.split("/")
    if layer.name not in parts:
        return [variable.name]
    return parts[len(parts) - parts[::-1].index(layer.name) :]


def _matching(pattern, keys, source_keys=()):
    """The indices of the weights whose key (or key in the source model) `pattern` finds."""
    compiled = re.compile(pattern)
    return [
        i
        for i, key in enumerate(keys)
        if compiled.search(key) or (i < len(source_keys) and compiled.search(source_keys[i]))
    ]


def _refuse_no_match(field, pattern, keys):
    shown = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
    raise ValueError(f"config.{field}={pattern!r}: matches none of the model's weights (a typo?); they are {shown}.")


def freeze(model, pattern, source_keys=()):
    """Set the weights `pattern` matches non-trainable (a layer all of whose weights match: the
    layer); returns their keys. A ValueError in one line when it matches none, or every one."""
    keys = weight_keys(model)
    frozen = _matching(pattern, keys, source_keys)
    if not frozen:
        _refuse_no_match("freeze", pattern, keys)
    trainable = [i for i, v in enumerate(model.weights) if v.trainable]
    if set(trainable) <= set(frozen):
        raise ValueError(
            f"config.freeze={pattern!r}: freezes every trainable weight of the model, so nothing would "
            "train; match only the layers to keep (e.g. '^conv')."
        )
    chosen = {id(model.weights[i]) for i in frozen}
    for variable in (model.weights[i] for i in frozen):
        variable.trainable = False
    for layer in model._flatten_layers(include_self=False):
        if layer.weights and all(id(v) in chosen for v in layer.weights):
            layer.trainable = False
    return [keys[i] for i in frozen]


def copy_weights(source, model, exclude=None):
    """Assign `source`'s weights to `model`'s, paired in order, all but those `exclude` matches;
    returns the copied keys. A ValueError in one line naming the first weight whose shape differs
    (or that has no partner), or an `exclude` that matches nothing."""
    keys, source_keys, where = weight_keys(model), weight_keys(source), "config.init_from"
    skipped = set(_matching(exclude, keys, source_keys)) if exclude is not None else set()
    if exclude is not None and not skipped:
        _refuse_no_match("init_exclude", exclude, keys)
    pairs = []
    for i, (key, variable) in enumerate(zip(keys, model.weights)):
        if i in skipped:
            continue
        if i >= len(source.weights):
            raise ValueError(
                f"{where}: holds {len(source.weights)} weights, and this model's weight {i + 1}, {key}, "
                "has none to start from: leave it out with config.init_exclude."
            )
        theirs, mine = tuple(source.weights[i].shape), tuple(variable.shape)
        if theirs != mine:
            raise ValueError(
                f"{where}: weight {key} has shape {list(mine)} here and {list(theirs)} as "
                f"{source_keys[i]} there: leave it out with config.init_exclude, or build the same model."
            )
        pairs.append((variable, source.weights[i]))
    for variable, saved in pairs:  # nothing is assigned until every pair is checked
        variable.assign(np.asarray(saved, dtype=variable.dtype))
    return [keys[i] for i in range(len(keys)) if i not in skipped]
