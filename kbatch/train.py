"""`kbatch-train`: train from an ml_collections config file.

  kbatch-train                                         # the default: configs/mnist1d_cnn.py
  kbatch-train --config=configs/mnist1d_cnn.py --config.batch_size=1024 --config.strategy=cpu:2
  kbatch-train --config=configs/cifar10_resnet20.py --check     # check the config, run nothing

It prints kbatch's own lines (TensorFlow's start-up lines and C++ warnings are hidden by `import
kbatch`: docs/reliability.md); `--verbosity=0` (absl's flag) brings back TensorFlow's and TFDS's
INFO logging, `TF_CPP_MIN_LOG_LEVEL=0` TensorFlow's C++ lines.

Exit codes (`kbatch.training.stops`): 0 done (or already finished), 2 bad input (a config field,
a flag, a damaged file; nothing written), 3 diverged (the loss or a weight stopped being finite;
the last good checkpoint is named), 42 preempted (SIGTERM or a maintenance notice; a checkpoint
was saved: run the same command again to resume), 130 interrupted (Ctrl-C; likewise).
"""

import ast
import importlib.util
import logging
import os
import re
import sys
import traceback
import warnings

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

import kbatch_cli

# configs/ ships inside the package as kbatch/configs, so the default works from any install.
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "mnist1d_cnn.py")


def _verbose(argv):
    return any(re.match(r"--?v(erbosity)?(=|$)", arg) for arg in argv[1:])


def bad_flag_message(argv, error):
    """The one line for a command line that does not parse: an unknown config field named with
    its closest known fields, else the parser's own message."""
    from kbatch.training.config import schema

    for arg in argv[1:]:
        match = re.match(r"--config\.([A-Za-z_][\w.]*)", arg)
        if match and match.group(1).split(".")[0] not in schema.NAMES:
            return schema.unknown_field_message(match.group(1))
    match = re.match(r"flag --config\.(\w+)=(.*?): ", str(error))
    if match and match.group(1) in schema.NAMES:  # a value of the wrong type: the field's own line
        try:
            schema.check_field(match.group(1), _literal(match.group(2)))
        except ValueError as bad:
            return str(bad)
    for arg in argv[1:]:
        path = arg.partition("=")[2]
        if arg.startswith("--config=") and not os.path.isfile(path):
            return f"--config={path}: no such config file."
    if "get_config" in str(error):
        return f"--config: the file has no get_config() returning a config ({str(error).splitlines()[0]})."
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _config_path(argv):
    """The value of `--config` in `argv` (`--config=PATH` or `--config PATH`), or None."""
    for i, arg in enumerate(argv[1:], 1):
        match = re.match(r"--?config(=|$)", arg)
        if match:
            return arg[match.end() :] if match.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
    return None


def _where(error, file):
    """`error`'s type and message, with the line of `file` it was raised at."""
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if os.path.abspath(frame.filename) == os.path.abspath(file)
    ]
    at = f" at line {lines[-1]}" if lines else ""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}{at}" + (f": {text}" if text else "")


def load_config(path):
    """The `ml_collections.ConfigDict` of the config file `path` (`FILE.py`, or `FILE.py:ARG` for
    `get_config(ARG)`, as `--config` takes it). A file that does not load (a syntax error, a failed
    import, a `get_config()` that raises or returns anything but a ConfigDict, a JSON
    file) is a ValueError of one line naming the file, the error and its line."""
    import ml_collections

    file, _, arg = path.partition(":")
    where = f"--config={path}"
    if not os.path.isfile(file):
        raise ValueError(f"{where}: no such config file.")
    if file.endswith(".json"):
        raise ValueError(
            f"{where}: a JSON file; --config takes a Python file whose get_config() returns an "
            "ml_collections.ConfigDict (e.g. kbatch/configs/mnist1d_cnn.py)."
        )
    try:
        spec = importlib.util.spec_from_file_location("kbatch_config_file", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ValueError(f"{where}: SyntaxError at line {error.lineno}: {error.msg}.") from None
    except Exception as error:  # whatever the file raises as it is imported: reported, not a traceback
        raise ValueError(f"{where}: the file does not import: {_where(error, file)}.") from None
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"{where}: the file has no get_config() returning a config.")
    try:
        config = module.get_config(*([arg] if arg else []))
    except Exception as error:  # likewise
        raise ValueError(f"{where}: get_config() raised {_where(error, file)}.") from None
    if not isinstance(config, ml_collections.ConfigDict):
        hint = (
            " (no return statement?)"
            if config is None
            else (
                ": wrap it, ml_collections.ConfigDict({...}), or start from kbatch.configs.base.get_config()"
                if isinstance(config, dict)
                else ""
            )
        )
        raise ValueError(
            f"{where}: get_config() returned {type(config).__name__}, not an ml_collections.ConfigDict{hint}."
        )
    return config


def _literal(text):
    """`text` as the Python literal it spells (1.5, None, (1, 2)), else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _help():
    """`--help`: how to run it, then every config field with its default."""
    from kbatch.training.config import schema

    print(__doc__.strip(), "\n\nConfig fields (--config.FIELD=VALUE):", sep="")
    for field in schema.FIELDS:
        print(f"  {field.name:<30} {field.default!r:<18} {re.sub(r'[`*]', '', field.doc)}")
    sys.exit(0)


def one_line_parser(program, define_flags=None):
    """An absl `flags_parser` for `program`: a command line that does not parse (a misspelled
    `--config.FIELD`, a missing config file, a bad flag value) is one line `program: ...` on
    stderr and exit code 2, not a traceback; INFO logging is off unless `--verbosity` is given.
    `define_flags()` defines the flags that read the command line as they are defined (an
    ml_collections `--config` file and its `--config.FIELD` overrides)."""

    def parse(argv):
        path = _config_path(argv) if define_flags else None
        if path is not None:
            try:
                load_config(path)  # the file's own error, before any override is read
            except ValueError as error:
                kbatch_cli.refuse(program, str(error))
        try:
            if define_flags and "config" not in flags.FLAGS:
                define_flags()
            rest = flags.FLAGS(argv)
            if "config" in flags.FLAGS:
                flags.FLAGS.config.keys()  # a config file that does not load fails here, not in training
        except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as error:
            kbatch_cli.refuse(program, bad_flag_message(argv, error))
        if not _verbose(argv):
            absl_logging.set_verbosity(absl_logging.WARNING)
            logging.getLogger("tensorflow").setLevel(logging.WARNING)
        return rest

    return parse


def _parse(argv):
    """The `--config` flag (defined here: ml_collections reads the command line's overrides as
    it loads the default config) and absl's flag parsing, with one line and exit code 2
    instead of a traceback."""
    if kbatch_cli.wants_help(argv):
        _help()
    return one_line_parser("kbatch-train", _define_flags)(argv)


def _define_flags():
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config file.")
    flags.DEFINE_bool(
        "check", False, "Check the config (every field, and the model it builds) and exit, running and writing nothing."
    )


def _run(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {' '.join(argv[1:])}: settings go in --config.FIELD=VALUE")
    from kbatch import jax_job
    from kbatch.training import train

    if flags.FLAGS.check:
        from kbatch.training import models_of_config

        s = _settings()
        models_of_config.check_model(s)  # what building the model checks (norm_groups against its channels)
        print(
            f"kbatch-train: the config is valid: {s.model} on {s.dataset}, global batch {s.batch_size}, "
            f"{s.num_epochs} epochs, strategy {s.strategy}, model_dir {s.model_dir} (nothing was run or written)."
        )
        return 0
    # tf.data warns on every distributed dataset that options moved into the graph: noise here.
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    settings = _settings()
    if settings.strategy == "parameter_server" and _serve_if_server():
        return 0
    if settings.backend == "jax":
        jax_job.join()  # a multi-process job the environment names, before any JAX computation
    train(settings)
    return 0


def _settings():
    """The config resolved (every field checked), on the backend Keras runs on; on JAX, the
    variables of the multi-process job it joins checked too."""
    from kbatch import jax_job, runtime
    from kbatch.training import resolve_settings

    settings = resolve_settings(flags.FLAGS.config)
    runtime.check_backend(settings.backend)
    if settings.backend == "jax":
        jax_job.job_settings()
    return settings


def _serve_if_server():
    """A parameter-server cluster's worker or ps process serves (until it is stopped) and
    returns True; the coordinator returns False and trains."""
    from kbatch import distribute

    tf_config = distribute.read_tf_config("parameter_server")
    if tf_config["task"]["type"] not in distribute.PS_TASKS:
        return False
    distribute.serve(tf_config)
    return True


def _one_copy_of_tensorflow_logs():
    """TensorFlow gave its Python logger a handler of its own when it was imported (no handler
    was set then); absl's, which `app.run` sets, prints its lines too: keep absl's alone."""
    logger = logging.getLogger("tensorflow")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


def main():
    from kbatch import jax_job
    from kbatch.training import stops

    _one_copy_of_tensorflow_logs()
    app.run(jax_job.leaving_at_once_on_error(stops.reporting("kbatch-train", _run)), flags_parser=_parse)


if __name__ == "__main__":
    main()
