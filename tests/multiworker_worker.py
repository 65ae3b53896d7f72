"""One worker of tests/test_multiworker.py:

  python tests/multiworker_worker.py CONFIG_JSON [OTHER_MODEL_DIR]

Trains the config (JSON, as `ConfigDict.to_json` writes it) with `smooth_model`, a user's model
through `train(config, model_fn=...)`, which `kbatch-train` has no flag for. The launcher starts
one such process per worker, each with its own TF_CONFIG. With OTHER_MODEL_DIR, the workers
other than the chief get that `model_dir` (as on hosts that do not share a disk), so a test can
see that they write nothing there. Under `strategy="parameter_server"` the worker and ps tasks
serve, and the chief (the coordinator) trains.
"""

import json
import os
import sys

import ml_collections
from smooth_model import smooth_model


def main(config_json, other_model_dir=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kbatch.training import train

    config = ml_collections.ConfigDict(json.loads(config_json))
    tf_config = json.loads(os.environ["TF_CONFIG"])
    if config.strategy == "parameter_server" and tf_config["task"]["type"] != "chief":
        from kbatch import distribute

        return distribute.serve(tf_config)
    if other_model_dir and tf_config["task"]["index"] != 0:
        config.model_dir = other_model_dir
    train(config, model_fn=smooth_model, verbose=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
