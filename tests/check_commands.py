"""Checks documented `kbatch-train` command lines in one process, as `kbatch-train ARGS --check`
checks each (tests/test_doc_commands.py): the config file loaded, every `--config.FIELD` override
read by ml_collections, the config resolved and checked, the model built. TensorFlow is imported
once for all of them instead of once per command.

Reads a JSON list of argument lists on stdin; prints a JSON list with, for each, "ok" or the
error in one line."""

import json
import sys

from absl import flags
from ml_collections import config_flags

from kbatch import runtime, train
from kbatch.training import models_of_config, resolve_settings


def check(args):
    """What `kbatch-train ARGS --check` checks, with flags of their own (absl's are global)."""
    argv = ["kbatch-train", *args]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", train.DEFAULT_CONFIG, flag_values=values, sys_argv=argv)
    rest = values(argv)
    if len(rest) > 1:
        raise ValueError(f"unexpected arguments {' '.join(rest[1:])}")
    settings = resolve_settings(values.config)
    runtime.check_backend(settings.backend)
    models_of_config.check_model(settings)
    return "ok"


def main():
    results = []
    for args in json.load(sys.stdin):
        try:
            results.append(check(args))
        except Exception as error:  # each command's own failure, reported for its test to name
            results.append(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
