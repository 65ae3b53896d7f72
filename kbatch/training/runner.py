"""A run: everything a training needs, built once from a config, then driven loop by loop.

    run = build_run(config)              # checks, strategy, data, model, optimizer, plan, restore
    result = run.train(actions=[...], callbacks=[keras.callbacks.EarlyStopping(...)])

`Run.train` drives the updates to the next point of the `Plan` (an evaluation, a checkpoint, a
batch-size phase change, or `steps_per_loop` updates: one compiled call), then hands the
loop's records to each action in turn (`kbatch.training.actions`: check, log, evaluate,
checkpoint, preemption, progress, then the user's actions and Keras callbacks); what an action
finds out for the others it publishes on the run (`Run.publish`). The backend
(a `backend.Backend`: `tf_backend`, `ps_backend` or `jax_backend`) is the only part that knows
TensorFlow or JAX.
"""

import dataclasses
import math
import os
import time

import keras

from kbatch import ledger, optimizers, runtime
from kbatch.data import names, sources
from kbatch.diagnostics import noise_scale
from kbatch.training import actions as actions_lib
from kbatch.training import contrastive, models_of_config, rate_cap, self_training, transforms
from kbatch.training.actions import action as action_lib
from kbatch.training.config import (
    apply_recipe,
    arguments,
    cross_checks,
    fine_tuning,
    lr_schedules,
    probabilities,
    recipe,
    schema,
)
from kbatch.training.config.plan import Plan
from kbatch.training.run_files import event_writer, history, init_from, run_dir, run_lock
from kbatch.training.tasks import Classification, NextToken

NOT_TASK_VALUES = (
    "count",
    "grad_norm",
    "learning_rate",
    "spike_factor",
    "staleness",
    noise_scale.RECORD,
    *transforms.adascale.RECORDS,
)


@dataclasses.dataclass
class LoopOutput:
    """One compiled loop's updates: `records` holds, per update, the task's values summed over
    the global batch, `count`, `grad_norm` and `learning_rate`."""

    first_step: int
    num_steps: int
    phase: object
    records: dict
    seconds: float

    @property
    def last_step(self):
        return self.first_step + self.num_steps

    def mean(self, name):
        """The loop's mean of a task value over its examples."""
        return float(self.records[name].sum() / self.records["count"].sum())

    def task_values(self):
        """The names of the task's values among the records (loss, accuracy, ...)."""
        return [name for name in self.records if name not in NOT_TASK_VALUES]

    def train_logs(self):
        """{value name: mean over the loop} for every task value."""
        return {name: self.mean(name) for name in self.task_values()}


def _backend(settings, strategy):
    """The backend of `settings.backend`, imported only when it is used (TensorFlow or JAX); a
    ValueError when Keras runs on the other one."""
    runtime.check_backend(settings.backend)
    if settings.backend == "jax":
        from kbatch.training.backends import jax_backend

        return jax_backend.JaxBackend(settings, strategy)
    if settings.strategy == "parameter_server":
        from kbatch.training.backends import ps_backend

        return ps_backend.ParameterServerBackend(settings, strategy)
    from kbatch.training.backends import tf_backend

    return tf_backend.TensorFlowBackend(settings, strategy)


def planned_epochs(settings):
    """The epochs of data a run may take: `num_epochs`, or with AdaScale's gain, whose progress per
    update is r >= 1 base updates, as many as its least progress (r = 1) would need."""
    if settings.lr_gain == "adascale":
        return settings.num_epochs * math.ceil(settings.batch_size / settings.base_batch_size)
    return settings.num_epochs


def _check_plan(settings, batches, replicas, info):
    epochs = planned_epochs(settings)
    batches.check_divisible(replicas, settings.accumulation_steps, epochs)
    plan = Plan.make(batches, info.num_train_examples, epochs, settings.evals_per_epoch, settings.checkpoint_every)
    for phase in plan.phases:
        if phase.batch_size > info.num_train_examples:
            raise ValueError(
                f"config.batch_size: a global batch of {phase.batch_size} is larger than the "
                f"{info.num_train_examples} training examples of {info.name}."
            )
    return plan


def _steered_rate(run_recipe, backend, info, batches):
    """The optimizer's rate where a measurement steers it, set in place; the stability cap's variable
    (or None). `lr_gain="adascale"`: AdaScale's `ProgressSchedule` (its gain x the base rate x the
    epoch schedule at the progress); `stability_cap`: the planned schedule bounded by the cap."""
    s, optimizer = run_recipe.settings, backend.optimizer
    gain = backend.chain.get(transforms.AdaScaleGain)
    if gain is not None:
        schedule = gain.schedule(run_recipe.base_learning_rate, lr_schedules.epoch_schedule(s), s.num_epochs)
        optimizers.unwrap(optimizer).learning_rate = schedule
    if s.stability_cap:
        return rate_cap.add_cap(optimizer, run_recipe.learning_rate_schedule(info.num_train_examples, batches))
    return None


def default_task(settings, replicas):
    """The task `config.task` names: `NextToken`, masking the data set's padding, `Contrastive`
    (negatives from the global batch or each of the `replicas`' own) or `Classification`."""
    if settings.task == "next_token":
        return NextToken(pad_id=names.pad_id(settings.dataset))
    if settings.task == "contrastive":
        return contrastive.task_of(settings, replicas)
    return Classification()


def _check_halves(settings, backend):
    """2 if the noise scale splits each replica's batch into halves (their batch must be even), else 1."""
    if not settings.noise_scale_every or not backend.noise_parts(settings.accumulation_steps)[1]:
        return 1
    if settings.batch_size % (2 * backend.num_replicas):
        raise ValueError(
            f"config.batch_size={settings.batch_size}: with noise_scale_every each replica's batch "
            f"is split in two halves, so it must be a multiple of {2 * backend.num_replicas}."
        )
    return 2


def resolve_settings(config, data=None):
    """`schema.resolve(config)`, with the default `model_dir` filled in; with a source of your own
    (`data`), `dataset` is its name, "data:NAME" (what config.json records)."""
    settings = schema.resolve(config)
    if data is not None:
        settings = dataclasses.replace(settings, dataset=names.USER_PREFIX + data.name)
    if settings.model_dir is None:
        settings = dataclasses.replace(settings, model_dir=run_dir.default_model_dir(settings))
    return settings


def build_run(config, strategy=None, model_fn=None, task=None, data=None):
    """A `Run` of `config`, restored from its last checkpoint if `model_dir` holds one.

    Args:
      config: an `ml_collections.ConfigDict`, a dict or `Settings` (fields: `schema.FIELDS`).
      strategy: a `tf.distribute.Strategy` to use instead of resolving `config.strategy`.
      model_fn: `model_fn(dataset_info) -> keras.Model` mapping inputs to the task's outputs
        (logits by default: a final softmax or sigmoid is refused), to train a model of your own.
        Its normalization layers' momenta are taken as given at `base_batch_size`, or at the batch
        `kbatch.scaling.rescale_model` recorded on them (and rescaled, with `rescale_recipe`).
      task: a `kbatch.training.Task` (default: the one `config.task` names, `default_task`).
      data: a `kbatch.data.Source` to train and evaluate on (`kbatch.data.from_arrays`, ...)
        instead of `config.dataset`; config.json then records its name as "data:NAME".

    Raises a ValueError naming the field on bad input; nothing is written to `model_dir` until
    everything is built (then its `config.json`). The process holds `model_dir` from here until
    training ends (`run_lock`): another run into the same folder is refused meanwhile.
    """
    arguments.check_arguments(config, strategy, model_fn, task, data=data)
    settings = resolve_settings(config, data)
    arguments.warn_unused_norm_fields(settings, model_fn)
    for field in ("init_from", "teacher"):
        if getattr(settings, field) is not None:
            init_from.model_path(getattr(settings, field), field)
    if strategy is None:
        run_dir.check_one_process(settings.strategy)
    run_dir.check(settings.model_dir, settings)
    backend = _backend(settings, strategy)
    lock = run_lock.acquire(settings.model_dir) if backend.is_chief else None
    try:
        backend.use_source(_source(settings, data, backend.is_chief))
        return _build_locked_run(recipe.RunRecipe.from_settings(settings), backend, model_fn, task, lock)
    except BaseException:
        if lock:
            lock.release(discard_empty=True)
        raise


def _source(settings, data, is_chief):
    """What the run trains on: `data`, or `config.dataset`'s source as two views for a contrastive
    task; either as self-training asks (`labelled_examples`, `teacher`)."""
    if data is None:
        data = sources.get(
            settings.dataset,
            settings.data_dir,
            text_vocabulary_size=settings.text_vocabulary_size,
            text_sequence_length=settings.text_sequence_length,
        )
        data = contrastive.views_of(settings, data)
    return self_training.source_of(settings, data, say=print if is_chief else lambda *args, **kwargs: None)


def _build_locked_run(run_recipe, backend, model_fn, task, lock):
    """`build_run` once this process holds the run folder (`lock`, None off the chief)."""
    settings = run_recipe.settings
    changed = run_dir.check(settings.model_dir, settings)  # again: another run may have ended meanwhile
    replicas = backend.num_replicas
    ledger.per_replica_batch_size(settings.batch_size, replicas, settings.accumulation_steps)
    halves = _check_halves(settings, backend)
    info = backend.describe_data()
    batches = run_recipe.batch_schedule(multiple_of=replicas * settings.accumulation_steps * halves)
    plan = _check_plan(settings, batches, replicas, info)
    cross_checks.check_plan(settings, plan, replicas)
    keras.mixed_precision.set_global_policy(settings.mixed_precision or "float32")
    runtime.set_random_seed(settings.seed)
    task = task or default_task(settings, replicas)
    cross_checks.check_over_batch(settings, task)
    source = init_from.load(settings.init_from) if settings.init_from is not None else None
    with backend.scope():
        model, optimizer = models_of_config.build_model_and_optimizer(run_recipe, info, batches, model_fn, source)
        backend.attach(model, optimizer, task)
        cap = _steered_rate(run_recipe, backend, info, batches)
        if source is not None and not backend.has_checkpoint():  # a resumed run starts from its checkpoint
            fine_tuning.copy_weights(source, model, settings.init_exclude)
    who = "model_fn's model" if model_fn is not None else "the model"
    arguments.check_outputs(model, task, info, model_fn is not None)
    probabilities.check_logits_not_probabilities(model, task, lambda: backend.probe_batch(2)[0], who)
    if halves == 2 and actions_lib.measurements.halves_meet_batch_norm(model, task):
        raise ValueError(
            f"config.noise_scale_every={settings.noise_scale_every}: here it compares the two halves of each batch, "
            "which would give this model's batch normalization half batches: set accumulation_steps >= 2 (each "
            "micro-batch is then its own BN batch, as it is without the noise scale), train on several replicas "
            "(TensorFlow), or use a norm without batch statistics."
        )
    if settings.bn_coupling_every:
        actions_lib.measurements.check_bn_coupling(model, settings.bn_coupling_every)
    run = Run(run_recipe, backend, task, info, model, optimizer, plan, changed, lock, cap)
    if backend.is_chief:
        with run_dir.writing(settings.model_dir, "config.json", lambda: backend.latest_checkpoint):
            run_dir.write_json(os.path.join(settings.model_dir, run_dir.CONFIG_FILE), schema.as_json(settings))
    return run


class Run:
    """A built run (see `build_run`): its recipe (a `recipe.RunRecipe`) and settings, backend, task,
    model, optimizer, plan, evaluation history and the number of updates done (`step`). `changed` is None for a new run,
    else the fields changed since the run in `model_dir` was started ({} for none). `lock` is
    the held `run_lock.RunLock` of `model_dir` (None off the chief), released when training ends
    or by `close()`. What the actions publish (`publish`) it shows read-only: `last_evaluation`,
    `noise_scale`, `staleness_counts`. `batch_decisions`: the adaptive batch's decisions its plan
    follows (`adapt`; saved as `AdaptBatchSize`'s state, so a resumed run re-plans when built).
    `rate_cap`: with `stability_cap`, the variable that bounds the rate (`rate_cap`), else None."""

    def __init__(self, run_recipe, backend, task, info, model, optimizer, plan, changed, lock=None, cap=None):
        self.recipe, self.settings = run_recipe, run_recipe.settings
        self.backend, self.task, self.info = backend, task, info
        self.model, self.optimizer, self.plan, self.changed = model, optimizer, plan, changed
        self._whole_plan = plan
        self.lock, self.rate_cap = lock, cap
        self.momenta = apply_recipe.moving_average_momenta(model, run_recipe.base.batch_size)
        self.history = history.History(backend.write_dir)
        self.step = backend.restore()
        if self.step:
            self.history.load(self.step, self.settings.model_dir)
        self._phase = self._loop = None
        self._actions, self._published = (
            [],
            {"last_evaluation": None, "noise_scale": float("nan"), "staleness_counts": None},
        )
        self.batch_decisions = []
        saved = self.history.actions.get("AdaptBatchSize", {}).get("decisions", [])
        decisions = [d for d in saved if d["step"] <= self.step]
        if decisions:  # a resumed adaptive run: the phases it chose, exactly (AdaptBatchSize's state)
            self.adapt(decisions)
        end = self.history.actions.get("AdaScaleProgress", {}).get("end_step")
        if end is not None and end <= self.step:  # a finished AdaScale run ended there
            self.end_at(end)
        if changed is not None and backend.is_chief:  # points logged after the checkpoint are logged again
            event_writer.drop_events_from(
                self.settings.model_dir, self.step + 1, {"examples": self.plan.ledger.examples_seen(self.step)}
            )
        self._started = time.time()

    def adapt(self, decisions):
        """Re-plan with the adaptive batch's `decisions` ([{"epoch", "batch", "step"}, and goodput's
        "accumulation_steps" where it decides them], in order): phase i + 1 trains at decisions[i]'s
        batch from its epoch on, its rate moved by `lr_scaling`.
        The plan and the optimizer's rate schedule are rebuilt; the past keeps its steps and rates."""
        s = self.settings
        halves = _check_halves(s, self.backend)
        batches = self.recipe.batch_schedule(self.backend.num_replicas * s.accumulation_steps * halves, decisions)
        self.plan = _check_plan(s, batches, self.backend.num_replicas, self.info)
        schedule = self.recipe.learning_rate_schedule(self.info.num_train_examples, batches)
        if self.rate_cap is not None:
            schedule = rate_cap.CappedSchedule(schedule, self.rate_cap)
        optimizers.unwrap(self.optimizer).learning_rate = schedule
        self.batch_decisions = list(decisions)
        self._phase = None  # the next loop starts the new phase (a new compiled step)

    def accumulation_at(self, phase):
        """`phase`'s accumulation steps: the latest batch decision's up to its start (goodput under a
        device's memory decides them), else `accumulation_steps`."""
        chosen = [
            d["accumulation_steps"]
            for d in self.batch_decisions
            if "accumulation_steps" in d and d["step"] <= phase.start_step
        ]
        return chosen[-1] if chosen else self.settings.accumulation_steps

    def end_at(self, step):
        """End the run after `step` updates of its plan as built (AdaScale's progress decides where)."""
        self.plan = self._whole_plan.ended_at(min(step, self._whole_plan.total_steps))

    def publish(self, name, value):
        """Set what an action found out for the others (one of the names the run shows)."""
        if name not in self._published:
            raise KeyError(f"{name!r}: a run publishes only {sorted(self._published)}.")
        self._published[name] = value

    @property
    def last_evaluation(self):
        """The latest evaluation's entry in the history (`Evaluate`), None before the first."""
        return self._published["last_evaluation"]

    @property
    def noise_scale(self):
        """B_simple after the last loop (`MeasureNoiseScale`; NaN without it)."""
        return self._published["noise_scale"]

    @property
    def staleness_counts(self):
        """Under parameter servers, [updates applied tau updates late, for each tau] (`RecordStaleness`)."""
        return self._published["staleness_counts"]

    def evaluated(self, loop):
        """True if the run evaluated at the end of `loop`."""
        return self.last_evaluation is not None and self.last_evaluation["step"] == loop.last_step

    def wall_seconds(self):
        """Training time so far, earlier processes of this run included."""
        return self.history.wall_seconds + time.time() - self._started

    def save(self, step):
        """A checkpoint at `step`, with the evaluation history beside it."""
        with run_dir.writing(
            self.settings.model_dir, f"the checkpoint of step {step}", lambda: self.backend.latest_checkpoint
        ):
            states = {action.name: action.state() for action in self._actions}
            self.history.actions.update({name: state for name, state in states.items() if state is not None})
            self.history.save(self.wall_seconds())
            self.backend.save(step)

    def run_loop(self):
        """Updates up to the plan's next stop, in one compiled call; a `LoopOutput`."""
        phase = self.plan.phase_at(self.step)
        if phase is not self._phase:
            apply_recipe.apply_phase(self.recipe, phase.batch_size, self.momenta, self.optimizer)
            self._loop = self.backend.start_phase(
                phase, self.plan.ledger.examples_seen(self.step), self.accumulation_at(phase)
            )
            self._phase = phase
        num_steps = self.plan.next_stop(self.step, self.settings.steps_per_loop)
        started = time.perf_counter()
        records = self._loop(num_steps)
        loop = LoopOutput(self.step, num_steps, phase, records, time.perf_counter() - started)
        self.step += num_steps
        return loop

    def train(self, actions=(), callbacks=(), verbose=True):
        """Train to the end of the plan (or until a callback sets `model.stop_training`), then
        write `model.keras` and `result.json`; returns the result (a finished run's, untouched).

        `actions` run after the standard ones (`actions_lib.standard(settings, verbose, task)`), and
        `callbacks` (`keras.callbacks.Callback`s) after those; a ValueError if an action comes
        before one it must run after (`Action.after`)."""
        try:
            finished = run_dir.intact_result(self.settings.model_dir)  # build_run checked the folder
            if self.step >= self.plan.total_steps and finished is not None:
                return finished  # a finished run is left as it is
            every = [
                *actions_lib.standard(self.settings, verbose, self.task),
                *actions,
                actions_lib.KerasCallbacks(callbacks),
            ]
            action_lib.check_order(every)
            result = self._train(every)
        finally:
            self.close()
        for action in every:
            action.end(self, result)
        return result

    def _train(self, every):
        self.model.stop_training = False
        self._actions = every
        try:
            for action in every:
                if action.name in self.history.actions:
                    action.restore_state(self.history.actions[action.name])
                action.begin(self)
            while self.step < self.plan.total_steps and not self.model.stop_training:
                loop = self.run_loop()
                for action in every:
                    action.after_loop(self, loop)
            return self.finish()
        finally:
            for action in reversed(every):
                action.close(self)
            self.backend.close()

    def close(self):
        """Release `model_dir` for other runs (training releases it when it ends), and the input
        stream now: a tf.data iterator of several devices, destroyed later by the garbage
        collector, blocks the thread that destroys it for up to a minute (the tf.data model thread
        finishes its sleep first; measured with TF 2.21, docs/reliability.md). A later `run_loop`
        starts the stream again where the run is."""
        self._phase = self._loop = None
        self.backend.release_input()
        if self.lock:
            self.lock.release()

    def finish(self):
        """The result; on the chief also `model.keras` and `result.json` in `model_dir`."""
        self.backend.average_moving_statistics()  # a collective: every worker takes part
        result = history.result(self, self.wall_seconds())
        if self.backend.is_chief:
            with run_dir.writing(
                self.settings.model_dir, "model.keras and result.json", lambda: self.backend.latest_checkpoint
            ):
                run_dir.write_atomically(os.path.join(self.settings.model_dir, run_dir.MODEL_FILE), self.model.save)
                run_dir.write_json(os.path.join(self.settings.model_dir, run_dir.RESULT_FILE), result)
        return result


def train(config, *, strategy=None, model_fn=None, task=None, data=None, actions=(), callbacks=(), verbose=True):
    """Train as `config` says and return the result (also written to `model_dir/result.json`).

    `build_run(config, strategy, model_fn, task, data).train(actions, callbacks, verbose)`: see those.

    Raises:
      ValueError: a bad config field, before anything is written.
      kbatch.training.stops.Preempted: the machine is going away; a checkpoint was saved,
        and the same call resumes from it.
      FloatingPointError: the loss stopped being finite; the last good checkpoint is named.
      kbatch.training.stops.Interrupted: Ctrl-C; a checkpoint was saved, the same call resumes.

    A finished run in `model_dir` is not run again: its result is returned as it is.
    """
    arguments.check_arguments(config, strategy, model_fn, task, actions, callbacks, data)
    settings = resolve_settings(config, data)
    finished = run_dir.finished_result(settings)
    if finished is not None:  # the same command again: the results stay as they are
        if verbose:
            print(
                f"kbatch: this run is finished; its results are in {settings.model_dir} (left as they are).", flush=True
            )
        return finished
    problems = run_dir.final_files_problems(settings.model_dir)
    if problems and verbose:
        print(
            f"kbatch: this run has finished, but {' and '.join(problems)}: writing them again from its last "
            "checkpoint.",
            flush=True,
        )
    run = build_run(settings, strategy=strategy, model_fn=model_fn, task=task, data=data)
    return run.train(actions=actions, callbacks=callbacks, verbose=verbose)
