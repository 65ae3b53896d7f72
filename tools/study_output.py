"""What the tools share: how they run (`run_tool`: `--help` exits 0, a command line that does not
parse or a bad input is one line `program: ...` on stderr and exit code 2), the refusal to
overwrite a table or plot a person made or to start work whose outputs cannot be written
(critical_batch, sharpness_report, staleness_report, switchable_weights, throughput, sweep), the
import of a kbatch.study module without Keras and TensorFlow (`import_numpy_only`), the
batch-size axis of their plots, and the log axis over epochs of the diagnostics' plots.

Kept free of kbatch, Keras and TensorFlow, so `--help` and a bad flag are answered before
TensorFlow starts, and the NumPy-only tools (stragglers) never start it."""

import importlib
import importlib.util
import os
import re
import sys
import types

from absl import app, flags
from absl import logging as absl_logging

BAD_INPUT = 2  # kbatch.training.stops.BAD_INPUT, without importing kbatch (and TensorFlow)
HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")
CONFIG_HELP = ("the config file (default: kbatch/configs/mnist1d_cnn.py); --config.FIELD=VALUE overrides a "
               "field (kbatch-train --help lists them)")
# --config and its overrides (--config.FIELD=VALUE, --noconfig.FIELD for False): parsed once the config file loads
CONFIG_ARG = re.compile(r"--(no)?config([.=]|$)")


def refuse_existing(outputs, overwrite):
    """ValueError naming the flag if an output path (a dict flag -> path) is empty, its folder is
    missing or not writable, or it exists and `overwrite` is False."""
    for flag, path in outputs.items():
        if not path:
            raise ValueError(f"--{flag} is required.")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ValueError(f"--{flag}={path}: the folder {folder} does not exist (create it first).")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"--{flag}={path}: the folder {folder} is not writable.")
        if os.path.exists(path) and not overwrite:
            raise ValueError(f"--{flag}={path} exists: refusing to overwrite it (pass --overwrite).")


def log_over_epochs(ax, ylabel):
    """A log y axis against epochs, with a grid and a legend (the diagnostics' plots over training)."""
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)


def batch_size_axis(ax, batches, label):
    """A log2 x axis with a tick at each batch size tried, as `kbatch.study.plots.batch_axis` draws
    it (not imported from there: kbatch.study.plots imports kbatch, Keras and TensorFlow)."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel(label)
    ax.grid(alpha=0.3, which="both")


def run_tool(program, main, doc, flags_parser=None, config_help=None):
    """Run a tool's `main(argv)` with absl, as `kbatch-train` runs: `--help` prints `doc` and the
    tool's flags (`--helpfull`: absl's too; `config_help`, the help of a `--config` flag that
    `flags_parser` defines, as it loads a config) and exits 0; `flags_parser` (default
    `one_line_parser(program)`) parses the command line; a stop `main` raises is `reporting`'s one
    line and exit code."""
    if wants_help(sys.argv):
        print_help(doc, full="--helpfull" in sys.argv, config_help=config_help)
        sys.exit(0)
    app.run(reporting(program, main), flags_parser=flags_parser or one_line_parser(program))


def wants_help(argv):
    """Whether the command line (before any `--`, where a launched command starts) asks for help."""
    own = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    return any(arg in HELP_FLAGS for arg in own)


def print_help(doc, full=False, config_help=None):
    """`doc` (the tool's docstring), then the flags its own modules define (`full`: every module's),
    with their defaults."""
    print(doc.strip(), "\n", sep="")
    if config_help:
        print(f"  --config: {config_help}\n")
    for module, defined in flags.FLAGS.flags_by_module_dict().items():
        if defined and (full or not module.startswith("absl")):
            print(flags.FLAGS.module_help(module), "\n", sep="")


def one_line_parser(program):
    """An absl `flags_parser`: a command line that does not parse (an unknown flag, a bad value) is
    one line `program: ...` on stderr and exit code 2; INFO logging is off."""

    def parse(argv):
        try:
            rest = flags.FLAGS(argv)
        except flags.Error as error:
            refuse(program, str(error))
        absl_logging.set_verbosity(absl_logging.WARNING)
        return rest

    return parse


def refuse_unknown(program, argv):
    """Parse the flags defined so far (then unparse them): an unknown flag or a stray argument (not
    `--config` or its `--config.FIELD` overrides, which the config file's flag reads later) is one
    line and exit code 2, before kbatch and TensorFlow are imported."""
    try:
        rest = flags.FLAGS(argv, known_only=True)
    except flags.Error as error:
        refuse(program, str(error))
    unknown = [arg for arg in rest[1:] if not CONFIG_ARG.match(arg)]
    if unknown:
        refuse(program, f"unknown flag or argument {unknown[0]} (see --help).")
    flags.FLAGS.unparse_flags()  # parsed again with --config: a repeated flag must not count twice


def refuse(program, message):
    """One line `program: message` on stderr, exit code 2."""
    print(f"{program}: {message.splitlines()[0] if message else 'bad input'}", file=sys.stderr)
    sys.exit(BAD_INPUT)


def reporting(program, main):
    """`main` for `absl.app.run`: a ValueError is one line and exit code 2, and when kbatch is
    loaded, every stop of `kbatch.training.stops` is its line and code (3, 42, 130)."""

    def run(argv):
        try:
            return main(argv)
        except Exception as error:  # noqa: BLE001 - re-raised unless it is a known stop
            stops = sys.modules.get("kbatch.training.stops")
            codes = stops.CODES if stops else ((ValueError, BAD_INPUT),)
            code = next((code for kind, code in codes if isinstance(error, kind)), None)
            if code is None:
                raise
            print(f"{program}: {str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)
            return code

    return run


def import_numpy_only(name):
    """The module `kbatch.study.<name>`, imported without running `kbatch/__init__.py` (which
    imports Keras and TensorFlow): for the study modules that need neither (`step_times`,
    `stragglers`: NumPy; `children`) in a tool that imports nothing else of kbatch (stragglers,
    launch_local). The packages are then bare modules on their folders."""
    if "kbatch" not in sys.modules:
        spec = importlib.util.find_spec("kbatch")
        for package, folder in (("kbatch", spec.submodule_search_locations[0]),
                                ("kbatch.study", os.path.join(spec.submodule_search_locations[0], "study"))):
            module = types.ModuleType(package)
            module.__path__ = [folder]
            sys.modules[package] = module
    return importlib.import_module(f"kbatch.study.{name}")
