"""`train(config)`: the whole run, from a validated config to `result.json`.

config -> strategy -> data -> model -> optimizer and schedule -> steps -> summaries and results.
The loop calls `steps_per_loop` updates per `tf.function` call, stopping early at evaluation and
checkpoint points. The checkpoint holds the model, the optimizer and the step; the input stream is
a pure function of the seed and the examples seen, rebuilt at that point on resume. So a killed
run started again with the same command continues exactly where the last checkpoint left it.
"""

import datetime
import json
import os
import time

import ml_collections
import numpy as np
import tensorflow as tf
import keras

from kbatch import data, distribute, layers, models, optimizers
from kbatch.training import config_check, recipe, run_dir
from kbatch.training.step import RECORD_FIELDS, make_eval_loop, make_train_loop, make_train_step
from kbatch.training.summaries import Progress, Summaries

HISTORY_FILE = "history.json"


def default_model_dir(config):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{config.model}-{config.dataset.replace('/', '_')}-b{config.batch_size}-{stamp}")


def _evaluation_steps(steps_per_epoch, num_epochs, evals_per_epoch):
    points = set()
    for epoch in range(num_epochs):
        for j in range(1, evals_per_epoch + 1):
            points.add(epoch * steps_per_epoch + max(1, round(j * steps_per_epoch / evals_per_epoch)))
    return points


class _History:
    """Evaluation results so far (kept beside the checkpoints, so a resumed run keeps them)."""

    def __init__(self, directory):
        self.path = os.path.join(directory, HISTORY_FILE)
        self.evals, self.wall_seconds = [], 0.0

    def load(self, restored_step):
        if os.path.exists(self.path):
            with open(self.path) as f:
                saved = json.load(f)
            self.evals = [e for e in saved["evals"] if e["step"] <= restored_step]
            self.wall_seconds = saved["wall_seconds"]

    def save(self, wall_seconds):
        run_dir.write_json(self.path, {"evals": self.evals, "wall_seconds": wall_seconds})


def _result(config, history, step, batch_size, replicas, wall_seconds):
    evals = history.evals
    best = max(evals, key=lambda e: e["eval_accuracy"]) if evals else None
    result = {
        "final_eval_accuracy": evals[-1]["eval_accuracy"] if evals else None,
        "final_eval_loss": evals[-1]["eval_loss"] if evals else None,
        "best_eval_accuracy": best["eval_accuracy"] if best else None,
        "best_eval_step": best["step"] if best else None,
        "steps": step,
        "examples_seen": step * batch_size,
        "epochs": config.num_epochs,
        "global_batch_size": batch_size,
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
        model of your own instead of `config.model`.
      verbose: print progress (a Keras progress bar per epoch and one line per evaluation).
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
    steps_per_epoch = info.num_train_examples // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"config.batch_size={config.batch_size} is larger than the {info.num_train_examples} "
            f"training examples of {config.dataset}."
        )
    chief = run_dir.is_chief(strategy)
    write_dir = run_dir.writable_dir(config.model_dir, strategy)
    if chief:
        os.makedirs(config.model_dir, exist_ok=True)
        run_dir.write_json(os.path.join(config.model_dir, run_dir.CONFIG_FILE), run_dir.config_dict(config))

    keras.mixed_precision.set_global_policy(config.mixed_precision or "float32")
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        if model_fn is not None:
            model = model_fn(info)
        else:
            model = models.get(config.model, num_classes=info.num_classes, input_shape=info.input_shape,
                               norm=config.norm, norm_kwargs=recipe.norm_kwargs(config))
        optimizer = optimizers.build(config, recipe.learning_rate_schedule(config, steps_per_epoch))
        if config.mixed_precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        trained_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="trained_steps")

    eval_batch = config.batch_size // config.accumulation_steps
    eval_data = data.distribute(strategy, data.eval_dataset_fn(config.dataset, eval_batch, config.get("data_dir")))
    train_step = make_train_step(
        strategy, model, optimizer, global_batch_size=config.batch_size, accumulation_steps=config.accumulation_steps,
        clip_global_norm=config.clip_global_norm, log_gradient_norm=config.get("log_gradient_norm", True),
        jit_compile=config.get("jit_compile", False))
    train_loop = make_train_loop(strategy, train_step)
    evaluate = make_eval_loop(strategy, model)

    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, trained_steps=trained_steps)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(write_dir, "checkpoints"), max_to_keep=3)
    history = _History(write_dir)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        history.load(int(trained_steps.numpy()))
    step = int(trained_steps.numpy())
    iterator = iter(data.distribute(strategy, data.train_dataset_fn(
        config.dataset, config.batch_size, config.seed, config.get("data_dir"), start_example=step * config.batch_size)))

    total_steps = config.num_epochs * steps_per_epoch
    eval_points = _evaluation_steps(steps_per_epoch, config.num_epochs, config.evals_per_epoch)
    every = config.checkpoint_every or steps_per_epoch
    summaries = Summaries(config.model_dir, enabled=chief)
    progress = Progress(config.num_epochs, enabled=verbose and chief)
    if verbose and chief:
        state = f"resuming at step {step}" if resuming and step else "starting"
        print(f"kbatch: {state}; {replicas} replica(s), global batch {config.batch_size}, "
              f"{steps_per_epoch} steps/epoch, {total_steps} steps. TensorBoard: "
              f"tensorboard --logdir {config.model_dir}", flush=True)
    started = time.time()
    wall_before = history.wall_seconds
    epoch_examples, epoch_seconds = 0, 0.0
    while step < total_steps:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        if in_epoch == 0 or epoch_examples == 0:
            progress.start_epoch(epoch, steps_per_epoch)
        next_eval = min(p for p in eval_points if p > step)
        next_checkpoint = (step // every + 1) * every
        num_steps = min(config.steps_per_loop, next_eval - step, next_checkpoint - step, total_steps - step)
        loop_start = time.time()
        records = train_loop(iterator, tf.constant(num_steps, tf.int32)).numpy()
        seconds = time.time() - loop_start
        _check_finite(records, step, manager.latest_checkpoint)
        summaries.write_steps(records, step, step * config.batch_size, config.batch_size)
        step += num_steps
        trained_steps.assign(step)
        epoch_examples += num_steps * config.batch_size
        epoch_seconds += seconds
        col = {name: records[:, i] for i, name in enumerate(RECORD_FIELDS)}
        progress.update(step - epoch * steps_per_epoch, {
            "loss": float(col["loss_sum"].sum() / col["count"].sum()),
            "acc": float(col["correct"].sum() / col["count"].sum()),
            "lr": float(col["learning_rate"][-1]),
            "examples/s": epoch_examples / max(epoch_seconds, 1e-9),
        })
        if step in eval_points or step % every == 0 or step == total_steps:
            # Non-synchronized BN keeps one moving mean/variance per replica: evaluate,
            # checkpoint and save one set, right for the whole data (a collective: every worker).
            layers.average_moving_statistics(model, strategy)
        if step in eval_points:
            loss_sum, correct, count = evaluate(eval_data).numpy()
            entry = {"step": step, "epoch": step / steps_per_epoch, "examples": step * config.batch_size,
                     "eval_loss": float(loss_sum / count), "eval_accuracy": float(correct / count),
                     "learning_rate": float(col["learning_rate"][-1]), "global_batch_size": config.batch_size,
                     "examples_per_second": epoch_examples / max(epoch_seconds, 1e-9)}
            history.evals.append(entry)
            summaries.write_eval(step, {"loss": entry["eval_loss"], "accuracy": entry["eval_accuracy"]})
            summaries.write_throughput(step, entry["examples_per_second"])
            progress.end_epoch(
                f"  step {step}: eval loss {entry['eval_loss']:.4f}, eval accuracy {entry['eval_accuracy']:.4f}, "
                f"lr {entry['learning_rate']:.4g}, {entry['examples_per_second']:,.0f} examples/s")
        if step % every == 0 or step == total_steps:
            history.save(wall_before + time.time() - started)
            manager.save(checkpoint_number=step)
        if step % steps_per_epoch == 0:
            epoch_examples, epoch_seconds = 0, 0.0

    wall_seconds = wall_before + time.time() - started
    result = _result(config, history, step, config.batch_size, replicas, wall_seconds)
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
