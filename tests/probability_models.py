"""Models that end in probabilities, as keras-io examples write them, and `build_run`'s answer to
each on the backend Keras runs (tests/test_probability_outputs.py runs it in-process on
TensorFlow and in a subprocess on JAX):

  python tests/probability_models.py ROOT_DIR    # prints {case: [refusal or null, folder written]}
"""

import json
import os
import sys

import keras
import user_data

import kbatch


class _Subclassed(keras.Model):
    """A subclassed classifier, its structure hidden: softmax at the end or not."""

    def __init__(self, classes, softmax, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(16, activation="tanh")
        self.head = keras.layers.Dense(classes)
        self.softmax = softmax

    def call(self, inputs):
        logits = self.head(self.hidden(inputs))
        return keras.ops.softmax(logits) if self.softmax else logits


def _functional(info, ending):
    inputs = keras.Input(info.input_shape)
    return keras.Model(inputs, ending(keras.layers.Dense(info.num_classes, name="head")(inputs)))


def _nested(info):
    inner = keras.Sequential(
        [keras.Input(info.input_shape), keras.layers.Dense(info.num_classes), keras.layers.Softmax()]
    )
    inputs = keras.Input(info.input_shape)
    return keras.Model(inputs, inner(inputs))


class Probabilities(kbatch.training.Task):
    """A user's task that takes probabilities: cross-entropy of the probability of the label."""

    def per_example(self, labels, outputs):
        return {"loss": keras.losses.sparse_categorical_crossentropy(labels, outputs)}


MODELS = {
    "sequential Dense softmax": lambda info: keras.Sequential(
        [keras.Input(info.input_shape), keras.layers.Dense(info.num_classes, activation="softmax", name="probs")]
    ),
    "functional Softmax layer": lambda info: _functional(info, keras.layers.Softmax(name="probs")),
    "functional Activation sigmoid": lambda info: _functional(info, keras.layers.Activation("sigmoid", name="probs")),
    "functional ops.softmax": lambda info: _functional(info, keras.ops.softmax),
    "nested Sequential": _nested,
    "subclassed softmax": lambda info: _Subclassed(info.num_classes, softmax=True),
    "functional logits": user_data.seeded_mlp,
    "subclassed logits": lambda info: _Subclassed(info.num_classes, softmax=False),
}


def answers(root):
    """{case: [build_run's ValueError message or None, whether the run's folder exists after]};
    the last case is a softmax model given to a task that takes probabilities."""
    cases = [(name, model_fn, None) for name, model_fn in MODELS.items()]
    cases.append(("softmax with a task of probabilities", MODELS["sequential Dense softmax"], Probabilities()))
    found = {}
    for number, (name, model_fn, task) in enumerate(cases):
        model_dir = os.path.join(root, f"run{number}")
        config = {**user_data.CONFIG, "model_dir": model_dir, "backend": keras.backend.backend()}
        try:
            kbatch.training.build_run(config, data=user_data.source(), model_fn=model_fn, task=task).close()
            message = None
        except ValueError as error:
            message = str(error)
        found[name] = [message, os.path.exists(os.path.join(model_dir, "config.json"))]
    return found


if __name__ == "__main__":
    print(json.dumps(answers(sys.argv[1])))
