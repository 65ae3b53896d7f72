"""The LM config (configs/lm_bytes.py), shrunk to train for a few updates, and an evaluation of a
saved model written in NumPy, for tests/test_lm_config.py; run as a script on either backend:

  python tests/lm_run.py train MODEL_DIR BACKEND   # prints result.json's fields (not the history)
  python tests/lm_run.py evaluate MODEL_DIR        # prints `numpy_evaluation` of MODEL_DIR/model.keras

Start it with KERAS_BACKEND set to the backend.
"""

import json
import math
import os
import sys

import numpy as np

from kbatch.data.pystdlib_bytes import PAD, VOCAB_SIZE, make_pystdlib_bytes

# Shrunk: a one-block model of width 32, batch 16, an evaluation every 4 updates (176 per epoch of
# 704 updates); the run stops after its second evaluation (`StopAfterEvaluations`).
SHRUNK = {
    "model_width": 32,
    "model_layers": 1,
    "model_heads": 2,
    "batch_size": 16,
    "base_learning_rate": 2e-2,
    "warmup_epochs": 0.005,
    "evals_per_epoch": 176,
    "steps_per_loop": 4,
}
EVALUATIONS = 2
SEQUENCE_LENGTH = 128
UNIFORM_LOSS = math.log(VOCAB_SIZE)  # nats per byte when every token is equally likely


def shrunk_config(model_dir, backend):
    from kbatch.configs import lm_bytes

    config = lm_bytes.get_config()
    config.update({**SHRUNK, "backend": backend, "model_dir": model_dir})
    return config


def train(model_dir, backend):
    from kbatch.training import Action
    from kbatch.training import train as kbatch_train

    class StopAfterEvaluations(Action):
        after = ("Evaluate",)

        def after_loop(self, run, loop):
            if len(run.history.evals) >= EVALUATIONS:
                run.model.stop_training = True

    return kbatch_train(shrunk_config(model_dir, backend), actions=[StopAfterEvaluations()], verbose=False)


def numpy_evaluation(model_dir):
    """The saved model's loss (mean over sequences of the mean over unpadded targets), perplexity
    and token accuracy on pystdlib_bytes/seq128's evaluation split, from its logits in NumPy."""
    import keras

    import kbatch  # noqa: F401 (registers kbatch's layers for loading)

    data = make_pystdlib_bytes(SEQUENCE_LENGTH)
    model = keras.models.load_model(os.path.join(model_dir, "model.keras"))
    logits = np.asarray(model.predict(data["x_test"], batch_size=128, verbose=0), np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    targets, valid = data["y_test"], data["y_test"] != PAD
    nll = -np.take_along_axis(log_probs, np.where(valid, targets, 0)[..., None], -1)[..., 0] * valid
    correct = (logits.argmax(-1) == targets) & valid
    tokens = valid.sum(1)
    return {
        "loss": float(np.mean(nll.sum(1) / tokens)),
        "perplexity": float(np.exp(nll.sum() / tokens.sum())),
        "token_accuracy": float(correct.sum() / tokens.sum()),
    }


def summarized(result):
    """result.json's fields, the history's evaluation losses (`eval_losses`) in place of the history."""
    return {key: value for key, value in result.items() if key != "history"} | {
        "eval_losses": [entry["eval_loss"] for entry in result["history"]]
    }


if __name__ == "__main__":
    if sys.argv[1] == "train":
        print(json.dumps(summarized(train(sys.argv[2], sys.argv[3]))))
    else:
        print(json.dumps(numpy_evaluation(sys.argv[2])))
