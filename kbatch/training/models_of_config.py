"""The config's model and optimizer: `config.model` built with the run's norm (a contrastive
task's encoder and projection head), or a user's `model_fn`, its `freeze` weights frozen, and the
optimizer at the first phase's recipe."""

import keras

from kbatch import models, optimizers
from kbatch.training.config import fine_tuning, recipe


def build_model_and_optimizer(run_recipe, info, batches, model_fn, source=None):
    """The model (mapping inputs to the task's outputs, its `freeze` weights frozen) and its
    optimizer, at the first phase's recipe; `source` is the `init_from` model (for its weights' keys)."""
    settings = run_recipe.settings
    if model_fn is not None:
        model = model_fn(info)
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"model_fn returned {type(model).__name__}: it must return a keras.Model mapping inputs "
                "to the task's outputs (a missing return?)."
            )
    else:
        model = kbatch_model(run_recipe, info.input_shape, info.num_classes)
    if settings.freeze is not None:
        fine_tuning.freeze(model, settings.freeze, fine_tuning.weight_keys(source) if source is not None else ())
    optimizer = optimizers.build(
        run_recipe.optimizer,
        run_recipe.learning_rate_schedule(info.num_train_examples, batches),
        **run_recipe.optimizer_settings(batches.batch_sizes[0]),
    )
    optimizers.apply_exclusions(optimizer, model)
    if settings.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return model, optimizer


def kbatch_model(run_recipe, input_shape, num_classes):
    """The config's model (`settings.model`, with the norm arguments of `run_recipe`, a
    `recipe.RunRecipe`); a `norm_groups` that does not divide a normalized layer's channels is
    named as the config field, not as the layer's argument `groups`."""
    settings = run_recipe.settings
    if settings.task == "next_token" and settings.model not in models.SEQUENCE_MODELS:
        raise ValueError(
            f"config.task='next_token' needs a prediction per position, and config.model="
            f"{settings.model!r} gives one per example: use {', '.join(models.SEQUENCE_MODELS)} "
            "(or a model_fn of your own)."
        )
    if settings.task == "contrastive":  # the encoder takes one view; the model, two
        if len(input_shape) < 2 or input_shape[0] != 2:
            raise ValueError(
                f"config.task='contrastive' takes two views of each example, inputs [n, 2, ...]; the data's "
                f"examples have shape {tuple(input_shape)} (kbatch.data.two_views makes two)."
            )
        encoder = _named_model(run_recipe, input_shape[1:], num_classes)
        return models.contrastive_model(encoder, settings.projection_dims)
    return _named_model(run_recipe, input_shape, num_classes)


def _named_model(run_recipe, input_shape, num_classes):
    """`settings.model` built for `input_shape` and `num_classes`, its size fields named on error."""
    settings = run_recipe.settings
    sizes = {arg: getattr(settings, field) for arg, field in MODEL_SIZES.items() if getattr(settings, field)}
    try:
        return models.get(
            settings.model,
            num_classes=num_classes,
            input_shape=input_shape,
            norm=settings.norm,
            norm_kwargs=run_recipe.norm_kwargs(),
            vocabulary_size=settings.text_vocabulary_size,
            **sizes,
        )
    except ValueError as error:
        said, _, must = str(error).partition(": must be ")
        if said.startswith("num_heads="):  # the heads the model was given (its own default if the field is None)
            raise ValueError(
                f"config.model_heads={said.partition('=')[2]}: must be {must[:-1]} (config.model_width)."
            ) from None
        if settings.norm != "group" or not str(error).startswith("groups="):
            raise
        raise ValueError(
            f"config.norm_groups={settings.norm_groups} (norm='group' in {settings.model}): must be {must}"
        ) from None


# transformer_lm's size arguments -> the config fields that set them.
MODEL_SIZES = {"width": "model_width", "num_layers": "model_layers", "num_heads": "model_heads"}


def check_model(settings):
    """Build the config's model as `build_run` does, with no data, strategy or files (what
    `kbatch-train --check` runs): a ValueError naming the field when it cannot be built. The input
    is a stand-in of the model's kind (a sequence, token ids or an image): no channel count depends on it."""
    stand_in = {"mnist1d_cnn": (40, 1), "text_classifier": (settings.text_sequence_length,), "transformer_lm": (128,)}
    shape = stand_in.get(settings.model, (32, 32, 3))
    shape = (2, *shape) if settings.task == "contrastive" else shape
    kbatch_model(recipe.RunRecipe.from_settings(settings), shape, num_classes=10)
