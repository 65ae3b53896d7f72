"""The runner's seams: a user's Keras callbacks get every hook with the logs `model.fit` would
give; a user's own Task trains end to end and agrees across strategies; a user's action sees
every update once; evaluation covers every example once whatever the replica count."""

import math
import os
import weakref

import keras
import numpy as np
import pytest
from smooth_model import smooth_model

import kbatch
from kbatch.training import Action, Task, build_run, train


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", None, logs))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch, logs))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, dict(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", None, dict(logs)))


def test_keras_callback_receives_each_hook_with_the_fit_logs(make_config):
    # Epoch 1: ceil(4000 / 128) = 32 updates, loops of 10, 10, 10, 2; epoch 2 ends at
    # ceil(8000 / 128) = 63: 31 updates, loops of 10, 10, 10, 1.
    config = make_config(num_epochs=2, steps_per_loop=10)
    recorder = Recorder()
    result = train(config, callbacks=[recorder], verbose=False)
    kinds = [c[0] for c in recorder.calls]
    per_epoch = ["epoch_begin"] + ["batch_end"] * 4 + ["epoch_end"]
    assert kinds == ["train_begin"] + per_epoch * 2 + ["train_end"]
    assert recorder.model is not None
    batches = [c[1] for c in recorder.calls if c[0] == "batch_end"]
    assert batches == [9, 19, 29, 31, 9, 19, 29, 30]  # the index, in its epoch, of each loop's last update
    ends = [c for c in recorder.calls if c[0] == "epoch_end"]
    for (_, epoch, logs), evaluation in zip(ends, result["history"]):
        assert logs["val_accuracy"] == evaluation["eval_accuracy"]
        assert logs["val_loss"] == evaluation["eval_loss"]
        assert 0 <= logs["accuracy"] <= 1 and logs["loss"] > 0
    # The epoch's training logs are the means over its updates' examples: the batch logs,
    # weighted by the examples of each loop (10, 10, 10, 2 updates of 128).
    batch_logs = [c[2]["loss"] for c in recorder.calls if c[0] == "batch_end"][:4]
    assert ends[0][2]["loss"] == pytest.approx(np.average(batch_logs, weights=[10, 10, 10, 2]), rel=1e-6)
    assert recorder.calls[-1][2]["val_accuracy"] == result["final_eval_accuracy"]


def test_early_stopping_callback_ends_the_run_after_its_epoch(make_config):
    config = make_config(num_epochs=3, warmup_epochs=0.5)
    # patience 0 and an impossible improvement: stops after the second epoch's evaluation.
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=0, min_delta=1.0)
    result = train(config, callbacks=[stop], verbose=False)
    assert result["steps"] == math.ceil(2 * 4000 / 128)  # the end of epoch 2 of one stream
    assert len(result["history"]) == 2


class SquaredError(Task):
    """Mean squared error against the one-hot label as a real-valued target (Hui & Belkin 2021,
    "Evaluation of Neural Architectures Trained with Square Loss vs Cross-Entropy")."""

    monitor, mode = "loss", "min"

    def per_example(self, labels, outputs):
        target = keras.ops.one_hot(labels, outputs.shape[-1])
        error = keras.ops.sum((outputs - target) ** 2, axis=-1)
        predicted = keras.ops.argmax(outputs, -1)
        hit = keras.ops.cast(keras.ops.equal(predicted, keras.ops.cast(labels, predicted.dtype)), "float32")
        return {"loss": error, "hit": hit}


def test_a_custom_task_trains_end_to_end_and_agrees_on_one_device_and_cpu2(make_config):
    runs = [
        make_config(num_epochs=2, optimizer="adam", base_learning_rate=0.01, strategy=s, target_accuracy=0.9)
        for s in ("one_device", "cpu:2")
    ]
    first, second = [train(c, model_fn=smooth_model, task=SquaredError(), verbose=False) for c in runs]
    assert first["monitor"] == "loss" and "final_eval_accuracy" not in first
    # It learned (the error fell from the first evaluation to the last), and "best" is the lowest.
    assert first["history"][-1]["eval_loss"] < first["history"][0]["eval_loss"]
    assert first["best_eval_loss"] == min(e["eval_loss"] for e in first["history"])
    # The target (0.9, lower is better) is read against the monitored loss.
    reached = [e for e in first["history"] if e["eval_loss"] <= 0.9]
    assert first["steps_to_target"] == (reached[0]["step"] if reached else None)
    # The evaluation is the task's, of the saved model: NumPy's squared error and hit rate.
    model = keras.models.load_model(os.path.join(runs[0].model_dir, "model.keras"))
    x, y = _test_split()
    outputs = model.predict(x, verbose=0)
    assert first["final_eval_loss"] == pytest.approx(np.mean(np.sum((outputs - np.eye(10)[y]) ** 2, -1)), rel=1e-5)
    assert first["final_eval_hit"] == pytest.approx(np.mean(np.argmax(outputs, -1) == y), abs=1e-9)
    weights = [keras.models.load_model(os.path.join(c.model_dir, "model.keras")).get_weights() for c in runs]
    for a, b in zip(*weights):
        np.testing.assert_allclose(b, a, atol=1e-5)
    assert second["final_eval_loss"] == pytest.approx(first["final_eval_loss"], rel=1e-4)


class CountUpdates(Action):
    def __init__(self):
        self.steps, self.ends = [], []

    def after_loop(self, run, loop):
        self.steps.extend(range(loop.first_step + 1, loop.last_step + 1))
        assert loop.records["count"].tolist() == [loop.phase.batch_size] * loop.num_steps

    def end(self, run, result):
        self.ends.append(result["steps"])


def test_a_user_action_sees_every_update_once_across_a_batch_phase_change(make_config):
    config = make_config(num_epochs=2, batch_boundaries=(1.0,), batch_sizes=(256,))
    action = CountUpdates()
    result = train(config, actions=[action], verbose=False)
    assert action.steps == list(range(1, result["steps"] + 1))
    assert action.ends == [result["steps"]]
    assert result["steps"] == math.ceil(4000 / 128) + math.ceil((8000 - 32 * 128) / 256)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_evaluation_counts_every_example_once_when_a_replica_gets_none_of_the_last_batch(make_config, norm):
    """1,000 test examples at batch 64 on 4 replicas: the last batch of 40 leaves 16/16/8/0.
    The evaluation is that of the same weights on one device."""
    runs = {
        s: build_run(make_config(num_epochs=1, batch_size=64, norm=norm, strategy=s)) for s in ("cpu:4", "one_device")
    }
    runs["one_device"].model.set_weights(runs["cpu:4"].model.get_weights())
    totals = {s: run.backend.evaluate() for s, run in runs.items()}
    assert totals["cpu:4"]["count"] == totals["one_device"]["count"] == 1000
    for name in ("loss", "accuracy"):
        assert totals["cpu:4"][name] == pytest.approx(totals["one_device"][name], rel=1e-5)
    x, y = _test_split()
    logits = runs["one_device"].model.predict(x, verbose=0, batch_size=1000)
    assert totals["cpu:4"]["accuracy"] == np.sum(np.argmax(logits, -1) == y)


def _test_split():
    import tensorflow_datasets as tfds

    x, y = tfds.as_numpy(tfds.load("mnist1d/original", split="test", as_supervised=True, batch_size=-1))
    return x[..., None], y


def test_build_run_writes_nothing_when_the_model_cannot_be_built(make_config):
    config = make_config(norm="group", norm_groups=7)  # 7 groups do not divide 32 channels
    with pytest.raises(ValueError, match="groups"):
        build_run(config)
    assert not os.path.exists(config.model_dir)


def test_kbatch_imports_the_runner(make_config):
    assert kbatch.training.train is train


def test_close_lets_go_of_the_input_streams_at_once_and_a_later_loop_starts_them_again(make_config):
    """Freed by reference counting at `close`, not left to the garbage collector (a tf.data
    iterator of several devices can block whoever destroys it for a minute: docs/reliability.md)."""
    run = build_run(make_config(num_epochs=1, batch_size=64, strategy="cpu:2", steps_per_loop=2))
    run.run_loop()
    run.backend.evaluate()
    stream, evaluation = weakref.ref(run._loop), weakref.ref(run.backend._evaluation)
    run.close()
    assert stream() is None and evaluation() is None
    before = run.step
    assert run.run_loop().num_steps == 2 and run.step == before + 2
    run.close()
