"""`kbatch-train`: train from an ml_collections config file.

  kbatch-train                                         # the default: configs/mnist1d_cnn.py
  kbatch-train --config=configs/mnist1d_cnn.py --config.batch_size=1024 --config.strategy=cpu:2

It prints kbatch's own lines and the warnings that matter; `--verbosity=0` (absl's flag) brings
back TensorFlow's and TFDS's INFO logging. (TensorFlow 2.21 prints three C++ lines when it is
imported, before its logging is set up: no setting hides them.)

Exit codes: 0 done, 2 bad input (a config field, a flag; nothing written), 3 diverged (the loss
stopped being finite; the last good checkpoint is named), 42 preempted (a checkpoint was saved:
run the same command again to resume).
"""

import logging
import os
import re
import sys
import warnings

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

# configs/ ships inside the package as kbatch/configs, so the default works from any install.
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "mnist1d_cnn.py")
BAD_INPUT, DIVERGED = 2, 3


def _verbose(argv):
    return any(re.match(r"--?v(erbosity)?(=|$)", arg) for arg in argv[1:])


def _bad_flag(argv, error):
    """The one line for a command line that does not parse: an unknown config field named with
    its closest known fields, else the parser's own message."""
    from kbatch.training import schema

    for arg in argv[1:]:
        match = re.match(r"--config\.([A-Za-z_][\w.]*)", arg)
        if match and match.group(1).split(".")[0] not in schema.NAMES:
            return schema.unknown_field_message(match.group(1))
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _parse(argv):
    """The `--config` flag (defined here: ml_collections reads the command line's overrides as
    it loads the default config) and absl's flag parsing, with one line and exit code 2
    instead of a traceback."""
    try:
        if "config" not in flags.FLAGS:
            config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config file.")
        rest = flags.FLAGS(argv)
        flags.FLAGS.config.keys()  # a config file that does not load fails here, not in training
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as error:
        print(f"kbatch-train: {_bad_flag(argv, error)}", file=sys.stderr)
        sys.exit(BAD_INPUT)
    if not _verbose(argv):
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    return rest


def _run(argv):
    if len(argv) > 1:
        print(f"kbatch-train: unexpected arguments {' '.join(argv[1:])}: settings go in --config.FIELD=VALUE",
              file=sys.stderr)
        return BAD_INPUT
    from kbatch.training import preemption, train  # after flag parsing: --help stays fast

    # tf.data warns on every distributed dataset that options moved into the graph: noise here.
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")

    try:
        train(flags.FLAGS.config)
    except ValueError as error:  # bad config: one clear line, not a traceback
        print(f"kbatch-train: {error}", file=sys.stderr)
        return BAD_INPUT
    except FloatingPointError as error:
        print(f"kbatch-train: {error}", file=sys.stderr)
        return DIVERGED
    except preemption.Preempted as stop:  # a cluster manager restarts on this code
        print(f"kbatch-train: {stop}", file=sys.stderr)
        return preemption.RESTART_EXIT_CODE
    return 0


def main():
    app.run(_run, flags_parser=_parse)


if __name__ == "__main__":
    main()
