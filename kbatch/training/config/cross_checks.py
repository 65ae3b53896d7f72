"""The checks of config fields against each other, once each field is valid on its own.

Each raises a ValueError naming the fields that disagree, before anything starts or is written.
"""

from kbatch import ledger, scaling
from kbatch.data.names import IN_MEMORY, SEQUENCES, dataset_family, is_builtin


def check(settings):
    """Raise a ValueError for the first pair of `settings` fields that disagree."""
    s = settings
    if s.warmup_epochs >= s.num_epochs:
        raise ValueError(
            f"config.warmup_epochs={s.warmup_epochs}: must be shorter than config.num_epochs={s.num_epochs}."
        )
    for field in ("decay_boundaries", "batch_boundaries"):
        _check_epochs(s, field)
    _check_decay(s)
    _check_batch_phases(s)
    if s.norm == "ghost_batch" and s.virtual_batch_size is None:
        raise ValueError(
            "config.norm='ghost_batch' needs config.virtual_batch_size (examples per ghost "
            "batch; it must divide the per-replica micro-batch)."
        )
    _check_controllers(s)
    if s.loss_spike_guard is not None and s.optimizer not in ("sgd", "momentum", "nesterov"):
        raise ValueError(
            f"config.loss_spike_guard={s.loss_spike_guard}: scales the update's gradient, which is its "
            f"learning rate only for SGD (sgd, momentum, nesterov); {s.optimizer} normalizes it away."
        )
    if s.staleness and s.mixed_precision == "mixed_float16":
        raise ValueError(
            f"config.staleness={s.staleness}: a delayed gradient would be unscaled by a later loss "
            "scale than the one it was computed with: use mixed_bfloat16 or float32 with staleness."
        )
    if s.backend == "jax" and s.mixed_precision == "mixed_float16":
        raise ValueError(
            "config.mixed_precision='mixed_float16' needs loss scaling, which the JAX backend does not "
            "do: use 'mixed_bfloat16' (TPU, recent GPUs) with config.backend='jax'."
        )
    if s.async_checkpoints and s.backend != "jax":
        raise ValueError(
            "config.async_checkpoints=True: asynchronous checkpoints are Orbax's, with config.backend='jax' "
            f"only (got {s.backend!r}); set it to False."
        )
    if s.strategy == "parameter_server":
        _check_parameter_server(s)
    _check_other_models(s)
    _check_task(s)
    # The replica count is known now for cpu:N; for the others it is checked again once the
    # strategy exists (still before anything is written).
    replicas = int(s.strategy[4:]) if s.strategy.startswith("cpu:") else 1
    ledger.per_replica_batch_size(s.batch_size, replicas, s.accumulation_steps)
    _check_ghost_batches(s, (s.batch_size, *s.batch_sizes), replicas)


def check_plan(settings, plan, replicas):
    """Raise a ValueError for the first field that disagrees with the run's `plan` (its updates
    and evaluations) or its number of `replicas`: known once the data and the strategy are,
    still before anything is built or written."""
    s, total = settings, plan.total_steps
    if s.staleness >= total:
        raise ValueError(
            f"config.staleness={s.staleness}: must be shorter than the run, {total} updates (every "
            "update would apply the zero gradient of the unfilled delay line)."
        )
    if s.noise_scale_every > total:
        raise ValueError(
            f"config.noise_scale_every={s.noise_scale_every}: the run has {total} updates, so no point "
            f"would be measured: at most {total} (0: off)."
        )
    evaluations = len(plan.eval_points)
    for field in ("sharpness_every", "bn_coupling_every"):
        if getattr(s, field) > evaluations:
            raise ValueError(
                f"config.{field}={getattr(s, field)}: counts evaluations and the run has "
                f"{evaluations}, so none would be measured: at most {evaluations} (0: off)."
            )
    _check_ghost_batches(s, [phase.batch_size for phase in plan.phases], replicas)


def _check_ghost_batches(s, batch_sizes, replicas):
    """`virtual_batch_size` must divide each replica's micro-batch of every global batch."""
    if s.norm != "ghost_batch":
        return
    for batch in batch_sizes:
        micro, parts = divmod(batch, replicas * s.accumulation_steps)
        if not parts and micro % s.virtual_batch_size:
            raise ValueError(
                f"config.virtual_batch_size={s.virtual_batch_size}: must divide the per-replica micro-batch, "
                f"{micro} (global batch {batch} / {replicas} replica(s) / accumulation_steps="
                f"{s.accumulation_steps})."
            )


def _check_epochs(s, field):
    value = getattr(s, field)
    for i, epoch in enumerate(value):
        if not epoch < s.num_epochs:
            raise ValueError(f"config.{field}[{i}]={epoch!r}: must be an epoch in (0, num_epochs={s.num_epochs}).")
    if any(a >= b for a, b in zip(value, value[1:])):
        raise ValueError(f"config.{field}={value}: must be strictly increasing (sorted epochs).")


def _check_decay(s):
    if s.batch_schedule == "seesaw" and (s.decay != "step" or s.anneal_batch):
        raise ValueError(
            "config.batch_schedule='seesaw' doubles the batch where a step decay halves the LR (Meterez et al. "
            f'2025): it needs config.decay="step" (got {s.decay!r}) and config.anneal_batch=False.'
        )
    if s.decay == "step":
        if not s.decay_boundaries:
            raise ValueError('config.decay="step" needs config.decay_boundaries (epochs where the LR drops).')
        if s.batch_boundaries:
            raise ValueError(
                'config.batch_boundaries cannot be combined with config.decay="step": use '
                "config.anneal_batch=True to grow the batch at the decay boundaries, or another decay."
            )
    if s.anneal_batch or s.batch_schedule == "seesaw":
        _check_max_batch(s)
    if s.anneal_batch:
        if s.decay != "step":
            raise ValueError(
                f"config.anneal_batch=True grows the batch where a step decay would cut the LR: "
                f'it needs config.decay="step", got {s.decay!r}.'
            )
        if s.lr_scaling != "staleness" and scaling.scaling_exponent(s.lr_scaling) <= 0:
            raise ValueError(
                f"config.anneal_batch=True needs an lr_scaling that grows the LR with the batch, got {s.lr_scaling!r}."
            )


def _check_max_batch(s):
    if s.max_batch_size is not None and s.max_batch_size < s.batch_size:
        raise ValueError(
            f"config.max_batch_size={s.max_batch_size}: must be None or an integer >= batch_size={s.batch_size}."
        )


def _check_controllers(s):
    """The fields that steer the batch or the rate while training."""
    if s.batch_schedule in ("adaptive", "warmup", "goodput"):
        _check_adaptive(s)
    if s.lr_gain == "adascale":
        _check_adascale(s)
    if s.stability_cap:
        _check_stability_cap(s)
    if s.device_memory_gib:
        _check_device_memory(s)


def _check_device_memory(s):
    """A step's memory is read from XLA's compiled program, which only the JAX backend has."""
    name = f"config.device_memory_gib={s.device_memory_gib:g}"
    if s.batch_schedule != "goodput":
        raise ValueError(f"{name} bounds the accumulation that batch_schedule='goodput' decides: set it, or leave 0.")
    if s.backend != "jax":
        raise ValueError(
            f"{name} is measured on the compiled JAX step (TensorFlow reports a step's memory only after it "
            "ran, on GPU): set config.backend='jax', or leave 0."
        )


def _check_stability_cap(s):
    """The cap is heavy ball's stability limit at the measured sharpness (`kbatch.training.rate_cap`)."""
    name = f"config.stability_cap={s.stability_cap:g}"
    if not s.sharpness_every:
        raise ValueError(f"{name} caps the rate at the measured sharpness: set config.sharpness_every (e.g. 1).")
    if s.optimizer not in ("sgd", "momentum") or s.nesterov:
        raise ValueError(f"{name} is heavy ball's limit (sgd, momentum without nesterov), not {s.optimizer}'s.")
    if s.lr_gain != "none":
        raise ValueError(f"{name} bounds a planned rate; config.lr_gain={s.lr_gain!r} sets its own: use one of them.")


def _check_adascale(s):
    """AdaScale's gain is SGD's learning rate over a fixed batch above the base batch, its progress a
    function of epochs (Johnson et al. 2020)."""
    name = "config.lr_gain='adascale'"
    needs = [
        (not s.noise_scale_every, "reads the noise scale's estimates: set config.noise_scale_every (e.g. 10)"),
        (
            s.optimizer not in ("sgd", "momentum", "nesterov"),
            f"is SGD's gain (sgd, momentum, nesterov), not {s.optimizer}'s",
        ),
        (
            s.batch_size < s.base_batch_size,
            f"scales from base_batch_size={s.base_batch_size} up: batch_size={s.batch_size} is below it",
        ),
        (s.decay == "step", "follows a schedule of epochs: use decay cosine, linear, polynomial or constant, not step"),
        (
            s.batch_schedule != "fixed" or s.anneal_batch or s.batch_boundaries,
            "sets the rate for one batch: leave batch_schedule fixed, anneal_batch off and batch_boundaries empty",
        ),
        (s.strategy == "parameter_server", "needs the parts of one synchronous update, which parameter servers lack"),
    ]
    for failed, why in needs:
        if failed:
            raise ValueError(f"{name} {why}.")


def _check_adaptive(s):
    name = f"config.batch_schedule={s.batch_schedule!r}"
    if not s.noise_scale_every:
        raise ValueError(
            f"{name} reads the noise scale: set config.noise_scale_every (updates between its points, e.g. 10)."
        )
    if s.max_batch_size is None or s.max_batch_size < 2 * s.batch_size:
        raise ValueError(
            f"{name} doubles the batch up to config.max_batch_size, which "
            f"must be at least 2 x batch_size={2 * s.batch_size} (it is {s.max_batch_size})."
        )
    if s.batch_boundaries or s.anneal_batch:
        raise ValueError(
            f"{name} chooses the phases itself: leave config.batch_boundaries empty and config.anneal_batch off."
        )


def _check_batch_phases(s):
    if len(s.batch_sizes) != len(s.batch_boundaries):
        raise ValueError(
            f"config.batch_sizes ({len(s.batch_sizes)} entries) must have one global batch per epoch in "
            f"config.batch_boundaries ({len(s.batch_boundaries)}): batch_sizes[i] is used from "
            f"batch_boundaries[i] on."
        )


def _check_task(s):
    """`task` against the data set's labels and the model's outputs, and the model's size fields
    against the model they size (a model of your own, `model_fn`, is checked once built)."""
    sizes = [f"model_{part}" for part in ("width", "layers", "heads") if getattr(s, f"model_{part}") is not None]
    if sizes and s.model != "transformer_lm":
        raise ValueError(
            f"config.{sizes[0]}={getattr(s, sizes[0])}: sizes config.model='transformer_lm', not "
            f"{s.model!r}: leave it None."
        )
    sequences = is_builtin(s.dataset) and dataset_family(s.dataset) in SEQUENCES
    if s.task == "next_token" and is_builtin(s.dataset) and not sequences:
        raise ValueError(
            f"config.task='next_token' predicts each next token of a sequence, and "
            f"config.dataset={s.dataset!r} has one class per example: use a data set of token "
            f"sequences ({', '.join(SEQUENCES)}) or config.task='classification'."
        )
    if s.task == "classification" and (sequences or s.model == "transformer_lm"):
        what = f"config.dataset={s.dataset!r} labels" if sequences else f"config.model={s.model!r} predicts"
        raise ValueError(
            f"config.task='classification': {what} every position of a sequence; set config.task='next_token'."
        )


def _check_parameter_server(s):
    """What an asynchronous parameter-server run cannot do (`kbatch.training.backends.ps_backend`)."""
    where = "config.strategy='parameter_server'"
    if s.backend != "tensorflow":
        raise ValueError(
            f"{where} is TensorFlow's ParameterServerStrategy: it needs config.backend='tensorflow' "
            f"(got {s.backend!r}); for a delay under JAX, simulate it exactly with config.staleness."
        )
    if not is_builtin(s.dataset) or dataset_family(s.dataset) not in IN_MEMORY:
        raise ValueError(
            f"{where}: its workers read batches by stream position from the training split held in "
            f"memory, one of {', '.join(IN_MEMORY)}; config.dataset={s.dataset!r} is not."
        )
    refused = (
        (
            "staleness",
            s.staleness,
            "the delay is real here, and measured: set config.staleness on a synchronous strategy to simulate one",
        ),
        (
            "accumulation_steps",
            s.accumulation_steps > 1,
            "each worker's update is one batch: raise config.batch_size instead",
        ),
        ("noise_scale_every", s.noise_scale_every, "the noise scale needs the parts of one synchronous update"),
        ("loss_spike_guard", s.loss_spike_guard, "the guard's running statistics would race between workers"),
        (
            "mixed_precision",
            s.mixed_precision == "mixed_float16",
            "the loss scale would race between workers: use mixed_bfloat16 or float32",
        ),
        ("norm", s.norm == "sync_batch", "synchronized batch norm needs replicas in step: use norm='batch'"),
    )
    for field, value, why in refused:
        if value:
            raise ValueError(f"{where} with config.{field}={getattr(s, field)!r}: {why}.")


def _check_other_models(s):
    """The fields that use another run's model: `init_exclude` needs `init_from`; a teacher needs a
    labelled part to keep, and self-training pseudo-labels classes."""
    if s.init_exclude is not None and s.init_from is None:
        raise ValueError(
            f"config.init_exclude={s.init_exclude!r}: leaves weights out of config.init_from, which is not set."
        )
    if s.teacher is not None and not s.labelled_examples:
        raise ValueError(
            f"config.teacher={s.teacher!r}: needs config.labelled_examples > 0, the examples that keep their "
            "labels (the teacher labels the rest)."
        )
    if (s.teacher is not None or s.labelled_examples) and s.task != "classification":
        raise ValueError(
            f"config.task={s.task!r}: self-training (labelled_examples, teacher) pseudo-labels classes: "
            "task='classification' only."
        )


def check_over_batch(s, task):
    """What would split the batch of a task whose loss couples its examples (`Task.over_batch`):
    each part would see fewer negatives, another loss than the global batch's. (The noise scale's
    parts are the global loss's gradient through each replica's or half's examples: allowed.)"""
    if not getattr(task, "over_batch", False):
        return
    who = f"{type(task).__name__}'s loss couples the examples of a batch (Task.over_batch)"
    splits = (
        (s.accumulation_steps > 1, "accumulation_steps", "micro-batches would see fewer negatives", "set it to 1"),
        (s.strategy == "parameter_server", "strategy", "its workers compute their batches apart", "use another"),
    )
    for split, field, why, fix in splits:
        if split:
            raise ValueError(f"config.{field}={getattr(s, field)!r}: {who}, and {why}: {fix}.")
