"""Model surgery: a copy of a Sequential or functional Keras model with every BatchNormalization
replaced by another norm, chosen by name, its weights and moving statistics carried over (what
Composer's ghost BN does to a PyTorch model it did not build)."""

import keras
from keras.src.models.functional import Functional

from kbatch import checks, layers
from kbatch.layers import registry

# The BatchNormalization arguments that mean the same in the layer `kbatch.layers.get` builds.
_SHARED_ARGUMENTS = ("axis", "momentum", "epsilon", "center", "scale")
# Norms whose layer takes no `center` and `scale` ("rms" has a gamma only, "none" no weights).
_WITHOUT_CENTER_SCALE = ("rms", "none")


def replace_norms(model, name, /, **kwargs):
    """A copy of the built `model` with every `keras.layers.BatchNormalization` (subclasses such as
    `GhostBatchNormalization` too, in nested Sequential and functional models too) replaced by
    `kbatch.layers.get(name, ...)`.

    The new layer keeps the old one's name, dtype policy and `trainable` flag, and takes the old
    one's `axis`, `momentum`, `epsilon`, `center` and `scale` (where it has them), then `kwargs`
    (e.g. `virtual_batch_size=` for "ghost_batch", `groups=`, or a rescaled `momentum`). It gets
    every variable of the old layer with the same name and shape: gamma, beta, moving mean and
    variance for "ghost_batch" and the other batch norms; those four for "switchable" (its
    mixture logits start at zero, equal weights); gamma and beta for "layer", "group" and
    "instance", which keep no moving statistics; gamma for "rms". Every other layer is a copy
    with the same weights. The original model is untouched. A compiled model's copy is compiled
    from its compile config (a fresh optimizer, as `keras.models.clone_model` does).

    A subclassed model, or a custom layer holding a BatchNormalization, is refused with a
    one-line ValueError: its layers are built in Python code that cannot be rewritten.
    """
    checks.choice("name", name, registry.NAMES)
    if not isinstance(model, (keras.Sequential, Functional)):
        raise ValueError(_cannot_rewrite(model))
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built: give it a keras.Input or call it on a batch first.")
    copied, replaced = [], []

    def clone(layer):
        if _is_batch_norm(layer):
            replaced.append((layer, _replacement(layer, name, kwargs)))
            return replaced[-1][1]
        if any(_is_batch_norm(inner) for inner in layer._flatten_layers(include_self=False)):
            raise ValueError(_cannot_rewrite(layer))
        copied.append((layer, layer.__class__.from_config(layer.get_config())))
        return copied[-1][1]

    new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in copied:
        new.set_weights(old.get_weights())
    for old, new in replaced:
        _carry_shared_variables(old, new)
    return new_model


def _is_batch_norm(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


def _cannot_rewrite(layer):
    return (
        f"replace_norms cannot rewrite {layer.name!r} ({type(layer).__name__}): a subclassed model or "
        f"custom layer builds its layers in Python code that cannot be rewritten; build its norms with "
        f"kbatch.layers.get(name, ...) in that code, or write it as a Sequential or functional model."
    )


def _replacement(batch_norm, name, kwargs):
    """The layer `kbatch.layers.get(name)` builds with `batch_norm`'s shared arguments and `kwargs`."""
    config = batch_norm.get_config()
    shared = {key: config[key] for key in _SHARED_ARGUMENTS}
    if name in _WITHOUT_CENTER_SCALE:
        del shared["center"], shared["scale"]
    identity = {"name": batch_norm.name, "dtype": batch_norm.dtype_policy, "trainable": batch_norm.trainable}
    return layers.get(name, **{**shared, **identity, **kwargs})


def _carry_shared_variables(old, new):
    """Each variable of `old` that `new` has too, by name and shape, copied into `new`."""
    by_name = {variable.name: variable for variable in old.weights}
    for variable in new.weights:
        source = by_name.get(variable.name)
        if source is not None and tuple(source.shape) == tuple(variable.shape):
            # A copy: on JAX the two variables would share one buffer, which a jitted step may delete.
            variable.assign(keras.ops.convert_to_numpy(source))
