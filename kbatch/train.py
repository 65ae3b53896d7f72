"""`kbatch-train`: train from an ml_collections config file.

  kbatch-train                                         # the default: configs/mnist1d_cnn.py
  kbatch-train --config=configs/mnist1d_cnn.py --config.batch_size=1024 --config.strategy=cpu:2

Exit codes: 0 done, 2 bad config (nothing written), 42 preempted (a checkpoint was saved: run the
same command again to resume).
"""

import os
import sys
import warnings

from absl import app
from ml_collections import config_flags

# configs/ ships inside the package as kbatch/configs, so the default works from any install.
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "mnist1d_cnn.py")
_CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config file.")


def _run(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from kbatch.training import preemption, train  # after flag parsing: --help stays fast

    # tf.data warns on every distributed dataset that options moved into the graph: noise here.
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")

    try:
        train(_CONFIG.value)
    except ValueError as error:  # bad config: one clear line, not a traceback
        print(f"kbatch-train: {error}", file=sys.stderr)
        return 2
    except preemption.Preempted as stop:  # a cluster manager restarts on this code
        print(f"kbatch-train: {stop}", file=sys.stderr)
        return preemption.RESTART_EXIT_CODE
    return 0


def main():
    app.run(_run)


if __name__ == "__main__":
    main()
