"""The Python API's own arguments, checked before anything is built or written: `train` and
`build_run`'s config, strategy, model_fn, task, actions and callbacks, and (once the model is
built) what the model and the task give on a symbolic batch. Each wrong argument is one
TypeError or ValueError line naming it."""

import os
import warnings

import keras

from kbatch.data.sources import Source
from kbatch.training.actions.action import Action
from kbatch.training.config import schema
from kbatch.training.tasks import Classification, NextToken, Task


def check_arguments(config, strategy, model_fn, task, actions=(), callbacks=(), data=None):
    """The Python API's arguments besides the config's fields, checked before anything is built
    or written: a TypeError or ValueError of one line naming the argument."""
    if isinstance(config, (str, bytes, os.PathLike)):
        raise TypeError(
            f"config={config!r} is a path: pass the config itself, e.g. kbatch.train.load_config({str(config)!r})."
        )
    if not hasattr(config, "items") and not isinstance(config, schema.Settings):
        raise TypeError(f"config: an ml_collections.ConfigDict, a dict or Settings, got {type(config).__name__}.")
    if isinstance(strategy, str):
        raise TypeError(
            f"strategy={strategy!r}: a tf.distribute.Strategy object; to choose one by name, set "
            f"config.strategy={strategy!r}."
        )
    if model_fn is not None and not callable(model_fn):
        raise TypeError(f"model_fn: a function dataset_info -> keras.Model, got {type(model_fn).__name__}.")
    if data is not None and not isinstance(data, Source):
        raise TypeError(
            f"data: a kbatch.data.Source (kbatch.data.from_arrays(x, y, eval=(x_eval, y_eval)), "
            f"from_tfds, from_tf_dataset, from_iterable), got {type(data).__name__}."
        )
    if task is not None and not isinstance(task, Task):
        raise TypeError(f"task: a kbatch.training.Task instance, got {task!r}.")
    if task is not None and task.mode not in ("max", "min"):
        raise ValueError(f"task.mode={task.mode!r}: must be 'max' (a larger {task.monitor} is better) or 'min'.")
    for name, items, kind, what in (
        ("actions", actions, Action, "kbatch.training.Action"),
        ("callbacks", callbacks, keras.callbacks.Callback, "keras.callbacks.Callback"),
    ):
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"{name}: a list of {what} objects, got one {type(items).__name__}: pass [{name[:-1]}].")
        for item in items:
            if not isinstance(item, kind):
                raise TypeError(
                    f"{name}: each must be a {what}, got {getattr(item, '__name__', type(item).__name__)}"
                    f"{' (subclass it and override its hooks)' if kind is Action else ''}."
                )


NORM_FIELDS = ("norm", "bn_momentum", "norm_groups", "virtual_batch_size")  # what kbatch's own models read


def warn_unused_norm_fields(settings, model_fn):
    """With a `model_fn`, a UserWarning naming the norm fields set away from their defaults: the
    model is the user's, so they build nothing (a moved `bn_momentum` would be mistaken for one
    that moves the model's layers)."""
    if model_fn is None:
        return
    defaults = {field.name: field.default for field in schema.FIELDS}
    unused = [
        f"config.{name}={getattr(settings, name)!r}"
        for name in NORM_FIELDS
        if getattr(settings, name) != defaults[name]
    ]
    if unused:
        warnings.warn(
            f"{', '.join(unused)}: unused with a model_fn, whose model brings its own norm layers (their momenta "
            "are taken as given at base_batch_size and moved with rescale_recipe); leave them at their defaults.",
            UserWarning,
            stacklevel=3,
        )


def check_outputs(model, task, info, from_model_fn):
    """A symbolic pass of a batch of two (shapes only: nothing is computed): a `Classification`
    model's outputs have one logit per class, a `NextToken` model's logits at each label position,
    and the task's `per_example` gives {name: [batch] values} with "loss" and its `monitor`. Found
    here, before anything is written, not as a divergence or after an epoch."""
    outputs = model(_symbolic_inputs(info), training=False)
    _check_logits(tuple(keras.ops.shape(outputs)), task, info, "model_fn's model" if from_model_fn else "the model")
    label = info.label_spec
    labels = keras.KerasTensor((2, *label.shape), dtype=label.dtype) if label else keras.KerasTensor((2,), "int32")
    values = task.per_example(labels, outputs)
    name = f"task: {type(task).__name__}.per_example"
    if not isinstance(values, dict):
        raise TypeError(
            f"{name} returned {type(values).__name__}: it must return a dict {{name: one value per "
            "example} holding 'loss'."
        )
    if "loss" not in values:
        raise ValueError(
            f"{name} returned no 'loss' (only {', '.join(map(repr, values)) or 'nothing'}): the loss "
            "to train is required."
        )
    if task.monitor not in values and task.monitor_from is None:
        raise ValueError(
            f"task.monitor={task.monitor!r}: not one of the values {type(task).__name__}.per_example "
            f"returns ({', '.join(map(repr, values))})."
        )
    for key, value in values.items():
        if tuple(keras.ops.shape(value)) != (2,):
            raise ValueError(
                f"{name}'s {key!r} has shape {tuple(keras.ops.shape(value))} for 2 examples: each value "
                "is one number per example, [batch]."
            )


def _check_logits(shape, task, info, who):
    """A `Classification` model gives one logit per class; a `NextToken` model, logits over at least
    the data's tokens at each label position: [batch, *label shape, vocabulary]."""
    said = f"{who} gives outputs of shape [batch, {', '.join(map(str, shape[1:]))}]"
    if isinstance(task, Classification) and shape != (2, info.num_classes):
        raise ValueError(f"{said}; classifying {info.name} takes [batch, {info.num_classes}]: one logit per class.")
    if isinstance(task, NextToken):
        positions = tuple(info.label_spec.shape) if info.label_spec else ()
        if shape[:-1] != (2, *positions) or (info.num_classes and shape[-1] < info.num_classes):
            vocabulary = info.num_classes or "vocabulary"
            raise ValueError(
                f"{said}; predicting the next tokens of {info.name} takes [batch, "
                f"{', '.join(map(str, (*positions, vocabulary)))}]: logits over the tokens at each "
                "position."
            )


def _symbolic_inputs(info):
    """A symbolic batch of two inputs as the source describes them (a dict for named features)."""
    spec = info.input_spec
    if spec is None:
        return keras.KerasTensor((2, *info.input_shape))
    if isinstance(spec, dict):
        return {name: keras.KerasTensor((2, *feature.shape), feature.dtype) for name, feature in spec.items()}
    return keras.KerasTensor((2, *spec.shape), spec.dtype)
