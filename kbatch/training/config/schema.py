"""The config fields: one table of (name, default, check, doc) that every part reads.

`defaults()` is the config every experiment file starts from (`configs/base.py`); `resolve(config)`
checks every field and the fields against each other, fills in the defaults, and returns the
frozen `Settings` the run is built from (below that point no module reads a config); the
README's field table is `markdown_table()` (tests/test_schema.py checks the two are the same).
A bad value is one line naming the field: `config.batch_size=0: must be a positive integer.`
Pure Python: nothing here imports TensorFlow.

  python -m kbatch.training.config.schema      # prints the README's field table
"""

import dataclasses
import difflib
import os
import re

import ml_collections
from ml_collections.config_dict import placeholder

from kbatch import checks, layers, models, optimizers, runtime, scaling
from kbatch.data.names import check_dataset
from kbatch.training.config import cross_checks

DECAYS = ("cosine", "linear", "polynomial", "step", "constant")
MIXED_PRECISION = (None, "float32", "mixed_float16", "mixed_bfloat16")
BACKENDS = ("tensorflow", "jax", "auto")
TASKS = ("classification", "next_token", "contrastive")


@dataclasses.dataclass(frozen=True)
class Field:
    """One config field. `check(name, value)` returns the value as the run uses it (or raises
    the one-line ValueError); `kind` is the type a None default is a placeholder of, so that
    `--config.FIELD=VALUE` can set it."""

    name: str
    default: object
    check: object
    doc: str
    kind: type = None


def _choice(allowed):
    return lambda name, value: checks.choice(name, value, allowed)


def _real(**bounds):
    return lambda name, value: checks.real(name, value, **bounds)


def _backend(name, value):
    """`auto` is the backend Keras runs on (`kbatch.runtime`: KERAS_BACKEND=auto picks JAX on a TPU)."""
    value = checks.choice(name, value, BACKENDS)
    return runtime.keras_backend() if value == "auto" else value


def _optional_positive_int(name, value):
    return None if value is None else checks.positive_int(name, value)


def _non_negative_int(name, value):
    return checks.integer(name, value, low=0)


def _lr_scaling(name, value):
    """A rule name or an exponent; a number given on the command line arrives as a string."""
    if value == "staleness":
        return value
    if isinstance(value, str) and value not in scaling.RULES:
        try:
            value = float(value)
        except ValueError:
            pass
    try:
        scaling.scaling_exponent(value)
    except ValueError:
        checks.fail(name, value, "one of 'linear', 'sqrt', 'none', 'staleness', or a real exponent alpha")
    return value if isinstance(value, str) else float(value)


def _epochs(name, value):
    """A tuple of positive epochs (checked against num_epochs and sorted in `cross_checks`)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        checks.fail(name, value, "a tuple of epochs")
    return tuple(checks.real(f"{name}[{i}]", e, low=0, low_open=True) for i, e in enumerate(value))


def _batch_sizes(name, value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        checks.fail(name, value, "a tuple of positive integers")
    return tuple(checks.positive_int(f"{name}[{i}]", b) for i, b in enumerate(value))


def _update_time_model(name, value):
    """() (time the updates), or (T0 seconds, k seconds, gamma) of T_update(B) = T0 + k B**gamma."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) not in (0, 3):
        checks.fail(name, value, "() to time the updates, or (T0, k, gamma): T_update(B) = T0 + k x B**gamma seconds")
    if not value:
        return ()
    t0, k = (checks.real(f"{name}[{i}]", v, low=0) for i, v in enumerate(value[:2]))
    return (t0, k, checks.real(f"{name}[2]", value[2], low=0, low_open=True))


def _projection_dims(name, value):
    dims = _batch_sizes(name, value)
    if not dims:
        checks.fail(name, value, "at least one layer width")
    return dims


def _patterns(name, value):
    return None if value is None else optimizers.check_patterns(value, name)


def _regex(name, value):
    """None, or a string `re` compiles (matched with `re.search` on weight keys: `fine_tuning`)."""
    if value is None:
        return None
    checks.text(name, value)
    try:
        re.compile(value)
    except re.error as error:
        checks.fail(name, value, f"a regular expression ({error}), e.g. {re.escape(value)!r}")
    return value


def _target(name, value):
    return checks.real(name, value, low=0, high=1, low_open=True, allow_none=True)


def _text_or_none(name, value):
    return checks.text(name, value, allow_none=True)


def _folder(name, value):
    """A path, or None; a trailing slash and `a/./b` are the same folder as `a/b`."""
    return None if value is None else os.path.normpath(checks.text(name, value))


STRATEGIES = ("auto", "tpu", "tpu:ADDRESS", "mirrored", "multiworker", "parameter_server", "one_device", "cpu:N")


def _strategy(name, value):
    ok = isinstance(value, str) and (
        value in ("auto", "tpu", "mirrored", "multiworker", "parameter_server", "one_device")
        or value.startswith("tpu:")
        or (value.startswith("cpu:") and value[4:].isdigit() and int(value[4:]) >= 1)
    )
    if not ok:
        checks.fail(name, value, "one of " + ", ".join(STRATEGIES))
    return value


_F = Field
FIELDS = (
    # Data and model.
    _F(
        "dataset",
        "mnist1d/large",
        check_dataset,
        "TFDS name: `mnist1d/large`, `mnist1d/original`, `mnist`, "
        "`cifar10`, `cifar100`, `imagenet2012`, `pystdlib_bytes/seq128` (text, docs/text.md); `tfds:NAME` for any "
        "TFDS data set; `python:MODULE:FUNCTION` for the `kbatch.data.Source` that FUNCTION() returns (docs/data.md)",
    ),
    _F("data_dir", None, _text_or_none, "TFDS data folder (None: TFDS's default)", str),
    _F(
        "text_vocabulary_size",
        20000,
        checks.positive_int,
        "a `tfds:NAME` text set's tokenizer keeps this many "
        "tokens (padding and out-of-vocabulary included); the embedding rows of `text_classifier`",
    ),
    _F(
        "text_sequence_length",
        256,
        checks.positive_int,
        "a `tfds:NAME` text set's token ids per example (cut or padded with 0)",
    ),
    _F(
        "model",
        "mnist1d_cnn",
        _choice(models.NAMES),
        "`mnist1d_cnn`, `resnet20`, `resnet32`, `resnet56` "
        "(CIFAR, He et al. 2016), `resnet50`, `transformer_lm`, `text_classifier` (docs/text.md)",
    ),
    _F("model_width", None, _optional_positive_int, "`transformer_lm`: the embedding width (None: its own, 128)", int),
    _F(
        "model_layers", None, _optional_positive_int, "`transformer_lm`: the Transformer blocks (None: its own, 4)", int
    ),
    _F(
        "model_heads",
        None,
        _optional_positive_int,
        "`transformer_lm`: attention heads, a divisor of the width (None: its own, 4)",
        int,
    ),
    _F(
        "task",
        "classification",
        _choice(TASKS),
        "what the model is trained for: `classification` (cross-entropy, "
        "accuracy), `next_token` (a language model: a label per position, padding masked, perplexity) "
        "or `contrastive` (SimCLR: two augmented views, NT-Xent, a linear probe)",
    ),
    _F("temperature", 0.5, _real(low=0, low_open=True), "`task=contrastive`: NT-Xent's temperature"),
    _F(
        "projection_dims",
        (128, 64),
        _projection_dims,
        "`task=contrastive`: the projection head's layer widths (the last one linear)",
        tuple,
    ),
    _F(
        "probe_examples",
        5000,
        checks.positive_int,
        "`task=contrastive`: labelled training examples the linear probe is fitted on at each evaluation",
    ),
    _F(
        "negatives",
        "global",
        _choice(("global", "replica")),
        "`task=contrastive`: `global` (every view of the global batch, gathered from every replica) or "
        "`replica` (each replica's own examples only: the comparison the gather is measured against)",
    ),
    _F("norm", "batch", _choice(layers.NAMES), "any `kbatch.layers.get` name"),
    _F(
        "bn_momentum",
        0.9,
        _real(low=0, high=1),
        "moving-average momentum of the norms that keep moving statistics, at `base_batch_size`",
    ),
    _F("norm_groups", 8, checks.positive_int, "groups of `norm=group`"),
    _F(
        "virtual_batch_size",
        None,
        _optional_positive_int,
        "examples per ghost batch (`norm=ghost_batch`); it must divide each replica's micro-batch",
        int,
    ),
    # Fine-tuning (docs/training.md): the run's own recipe at its own batch, from another run's weights.
    _F(
        "init_from",
        None,
        _folder,
        "start from this model's weights: a `.keras` file or a finished run's folder "
        "(its `model.keras`); weights paired in order, shapes checked; a resumed run starts from its checkpoint",
        str,
    ),
    # Self-training (docs/training.md): a labelled subset, and a teacher's confident pseudo-labels for the rest.
    _F(
        "labelled_examples",
        0,
        _non_negative_int,
        "self-training: the training examples that keep their labels (0: all); without `teacher` the run "
        "trains on them alone",
    ),
    _F(
        "teacher",
        None,
        _folder,
        "self-training: a finished run's folder or a `.keras` file whose predictions label the examples "
        "past `labelled_examples`",
        str,
    ),
    _F(
        "pseudo_label_threshold",
        0.9,
        _real(low=0, high=1),
        "self-training: the teacher's class probability an example needs to be kept with that class",
    ),
    _F(
        "init_exclude",
        None,
        _regex,
        "`init_from`: a regular expression of the weights left at their initial values "
        "(e.g. the head: `^logits/`), searched in each weight's layer path and name",
        str,
    ),
    _F(
        "freeze",
        None,
        _regex,
        "a regular expression of the weights not trained (e.g. `^conv`); a layer whose "
        "weights all match is frozen whole (BN keeps its moving statistics)",
        str,
    ),
    # The recipe, given at base_batch_size.
    _F("batch_size", 256, checks.positive_int, "the **global** batch: micro-batch x replicas x `accumulation_steps`"),
    _F("base_batch_size", 128, checks.positive_int, "the batch the recipe is given at"),
    _F("base_learning_rate", 0.05, _real(low=0), "the learning rate at `base_batch_size`"),
    _F(
        "lr_scaling",
        "linear",
        _lr_scaling,
        "how the LR moves with the batch: `linear`, `sqrt`, `none`, "
        "an exponent alpha (lr x (B/B0)^alpha), or `staleness`: linear, lowered for `staleness` (docs/schedules.md)",
    ),
    _F(
        "stability_cap",
        0.0,
        _real(low=0),
        "c > 0: the LR never above c x the largest rate stable on a quadratic of the measured sharpness, "
        "(2 + 2 momentum) F(staleness, momentum) / lambda_max, measured at the start and at each `sharpness_every` "
        "point (needs it; sgd or momentum); with `linear` the capped staleness rule; 0: off",
    ),
    _F(
        "lr_gain",
        "none",
        _choice(("none", "adascale")),
        "`adascale`: each update's LR is AdaScale's gain r in [1, B/B0] x the base schedule at the progress "
        "sum(r) (Johnson et al. 2020), ending when that reaches `num_epochs` (needs `noise_scale_every`, SGD)",
    ),
    _F(
        "rescale_recipe",
        True,
        checks.boolean,
        "the rest of the recipe follows the batch too "
        "(`kbatch.scaling.rescale`): BN momentum^(B/B0), weight decay, Adam's betas and epsilon",
    ),
    _F("warmup_epochs", 1.0, _real(low=0), "linear warmup, in epochs"),
    _F("decay", "cosine", _choice(DECAYS), "after warmup: " + ", ".join(f"`{d}`" for d in DECAYS)),
    _F("decay_power", 2.0, _real(low=0, low_open=True), "`decay=polynomial`: (1 - progress)^power"),
    _F("decay_boundaries", (), _epochs, "`decay=step`: epochs where the LR is divided by `decay_factor`"),
    _F("decay_factor", 10.0, _real(low=1, low_open=True), "`decay=step`: the LR's divisor at each boundary"),
    _F(
        "batch_boundaries",
        (),
        _epochs,
        "batch-size phases: `batch_sizes[i]` from epoch `batch_boundaries[i]` on, each with its scaled LR",
    ),
    _F("batch_sizes", (), _batch_sizes, "the global batch of each phase after the first"),
    _F(
        "anneal_batch",
        False,
        checks.boolean,
        "with `decay=step`: grow the batch where the LR would drop (Smith et al. 2018)",
    ),
    _F(
        "max_batch_size",
        None,
        _optional_positive_int,
        "`anneal_batch`, `batch_schedule` adaptive, warmup or seesaw: the largest batch",
        int,
    ),
    _F(
        "batch_schedule",
        "fixed",
        _choice(("fixed", "adaptive", "warmup", "seesaw", "goodput")),
        "`adaptive`: double the batch at an epoch's end "
        "while the noise scale B_simple is above it (needs `noise_scale_every`, `max_batch_size`); "
        "`warmup`: at an epoch's end, double it as many times as `batch_warmup_multiple` x B_simple allows "
        "(Merrill et al. 2025; the same needs); "
        "`seesaw`: where `decay=step` divides the LR by `decay_factor`, multiply the batch by it and divide "
        "the LR by its square root (Meterez et al. 2025), up to `max_batch_size`; "
        "`goodput`: at an epoch's end, the doubling with the most examples/s x statistical efficiency (Qiao et al. "
        "2021; the same needs)",
    ),
    _F(
        "batch_warmup_multiple",
        1.0,
        _real(low=0, low_open=True),
        "`batch_schedule=warmup`: the batch follows this multiple of the noise scale B_simple",
    ),
    _F(
        "update_time_model",
        (),
        _update_time_model,
        "`batch_schedule=goodput`: () times the updates; (T0, k, gamma) takes T_update(B) = T0 + k B^gamma "
        "seconds of an update without accumulation, as given (an accelerator's curve, or a deterministic run)",
    ),
    _F(
        "device_memory_gib",
        0.0,
        _real(low=0),
        "`batch_schedule=goodput` on JAX: a device's memory for one update; each batch takes the fewest "
        "accumulation steps whose micro-batch fits, by the compiled update's memory (XLA's figure). 0: the "
        "device's own limit where JAX reports one (GPU, TPU), none on CPU",
    ),
    _F("num_epochs", 8, checks.positive_int, "epochs of training (an epoch is N examples of one stream)"),
    # The optimizer.
    _F("optimizer", "momentum", _choice(optimizers.NAMES), ", ".join(f"`{n}`" for n in optimizers.NAMES)),
    _F("momentum", 0.9, _real(low=0, high=1, high_open=True), "heavy-ball momentum (SGD, LARS)"),
    _F("nesterov", False, checks.boolean, "Nesterov momentum (`momentum`, `lars`)"),
    _F("weight_decay", 5e-4, _real(low=0), "LARS's L2 term, Keras's decoupled decay for the others"),
    _F("trust_coefficient", 0.001, _real(low=0), "LARS's eta"),
    _F("beta_1", 0.9, _real(low=0, high=1, high_open=True), "Adam, AdamW, Lamb"),
    _F("beta_2", 0.999, _real(low=0, high=1, high_open=True), "Adam, AdamW, Lamb"),
    _F(
        "epsilon",
        None,
        _real(low=0, allow_none=True),
        "LARS's trust-ratio epsilon or Adam's (None: the optimizer's own)",
        float,
    ),
    _F(
        "exclude_from_weight_decay",
        None,
        _patterns,
        "variable-path patterns left out of weight decay (None: biases and norm parameters)",
        tuple,
    ),
    _F(
        "exclude_from_layer_adaptation",
        None,
        _patterns,
        "LARS: patterns left out of the trust ratio (None: the weight-decay exclusions)",
        tuple,
    ),
    _F(
        "clip_global_norm",
        None,
        _real(low=0, low_open=True, allow_none=True),
        "clip the **all-reduced** gradient to this global norm (Keras clips per replica)",
        float,
    ),
    # Distribution and the loop.
    _F(
        "backend",
        "tensorflow",
        _backend,
        "`tensorflow` (`tf.distribute`), `jax` (`keras.distribution`, "
        "with `KERAS_BACKEND=jax`), or `auto`: the one Keras runs on (`KERAS_BACKEND=auto`: JAX on a TPU)",
    ),
    _F(
        "strategy",
        "auto",
        _strategy,
        "`auto`, `tpu`, `tpu:ADDRESS`, `mirrored`, `multiworker`, "
        "`parameter_server` (asynchronous), `one_device`, `cpu:N`",
    ),
    _F("accumulation_steps", 1, checks.positive_int, "micro-batches per update, summed in the step"),
    _F(
        "steps_per_loop",
        50,
        checks.positive_int,
        "updates per loop, the actions run between loops (TensorFlow: one compiled call)",
    ),
    _F(
        "updates_per_call",
        0,
        _non_negative_int,
        "JAX: updates compiled into one XLA program (fewer dispatches, a longer compile); "
        "0: 5 in a batch phase of 1,000 updates or more, else 1",
    ),
    _F("jit_compile", True, checks.boolean, "XLA: the whole update on one replica, the gradient on several"),
    _F(
        "mixed_precision",
        None,
        _choice(MIXED_PRECISION),
        "`mixed_bfloat16` (TPU) or `mixed_float16` (GPU, with loss scaling)",
        str,
    ),
    _F("deterministic", False, checks.boolean, "TensorFlow's op determinism"),
    # Outputs.
    _F("seed", 0, checks.integer, "seeds the weights and the input stream"),
    _F("model_dir", None, _folder, "where the run writes (None: `runs/<model>-<dataset>-b<batch>-<config hash>`)", str),
    _F("evals_per_epoch", 1, checks.positive_int, "evaluations per epoch"),
    _F(
        "target_accuracy",
        0.95,
        _target,
        "`result.json` says when the eval metric first reached it (None: never)",
        float,
    ),
    _F("checkpoint_every", 0, _non_negative_int, "updates between checkpoints (0: each epoch's end)"),
    _F(
        "async_checkpoints",
        False,
        checks.boolean,
        "JAX: Orbax writes each checkpoint in the background while training goes on",
    ),
    _F("log_gradient_norm", True, checks.boolean, "log the global gradient norm every update"),
    # Diagnostics (docs/diagnostics.md).
    _F(
        "noise_scale_every",
        0,
        _non_negative_int,
        "updates between points of the gradient noise scale B_simple (0: off); measured in the step, at no extra pass",
    ),
    _F(
        "noise_scale_decay",
        0.99,
        _real(low=0, high=1, high_open=True),
        "moving-average decay of the noise scale's two estimates",
    ),
    _F(
        "loss_spike_guard",
        None,
        _real(low=0, low_open=True, allow_none=True),
        "k: an update whose loss is more "
        "than k standard deviations above the running mean takes a step scaled by k / z (SGD; None: off)",
        float,
    ),
    _F(
        "staleness",
        0,
        _non_negative_int,
        "tau: every update applies the gradient computed tau updates earlier, "
        "exactly (asynchronous training's delay, reproducible; 0: synchronous; shorter than the run)",
    ),
    _F(
        "sharpness_every",
        0,
        _non_negative_int,
        "evaluations between measurements of the sharpness lambda_max on a fixed evaluation batch (0: off)",
    ),
    _F(
        "bn_coupling_every",
        0,
        _non_negative_int,
        "evaluations between measurements of BN's gradient through batch statistics against fixed ones, "
        "norm ratio and cosine, on a fixed evaluation batch of the training batch's size (0: off)",
    ),
)
NAMES = tuple(f.name for f in FIELDS)
# What a resumed run may change: how it is run and watched, and the learning rate from the
# resumed step on (to continue a diverged run from its last good checkpoint at a lower rate).
# Anything else would make the checkpoint mean another run.
MAY_CHANGE_ON_RESUME = (
    "base_learning_rate",
    "clip_global_norm",
    "steps_per_loop",
    "updates_per_call",
    "jit_compile",
    "deterministic",
    "evals_per_epoch",
    "checkpoint_every",
    "async_checkpoints",
    "target_accuracy",
    "log_gradient_norm",
    "model_dir",
)
_BY_NAME = {f.name: f for f in FIELDS}

Settings = dataclasses.make_dataclass("Settings", NAMES, frozen=True)
Settings.__doc__ = """A config, checked and completed: one attribute per field of `FIELDS`.
Build one with `resolve(config)`; `dataclasses.asdict(settings)` is what `config.json` holds."""


def defaults():
    """A new ConfigDict with every field at its default (placeholders where the default is None)."""
    config = ml_collections.ConfigDict()
    for f in FIELDS:
        setattr(config, f.name, placeholder(f.kind) if f.default is None else f.default)
    return config


def unknown_field_message(name):
    """The one line for a field that does not exist, with the closest known names."""
    close = difflib.get_close_matches(name, NAMES, n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"config.{name}: no such field{hint}; the fields are listed in the README and kbatch.training.config.schema."


def resolve(config):
    """The `Settings` of `config` (a ConfigDict, a dict, or Settings): a ValueError naming the
    first unknown or bad field, or the first pair of fields that disagree."""
    if isinstance(config, Settings):
        return config
    values = dict(config.items()) if hasattr(config, "items") else dict(config)
    for name in values:
        if name not in _BY_NAME:
            raise ValueError(unknown_field_message(name))
    resolved = {}
    for f in FIELDS:
        resolved[f.name] = f.check(f"config.{f.name}", values.get(f.name, f.default))
    settings = Settings(**resolved)
    cross_checks.check(settings)
    return settings


def check_field(name, value):
    """`value` of field `name` as the run uses it; the field's one-line ValueError otherwise."""
    return _BY_NAME[name].check(f"config.{name}", value)


def validate(config):
    """Raise a ValueError naming the first bad field of `config`; returns nothing."""
    resolve(config)


def completed(saved):
    """A config as an earlier kbatch saved it (`config.json`, a sweep's base), with the fields
    added since at their defaults: a field is added with the default that keeps the behaviour
    runs had before it (`staleness=0` is the synchronous step), so an older run or sweep is the
    same one, not another."""
    defaults = {f.name: list(f.default) if isinstance(f.default, tuple) else f.default for f in FIELDS}
    return {**defaults, **saved}


def as_json(settings):
    """The settings as plain JSON data (what `config.json` holds): tuples become lists."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}


def markdown_table():
    """The README's field table."""
    rows = ["| field | default | meaning |", "| --- | --- | --- |"]
    for f in FIELDS:
        rows.append(f"| `{f.name}` | `{f.default!r}` | {f.doc} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
