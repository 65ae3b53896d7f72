"""`train(config)`: the whole run, from a validated config to `result.json`.

config -> strategy -> data -> model -> optimizer and schedule -> steps -> summaries and results.
The loop calls `steps_per_loop` updates per `tf.function` call, stopping early at evaluation,
checkpoint and batch-size phase changes (`plan.Plan`); each phase has its own input stream and
traced step, at its global batch. The checkpoint holds the model, the optimizer and the step; the input stream is
a pure function of the seed and the examples seen, rebuilt at that point on resume. So a killed
run started again with the same command continues exactly where the last checkpoint left it, in
the right phase. On SIGTERM or a maintenance notice it saves first (`preemption`).
"""

import datetime
import json
import os
import shutil
import time

import ml_collections
import numpy as np
import tensorflow as tf
import keras

from kbatch import data, distribute, layers, models, optimizers
from kbatch.training import config_check, preemption, recipe, run_dir
from kbatch.training.plan import Plan
from kbatch.training.step import RECORD_FIELDS, make_eval_loop, make_train_loop, make_train_step
from kbatch.training.summaries import Progress, Summaries

HISTORY_FILE = "history.json"


def default_model_dir(config):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{config.model}-{config.dataset.replace('/', '_')}-b{config.batch_size}-{stamp}")


class _History:
    """Evaluation results so far (kept beside the checkpoints, so a resumed run keeps them)."""

    def __init__(self, directory):
        self.path = os.path.join(directory, HISTORY_FILE)
        self.evals, self.wall_seconds = [], 0.0

    def load(self, restored_step, directory):
        """The evaluations up to `restored_step` saved in `directory` (the chief's model_dir)."""
        path = os.path.join(directory, HISTORY_FILE)
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            self.evals = [e for e in saved["evals"] if e["step"] <= restored_step]
            self.wall_seconds = saved["wall_seconds"]

    def save(self, wall_seconds):
        run_dir.write_json(self.path, {"evals": self.evals, "wall_seconds": wall_seconds})


def _result(config, history, step, examples_seen, plan, replicas, wall_seconds):
    evals = history.evals
    best = max(evals, key=lambda e: e["eval_accuracy"]) if evals else None
    result = {
        "final_eval_accuracy": evals[-1]["eval_accuracy"] if evals else None,
        "final_eval_loss": evals[-1]["eval_loss"] if evals else None,
        "best_eval_accuracy": best["eval_accuracy"] if best else None,
        "best_eval_step": best["step"] if best else None,
        "steps": step,
        "examples_seen": examples_seen,
        "epochs": config.num_epochs,
        "global_batch_size": config.batch_size,
        "batch_sizes": [phase.batch_size for phase in plan.phases],
        "num_replicas": replicas,
        "accumulation_steps": config.accumulation_steps,
        "wall_seconds": wall_seconds,
        "target_accuracy": config.target_accuracy,
        "steps_to_target": None,
        "examples_to_target": None,
        "epochs_to_target": None,
        "history": evals,
    }
    if config.target_accuracy is not None:
        reached = [e for e in evals if e["eval_accuracy"] >= config.target_accuracy]
        if reached:
            first = reached[0]
            result.update(steps_to_target=first["step"], examples_to_target=first["examples"],
                          epochs_to_target=first["epoch"])
    return result


def train(config, *, strategy=None, model_fn=None, verbose=True):
    """Train as `config` says and return the result (also written to `model_dir/result.json`).

    Args:
      config: an `ml_collections.ConfigDict` (or dict) with the fields of configs/mnist1d_cnn.py.
      strategy: a `tf.distribute.Strategy` to use instead of resolving `config.strategy`.
      model_fn: `model_fn(dataset_info) -> keras.Model` mapping inputs to logits, to train a
        model of your own instead of `config.model`. Its normalization layers' momenta are
        taken as given at `config.base_batch_size` (and rescaled, with `rescale_recipe`).
      verbose: print progress (a Keras progress bar per epoch and one line per evaluation).

    Raises:
      ValueError: a bad config field, before anything is written.
      preemption.Preempted: the machine is going away; a checkpoint was saved, and the same
        call resumes from it.
    """
    config = ml_collections.ConfigDict(config) if isinstance(config, dict) else config
    config_check.validate(config)
    if not config.model_dir:
        config.model_dir = default_model_dir(config)
    resuming = run_dir.check(config.model_dir, config)
    if config.get("deterministic", False):
        tf.config.experimental.enable_op_determinism()
    strategy = strategy or distribute.resolve_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    distribute.per_replica_batch_size(config.batch_size, replicas, config.accumulation_steps)
    info = data.describe(config.dataset, config.get("data_dir"))
    num_examples = info.num_train_examples
    batches = recipe.batch_schedule(config, multiple_of=replicas * config.accumulation_steps)
    batches.check_divisible(replicas, config.accumulation_steps, config.num_epochs)
    plan = Plan.make(batches, num_examples, config.num_epochs, config.evals_per_epoch, config.checkpoint_every)
    for phase in plan.phases:
        if phase.batch_size > num_examples:
            raise ValueError(
                f"config.batch_size: a global batch of {phase.batch_size} is larger than the "
                f"{num_examples} training examples of {config.dataset}.")
    chief = run_dir.is_chief(strategy)
    write_dir = run_dir.writable_dir(config.model_dir, strategy)
    if chief:
        os.makedirs(config.model_dir, exist_ok=True)
        run_dir.write_json(os.path.join(config.model_dir, run_dir.CONFIG_FILE), run_dir.config_dict(config))

    keras.mixed_precision.set_global_policy(config.mixed_precision or "float32")
    keras.utils.set_random_seed(config.seed)
    first_recipe = recipe.phase_recipe(config, plan.phases[0].batch_size)
    with strategy.scope():
        if model_fn is not None:
            model = model_fn(info)
        else:
            model = models.get(config.model, num_classes=info.num_classes, input_shape=info.input_shape,
                               norm=config.norm, norm_kwargs=recipe.norm_kwargs(config))
        base_momenta = recipe.moving_average_momenta(model)
        optimizer = optimizers.build(config, recipe.learning_rate_schedule(config, num_examples, batches),
                                     **recipe.optimizer_settings(first_recipe))
        optimizers.apply_exclusions(optimizer, model)
        if config.mixed_precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        trained_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="trained_steps")

    eval_batch = config.batch_size // config.accumulation_steps
    eval_data = data.distribute(strategy, data.eval_dataset_fn(config.dataset, eval_batch, config.get("data_dir")))
    evaluate = make_eval_loop(strategy, model)

    def start_phase(phase, step):
        """The input stream and the compiled loop of `phase`, from update `step` on."""
        recipe.apply(config, phase.batch_size, base_momenta, optimizer)
        train_step = make_train_step(
            strategy, model, optimizer, global_batch_size=phase.batch_size,
            accumulation_steps=config.accumulation_steps, clip_global_norm=config.clip_global_norm,
            log_gradient_norm=config.get("log_gradient_norm", True), jit_compile=config.get("jit_compile", False))
        stream = data.train_dataset_fn(config.dataset, phase.batch_size, config.seed, config.get("data_dir"),
                                       start_example=batches.examples_seen(step, num_examples))
        return iter(data.distribute(strategy, stream)), make_train_loop(strategy, train_step)

    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, trained_steps=trained_steps)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(write_dir, "checkpoints"), max_to_keep=3)
    history = _History(write_dir)
    # Every worker restores the chief's checkpoint: a non-chief worker writes to a fresh temporary
    # folder each start, and workers resuming from different steps would wait on each other forever.
    latest = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        history.load(int(trained_steps.numpy()), config.model_dir)
    step = int(trained_steps.numpy())

    summaries = Summaries(config.model_dir, enabled=chief)
    progress = Progress(config.num_epochs, enabled=verbose and chief)
    if verbose and chief:
        state = f"resuming at step {step}" if resuming and step else "starting"
        sizes = " -> ".join(str(p.batch_size) for p in plan.phases)
        print(f"kbatch: {state}; {replicas} replica(s), global batch {sizes}, {plan.total_steps} steps "
              f"in {config.num_epochs} epochs. TensorBoard: tensorboard --logdir {config.model_dir}", flush=True)
    started = time.time()
    wall_before = history.wall_seconds

    def save(checkpoint_number):
        history.save(wall_before + time.time() - started)
        manager.save(checkpoint_number=checkpoint_number)

    phase = shown_epoch = None
    epoch_examples, epoch_seconds = 0, 0.0
    try:
        with preemption.handler(strategy, manager, save, lambda: step) as watcher:
            while step < plan.total_steps:
                if plan.phase_at(step) is not phase:
                    phase = plan.phase_at(step)
                    iterator, train_loop = start_phase(phase, step)
                epoch = plan.epoch_at(step)
                epoch_start, epoch_end = plan.epoch_starts[epoch], plan.epoch_starts[epoch + 1]
                if epoch != shown_epoch:
                    progress.start_epoch(epoch, epoch_end - epoch_start)
                    shown_epoch, epoch_examples, epoch_seconds = epoch, 0, 0.0
                num_steps = plan.next_stop(step, config.steps_per_loop)
                loop_start = time.time()
                records = train_loop(iterator, tf.constant(num_steps, tf.int32)).numpy()
                seconds = time.time() - loop_start
                _check_finite(records, step, manager.latest_checkpoint)
                summaries.write_steps(records, step, batches.examples_seen(step, num_examples), phase.batch_size)
                step += num_steps
                trained_steps.assign(step)
                summaries.write_trust_ratios(step, optimizer)
                epoch_examples += num_steps * phase.batch_size
                epoch_seconds += seconds
                col = {name: records[:, i] for i, name in enumerate(RECORD_FIELDS)}
                throughput = epoch_examples / max(epoch_seconds, 1e-9)
                progress.update(step - epoch_start, {
                    "loss": float(col["loss_sum"].sum() / col["count"].sum()),
                    "acc": float(col["correct"].sum() / col["count"].sum()),
                    "lr": float(col["learning_rate"][-1]),
                    "batch": phase.batch_size,
                    "examples/s": throughput,
                })
                evaluating, checkpointing = step in plan.eval_points, step in plan.checkpoint_points
                if evaluating or checkpointing:
                    # Non-synchronized BN keeps one moving mean/variance per replica: evaluate,
                    # checkpoint and save one set, right for the whole data (a collective: every worker).
                    layers.average_moving_statistics(model, strategy)
                if evaluating:
                    loss_sum, correct, count = evaluate(eval_data).numpy()
                    examples = batches.examples_seen(step, num_examples)
                    entry = {"step": step, "epoch": examples / num_examples, "examples": examples,
                             "eval_loss": float(loss_sum / count), "eval_accuracy": float(correct / count),
                             "learning_rate": float(col["learning_rate"][-1]), "global_batch_size": phase.batch_size,
                             "examples_per_second": throughput}
                    history.evals.append(entry)
                    summaries.write_eval(step, {"loss": entry["eval_loss"], "accuracy": entry["eval_accuracy"]})
                    summaries.write_throughput(step, throughput)
                    progress.end_epoch(
                        f"  step {step}: eval loss {entry['eval_loss']:.4f}, "
                        f"eval accuracy {entry['eval_accuracy']:.4f}, lr {entry['learning_rate']:.4g}, batch {phase.batch_size}, {throughput:,.0f} examples/s")
                if checkpointing:
                    save(step)
                if watcher is not None:
                    watcher.save_checkpoint_if_preempted(checkpoint_number=step)
    finally:
        if not chief:  # a worker's own checkpoints serve only the collective saves; the chief's are the run's
            shutil.rmtree(write_dir, ignore_errors=True)

    wall_seconds = wall_before + time.time() - started
    result = _result(config, history, step, batches.examples_seen(step, num_examples), plan, replicas, wall_seconds)
    if chief:
        model.save(os.path.join(config.model_dir, run_dir.MODEL_FILE))
        run_dir.write_json(os.path.join(config.model_dir, run_dir.RESULT_FILE), result)
        if verbose:
            print(f"kbatch: done. final eval accuracy {result['final_eval_accuracy']:.4f} "
                  f"(best {result['best_eval_accuracy']:.4f}), {step} steps, {wall_seconds:.0f} s. "
                  f"Results in {config.model_dir}", flush=True)
    return result


def _check_finite(records, first_step, last_checkpoint):
    losses = records[:, RECORD_FIELDS.index("loss_sum")]
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        raise FloatingPointError(
            f"The training loss is {losses[bad[0]]} at step {first_step + bad[0] + 1}: stopping. "
            f"The last good checkpoint, kept as it was, is {last_checkpoint or '(none yet)'}."
        )
