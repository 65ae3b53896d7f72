"""One worker of tests/test_multiworker.py:

  python tests/multiworker_worker.py CONFIG_JSON [OTHER_MODEL_DIR]

Trains the config (JSON, as `ConfigDict.to_json` writes it) with `smooth_model`, a user's model
through `train(config, model_fn=...)`, which `kbatch-train` has no flag for. The launcher starts
one such process per worker, each with its own TF_CONFIG. With OTHER_MODEL_DIR, the workers
other than the chief get that `model_dir` (as on hosts that do not share a disk), so a test can
see that they write nothing there.
"""

import json
import os
import sys

import keras
import ml_collections


def smooth_model(info):
    """Conv1D -> LayerNormalization -> tanh -> Dense: no batch statistics, no ReLU kink.

    Runs on different strategies sum the same numbers in a different order (float32 rounding,
    about 1e-7); a smooth activation keeps such differences at that level, where a ReLU can flip
    a unit and make them grow, so equal weights can be asserted."""
    inputs = keras.Input(info.input_shape)
    x = keras.layers.Conv1D(16, 5, strides=2, padding="same")(inputs)
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.Activation("tanh")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(info.num_classes)(x))


def main(config_json, other_model_dir=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kbatch.training import train  # MultiWorkerMirroredStrategy is created inside, first

    config = ml_collections.ConfigDict(json.loads(config_json))
    if other_model_dir and json.loads(os.environ["TF_CONFIG"])["task"]["index"] != 0:
        config.model_dir = other_model_dir
    train(config, model_fn=smooth_model, verbose=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
