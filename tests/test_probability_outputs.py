"""#32.3: the default task takes logits; a model ending in a softmax or sigmoid (as the keras-io
examples end) is refused in one line naming the layer and the fix, before anything is written,
on TensorFlow and on JAX, for Sequential, functional and subclassed models. A model giving
logits, and a task of one's own that takes probabilities, are not refused."""

import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import probability_models

from kbatch.training import Classification

HERE = pathlib.Path(__file__).resolve().parent
FIX = (
    r"; kbatch's Classification takes logits and applies the softmax in its loss: remove the final activation "
    r"\(Dense\(10\) gives logits\), or pass a task of your own that takes probabilities\.$"
)
EXPECTED = {
    "sequential Dense softmax": r"^model_fn's model ends in a softmax: its layer 'probs' \(Dense\)" + FIX,
    "functional Softmax layer": r"^model_fn's model ends in a softmax: its layer 'probs' \(Softmax\)" + FIX,
    "functional Activation sigmoid": r"^model_fn's model ends in a sigmoid: its layer 'probs' \(Activation\)" + FIX,
    "functional ops.softmax": r"^model_fn's model ends in a softmax: its layer '\w+' \(Softmax\)" + FIX,
    "nested Sequential": r"^model_fn's model ends in a softmax: its layer '\w+' \(Softmax\)" + FIX,
    "subclassed softmax": r"^model_fn's model gives probabilities \(each output row is non-negative and sums to 1 "
    r"on the first evaluation examples\)" + FIX,
    "functional logits": None,
    "subclassed logits": None,
    "softmax with a task of probabilities": None,
}


def _check(answers):
    assert set(answers) == set(EXPECTED)
    for case, (message, written) in answers.items():
        if EXPECTED[case] is None:
            assert message is None and written, case
        else:
            assert message is not None and not written, case
            assert len(message.splitlines()) == 1, case
            assert re.search(EXPECTED[case], message), (case, message)


def test_the_default_task_and_a_softmax_model_train_another_loss():
    """Why #32.3 refuses: on a model's softmax output Classification takes a second softmax, and
    its loss is not the cross-entropy of the model's probabilities (Keras's own loss)."""
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")
    labels = np.array([0, 2])
    theirs = Classification().per_example(labels, probabilities)["loss"]
    keras_loss = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras_loss), -np.log([0.7, 0.8]), rtol=1e-6)
    assert not np.allclose(keras.ops.convert_to_numpy(theirs), -np.log([0.7, 0.8]), rtol=0.1)


def test_probability_outputs_are_refused_on_tensorflow(tmp_path):
    _check(probability_models.answers(str(tmp_path)))


def test_probability_outputs_are_refused_on_jax(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}"}
    run = subprocess.run(
        [sys.executable, str(HERE / "probability_models.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    _check(json.loads(run.stdout.strip().splitlines()[-1]))
