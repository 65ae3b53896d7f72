"""Which variables an optimizer leaves out of weight decay (and LARS out of layer adaptation).

A pattern is a substring or a regular expression. It is matched against a variable's *keys*: its
path and every '/'-suffix of it, the short name last (`sequential/head/kernel`, `head/kernel`,
`kernel`); the variable matches when the pattern occurs in, or `re.search` finds it in, one key.

Why the suffixes: Keras names a variable by the scopes it was built under, and
`keras.models.load_model` rebuilds a model without the scopes of its models (Keras 3.15, both
backends): `sequential/head/kernel` (Sequential), `net/head/kernel` (subclassed) and
`trunk/body/kernel` (a model nested in another) all load as `head/kernel` and `body/kernel`; a
functional model's paths carry no model name and do not change. The path after a load is a suffix
of the path before, so a pattern that names layers (`head`, `^head/kernel$`, `^body/`) selects the
same variables before and after a save. A pattern that names a *model* (`sequential/`, `^trunk/`)
matches its variables only until the model is saved and loaded: name the layers instead.

Keras's own `exclude_from_weight_decay(var_names=...)` searches the name of whatever variable
object reaches its check: the short name `bias` on JAX (a layer's name then silently matches
nothing), TF's `dense_1/bias:0` on TensorFlow (an end-anchored pattern such as `dense_1/bias$`
then silently matches nothing). `apply_exclusions` hands Keras the matching variables themselves
instead.

Biases and normalization parameters are left out of weight decay by default (Goyal et al. 2017,
section 5.1; You et al. 2017 for LARS): `DEFAULT_EXCLUDE` matches the trainable variables of every
normalization layer in `kbatch.layers` (Keras's BatchNormalization, LayerNormalization and
GroupNormalization, ghost BN, switchable norm) and every layer's `bias`.
"""

import re

import keras

from kbatch import checks
from kbatch.optimizers import loss_scale


def short_name(name):
    """A pattern for the variables called `name`: `bias` matches `bias`, `dense/bias` and TF's
    `dense/bias:0` (what Keras's own check sees), not `unbiased/kernel` or `bias_block/kernel`."""
    return rf"(^|/){re.escape(name)}(:\d+)?$"


DEFAULT_EXCLUDE = tuple(
    short_name(name)
    # mean_logits, variance_logits: SwitchableNormalization's mixing weights.
    for name in ("bias", "gamma", "beta", "mean_logits", "variance_logits")
)

# Set on Keras optimizers by `kbatch.optimizers.build`, read by `apply_exclusions`.
PATTERNS_ATTRIBUTE = "_kbatch_exclude_from_weight_decay"


def check_patterns(patterns, argument):
    """`patterns` as a tuple of strings (None -> (), one string -> one pattern); a ValueError
    naming `argument` if one is not a string or not a valid regular expression."""
    if patterns is None:
        return ()
    given = patterns
    if isinstance(patterns, str):
        patterns = (patterns,)
    for pattern in patterns:
        if not isinstance(pattern, str):
            checks.fail(
                argument,
                given,
                "a list of variable-name substrings or regular expressions; "
                f"{pattern!r} ({type(pattern).__name__}) is not a string",
            )
        problem = _regex_error(pattern)
        if problem:
            checks.fail(
                argument,
                given,
                f"valid regular expressions; {pattern!r} is not ({problem}): "
                f"escape special characters, e.g. {re.escape(pattern)!r}",
            )
    return tuple(patterns)


def _regex_error(pattern):
    """What `re` finds wrong with `pattern`, or None if it compiles."""
    try:
        re.compile(pattern)
    except re.error as error:
        return str(error)
    return None


def variable_path(variable):
    """The path of a Keras variable (`dense/kernel`), or the name of a `tf.Variable` without `:0`."""
    return getattr(variable, "path", None) or str(variable.name).split(":")[0]


def variable_keys(variable):
    """What a pattern is matched against: the path and every '/'-suffix of it, longest first."""
    parts = variable_path(variable).split("/")
    return ["/".join(parts[start:]) for start in range(len(parts))]


def matches(patterns, variable):
    """Whether any pattern occurs in, or is found by `re.search` in, one of the variable's keys."""
    keys = variable_keys(variable)
    return any(pattern in key or re.search(pattern, key) is not None for pattern in patterns for key in keys)


def select(patterns, variables):
    """The variables that match one of `patterns`."""
    return [variable for variable in variables if matches(patterns, variable)]


def _variables_of(model_or_variables):
    if isinstance(model_or_variables, keras.layers.Layer):
        return model_or_variables.trainable_variables
    return list(model_or_variables)


def apply_exclusions(optimizer, model_or_variables, exclude_from_weight_decay=None):
    """Make `optimizer` skip weight decay on the variables the patterns match by *path* (see above).

    Call it once the model is built and before the first training step (what to decay is decided
    when the step is traced). `exclude_from_weight_decay` defaults to the patterns
    `kbatch.optimizers.build` gave a Keras optimizer (else `DEFAULT_EXCLUDE`); LARS matches its
    own patterns the same way already, so it is only given patterns passed here (they then also
    leave adaptation unless LARS has `exclude_from_layer_adaptation`). A `LossScaleOptimizer` is
    unwrapped. Keras's optimizers do not save their exclusions: call it again after
    `keras.models.load_model`. Returns the paths of the variables excluded from weight decay.
    """
    optimizer = loss_scale.unwrap(optimizer)
    variables = _variables_of(model_or_variables)
    is_lars = hasattr(optimizer, "weight_decay_excluded")
    if exclude_from_weight_decay is None and is_lars:
        patterns = None
    elif exclude_from_weight_decay is None:
        patterns = getattr(optimizer, PATTERNS_ATTRIBUTE, DEFAULT_EXCLUDE)
    else:
        patterns = check_patterns(exclude_from_weight_decay, "exclude_from_weight_decay")
    if patterns is not None:
        # Keras replaces both lists on every call: give the short-name patterns again too.
        optimizer.exclude_from_weight_decay(
            var_list=select(patterns, variables), var_names=None if is_lars else list(patterns) or None
        )
    if is_lars:
        return [variable_path(v) for v in variables if optimizer.weight_decay_excluded(v)]
    return [variable_path(v) for v in select(patterns, variables)]
