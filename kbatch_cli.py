"""How kbatch's command lines run (the scripts in tools/ and benchmarks/, and `kbatch-train`'s
stops): `run_tool` (`--help` exits 0; a command line that does not parse or a bad input is one
line `program: ...` on stderr and exit code 2), the flags several scripts share (`--config`, a
sweep's), `reporting` (each stop of `kbatch.training.stops` its line and code, and a late Ctrl-C
never kills the process with -2), the refusal to overwrite an output or to start work whose
outputs cannot be written (`refuse_existing`), and `import_light`: a kbatch module that needs
only NumPy, imported without Keras and TensorFlow.

A top-level module, not `kbatch.cli`: any `kbatch.*` import first runs `kbatch/__init__.py`,
which must import Keras (and with it TensorFlow or JAX) to register kbatch's serializables and
TFDS builders. Free of kbatch, so `--help` and a bad flag are answered before TensorFlow starts,
and the NumPy-only tools (stragglers, launch_local) never start it."""

import _thread
import contextlib
import importlib
import importlib.util
import os
import re
import signal
import sys
import threading
import types

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

BAD_INPUT, INTERRUPTED = 2, 130  # kbatch.training.stops' codes, without importing kbatch (and TensorFlow)
HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")
CONFIG_HELP = (
    "the config file (default: kbatch/configs/mnist1d_cnn.py); --config.FIELD=VALUE overrides a "
    "field (kbatch-train --help lists them)"
)
# --config and its overrides (--config.FIELD=VALUE, --noconfig.FIELD for False): parsed once the config file loads
CONFIG_ARG = re.compile(r"--(no)?config([.=]|$)")


def define_config_flag(help_text):
    """`--config`, an ml_collections config file (default: kbatch/configs/mnist1d_cnn.py, found
    without importing kbatch): define it as the command line is parsed, for it reads its
    `--config.FIELD` overrides as it loads."""
    folder = importlib.util.find_spec("kbatch").submodule_search_locations[0]
    config_flags.DEFINE_config_file("config", os.path.join(folder, "configs", "mnist1d_cnn.py"), help_text)


def define_sweep_flags():
    """Define the flags of a sweep's command line (tools/sweep.py, tools/lr_search.py); a function
    that returns their values once parsed, the options `kbatch.study.sweep_command` reads."""
    holders = [
        flags.DEFINE_string("sweep_dir", None, "The sweep's folder: its points' runs, its report."),
        flags.DEFINE_multi_string("grid", [], "An axis FIELD=VALUE[,VALUE...]; repeat for more axes."),
        flags.DEFINE_string("spec", None, "A Python file defining SWEEP (see the docstring)."),
        flags.DEFINE_list(
            "targets",
            [],
            "Test accuracies to count steps to (default: the spec's, else the base config's target_accuracy).",
        ),
        flags.DEFINE_integer("processes", 1, "Points trained at a time (1: in this process)."),
        flags.DEFINE_bool(
            "report_only",
            False,
            "Train nothing: report the points the flags give, or with no "
            "--grid/--spec every point --sweep_dir holds, as they are.",
        ),
        flags.DEFINE_bool("retry_failed", False, "Train failed and diverged points again."),
        flags.DEFINE_string("output_prefix", None, "Also write the report to PREFIX.csv, PREFIX.md, PREFIX.png."),
        flags.DEFINE_bool("overwrite", False, "Replace existing --output_prefix files."),
    ]
    return lambda: types.SimpleNamespace(**{holder.name: holder.value for holder in holders})


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
    own = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
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


def reporting(program, main, codes=None, interrupted="interrupted at once (Ctrl-C)."):
    """`main` for `absl.app.run`: a stop of `codes` ((exception type, exit code) pairs; default
    `kbatch.training.stops.CODES` once kbatch is loaded, else a ValueError is 2) is one line
    `program: message` on stderr and its code, a KeyboardInterrupt is `program: interrupted` and
    130; Ctrl-C is ignored once `main` returns or raises (`ignore_late_interrupts`)."""

    def run(argv):
        try:
            try:
                with interrupts_not_swallowed():
                    return main(argv)
            finally:
                ignore_late_interrupts()
        except KeyboardInterrupt:
            print(f"{program}: {interrupted}", file=sys.stderr)
            return INTERRUPTED
        except Exception as error:  # noqa: BLE001 - re-raised unless it is a known stop
            code = next((code for kind, code in codes or _known_stops() if isinstance(error, kind)), None)
            if code is None:
                raise
            print(f"{program}: {str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)
            return code

    return run


@contextlib.contextmanager
def interrupts_not_swallowed():
    """Within: a Ctrl-C whose KeyboardInterrupt landed in a garbage collector's callback (a weakref's,
    a `__del__`), where Python cannot raise it and prints a traceback instead, is delivered again to
    the main thread 10 ms later, from a timer thread (from the hook itself it would be raised inside
    the hook, and swallowed again), so it stops the process as any Ctrl-C does. Where SIGINT is
    ignored by then (`ignore_late_interrupts`), it is dropped. On leaving, a `sys.unraisablehook`
    installed over this one meanwhile (Orbax's, `orbax_checkpoints`) stays: this one then passes
    every report on."""
    previous, within = sys.unraisablehook, [True]

    def hook(unraisable):
        if not (within[0] and issubclass(unraisable.exc_type, KeyboardInterrupt)):
            previous(unraisable)
            return
        again = threading.Timer(0.01, _thread.interrupt_main)
        again.daemon = True
        again.start()

    sys.unraisablehook = hook
    try:
        yield
    finally:
        within[0] = False
        if sys.unraisablehook is hook:
            sys.unraisablehook = previous


def _known_stops():
    stops = sys.modules.get("kbatch.training.stops")
    return stops.CODES if stops else ((ValueError, BAD_INPUT),)


def ignore_late_interrupts():
    """Ignore Ctrl-C from here on: the process is leaving, and a KeyboardInterrupt raised in the
    exit path (printing the stop, absl's exit, Python's shutdown) is not caught by anything, so
    Python would die of the signal (exit -2) instead of the stop's line and code."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def import_light(name):
    """The module `name` (`kbatch.study.stragglers`, `kbatch.study.children`, ...), imported without
    running `kbatch/__init__.py` (which imports Keras and TensorFlow), for a command that imports
    nothing else of kbatch: the packages above it are then bare modules on their folders. Where
    kbatch is already imported, the module as usual."""
    package, *parts = name.split(".")
    if package not in sys.modules:
        folder = importlib.util.find_spec(package).submodule_search_locations[0]
        for depth in range(len(parts)):
            module = types.ModuleType(".".join([package, *parts[:depth]]))
            module.__path__ = [os.path.join(folder, *parts[:depth])]
            sys.modules[module.__name__] = module
    return importlib.import_module(name)
