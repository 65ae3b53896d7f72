"""docs/keras_fit.md's example, `examples/keras_fit_large_batch.py`, runs every step of the guide
on the backend Keras runs on (CI runs this file on TensorFlow and on JAX): the author's script and
the large-batch one train, the large-batch model holds what each step put there, and it predicts
the same after a `.keras` save and load."""

import importlib.util
import math
import pathlib
import sys

import keras
import pytest

import kbatch

pytestmark = [pytest.mark.components]

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def example():
    sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location("keras_fit_large_batch", EXAMPLES / "keras_fit_large_batch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(EXAMPLES))


def test_the_example_trains_both_scripts_and_the_loaded_model_predicts_the_same(example, capsys):
    base_accuracy, accuracy, difference = example.main(["--optimizer=sgd", "--epochs=3", "--num_train=3000"])
    assert base_accuracy > 0.45 and accuracy > 0.45  # 4 classes: chance is 0.25
    assert difference <= 1e-6
    assert "learning_rate 0.05 -> 0.4" in capsys.readouterr().out


def test_the_large_batch_model_holds_each_step(example):
    data = example.load_data(1024, 256)
    logs = []
    _, _, model = example.large_batch_run("adam", data, 1, 8, accumulation=2, log=logs.append)
    # STEP 1: Adam at 8x the batch, by Malladi et al.'s square-root rule (beta**k, epsilon / sqrt(k)).
    optimizer = model.optimizer
    assert optimizer.beta_1 == pytest.approx(0.9**8) and optimizer.beta_2 == pytest.approx(0.999**8)
    assert optimizer.epsilon == pytest.approx(1e-7 / math.sqrt(8))
    assert any("beta_1 0.9 -> 0.430" in line for line in logs)
    # STEP 2: every BatchNormalization is ghost BN over 32 examples, its momentum 0.99**8.
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 2
    assert all(isinstance(layer, kbatch.layers.GhostBatchNormalization) for layer in norms)
    assert all(layer.virtual_batch_size == 32 and layer.momentum == pytest.approx(0.99**8) for layer in norms)
    # STEPS 3, 4: warmup read at the update count, with Keras's accumulation of 2 micro-batches.
    schedule = optimizer._learning_rate
    assert isinstance(schedule, kbatch.schedules.PerUpdate) and schedule.gradient_accumulation_steps == 2
    assert isinstance(schedule.schedule, kbatch.schedules.Warmup)
    assert optimizer.gradient_accumulation_steps == 2


def test_bad_flags_are_one_line(example, capsys):
    with pytest.raises(SystemExit) as stopped:
        example.main(["--multiplier=8", "--accumulation=3"])
    assert stopped.value.code == 2
    assert "--accumulation" in capsys.readouterr().err.strip().splitlines()[-1]
