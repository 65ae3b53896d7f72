"""Run a sweep of one config, any fields, each point in its own model_dir under --sweep_dir, and
report it (kbatch.study.studies): a CSV with one row per point, a markdown table, a PNG (steps and
examples to each target against batch size, log-log, with perfect scaling; final accuracy), and
TensorBoard HParams summaries (`tensorboard --logdir SWEEP_DIR/tensorboard`).

  python tools/sweep.py --sweep_dir=/tmp/sweep --config.dataset=mnist1d/original \
      --config.num_epochs=2 --grid=batch_size=64,256,1024 --grid=optimizer=momentum,lars

  python tools/sweep.py --sweep_dir=/tmp/sweep --report_only --targets=0.9,0.95

Each --grid axis is FIELD=VALUE[,VALUE...] (--grid flags naming one field add to its values);
the points are every combination. `--spec=FILE.py` reads a sweep written down: a file defining
SWEEP = {"overrides": {...}, "grid": {...}, "points": [{...}, ...], "targets": [...]} (a point is
a dict of overrides; --grid axes are combined with the spec's). Every point's config is checked
before the first run. The same command again continues a stopped sweep: finished points are read
back, a cut-short point resumes from its checkpoint, a failed or diverged one is left as recorded
(--retry_failed runs it again). A folder holding another sweep is refused. The report goes into
--sweep_dir (report.csv, report.md, report.png), and also to --output_prefix.csv, .md and .png
when given (refused if they exist, unless --overwrite).
"""

import os
import runpy
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import kbatch_cli  # noqa: E402

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "kbatch", "configs", "mnist1d_cnn.py")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "The sweep's folder: its points' runs, its report.")
_GRID = flags.DEFINE_multi_string("grid", [], "An axis FIELD=VALUE[,VALUE...]; repeat for more axes.")
_SPEC = flags.DEFINE_string("spec", None, "A Python file defining SWEEP (see the docstring).")
_TARGETS = flags.DEFINE_list("targets", [], "Test accuracies to count steps to (default: the spec's, "
                             "else the base config's target_accuracy).")
_PROCESSES = flags.DEFINE_integer("processes", 1, "Points trained at a time (1: in this process).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Train nothing: report the points the flags give, or with "
                                  "no --grid/--spec every point --sweep_dir holds, as they are.")
_RETRY = flags.DEFINE_bool("retry_failed", False, "Train failed and diverged points again.")
_PREFIX = flags.DEFINE_string("output_prefix", None, "Also write the report to PREFIX.csv, PREFIX.md, PREFIX.png.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing --output_prefix files.")


def define_config():
    """--config (defined as the command line is parsed: it reads its --config.FIELD overrides)."""
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "The base config every point overrides.")


def read_spec(path):
    """The SWEEP dict of a spec file, its keys and their types checked; a file that does not run
    (a syntax error, an exception) is a ValueError naming it and the error."""
    if not os.path.isfile(path):
        raise ValueError(f"--spec={path}: no such file.")
    try:
        spec = runpy.run_path(path).get("SWEEP")
    except Exception as error:  # noqa: BLE001 - any error of the user's file is reported in one line
        raise ValueError(f"--spec={path}: the file does not run: {type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}") from None
    allowed = {"overrides", "grid", "points", "targets"}
    if not isinstance(spec, dict) or set(spec) - allowed:
        raise ValueError(f"--spec={path}: must define SWEEP, a dict with keys from {', '.join(sorted(allowed))}.")
    check_spec_types(path, spec)
    return spec


def check_spec_types(path, spec):
    """A ValueError naming the first part of SWEEP of the wrong type."""
    for key, kind in (("overrides", dict), ("grid", dict), ("points", list), ("targets", list)):
        if not isinstance(spec.get(key, kind()), kind):
            raise ValueError(f"--spec={path}: SWEEP[{key!r}] must be a {kind.__name__}.")
    for field, values in spec.get("grid", {}).items():
        if not isinstance(values, (list, tuple)):
            raise ValueError(f"--spec={path}: SWEEP['grid'][{field!r}] = {values!r}: give a list of values, "
                             f"e.g. [{values!r}].")
    if not all(isinstance(point, dict) for point in spec.get("points", [])):
        raise ValueError(f"--spec={path}: SWEEP['points'] must be a list of dicts of overrides.")


def command_line_axes(texts):
    """{field: [values]} of the --grid flags, the values of flags naming one field merged in order;
    a ValueError for a value given twice."""
    from kbatch.study import grid

    axes = {}
    for text in texts:
        field, values = grid.parse_axis(text)
        merged = axes.get(field, []) + values
        if len(set(map(repr, merged))) != len(merged):
            raise ValueError(f"--grid={text}: a value of {field} is given twice across the --grid flags.")
        axes[field] = merged
    return axes


def parse_targets(values, default):
    try:
        targets = [float(v) for v in values] if values else list(default)
    except ValueError:
        targets = []
    if not targets or not all(0 < t <= 1 for t in targets):
        raise ValueError(f"--targets={','.join(map(str, values))}: give test accuracies in (0, 1].")
    return targets


def build_sweep(points=()):
    """The Sweep of the flags (and --spec, and `points`, override dicts a tool adds) and its report
    targets; a ValueError naming the flag."""
    from kbatch.study import grid, sweep

    if not _SWEEP_DIR.value:
        raise ValueError("--sweep_dir is required.")
    if _REPORT_ONLY.value and not points and not _GRID.value and not _SPEC.value:  # the whole folder
        opened = sweep.Sweep.open(_SWEEP_DIR.value)
        return opened, parse_targets(_TARGETS.value, [opened.base["target_accuracy"] or 0.95])
    spec = read_spec(_SPEC.value) if _SPEC.value else {}
    base = flags.FLAGS.config.copy_and_resolve_references()
    for field, value in spec.get("overrides", {}).items():
        grid.check_field(field, "spec overrides")
        base[field] = value
    axes = dict(spec.get("grid", {}))
    axes.update(command_line_axes(_GRID.value))
    built = sweep.Sweep(_SWEEP_DIR.value, base, grid.expand(axes, list(spec.get("points", [])) + list(points)))
    return built, parse_targets(_TARGETS.value, spec.get("targets", [base.target_accuracy or 0.95]))


def outputs(prefix, suffixes=None):
    """{kind: path} of the files an --output_prefix names, refused if they exist unless --overwrite."""
    if not prefix:
        return {}
    from kbatch.study import studies

    paths = {kind: prefix + suffix for kind, suffix in (suffixes or studies.SUFFIXES).items()}
    kbatch_cli.refuse_existing(paths, _OVERWRITE.value)
    return paths


def run(points=()):
    """Check everything, train what is still to run, report (kbatch.study.studies.run); the sweep,
    its targets and rows."""
    from kbatch.study import studies

    extra = outputs(_PREFIX.value)
    built, targets = build_sweep(points)
    if _REPORT_ONLY.value and not os.path.isdir(built.sweep_dir):
        raise ValueError(f"--sweep_dir={built.sweep_dir}: no sweep has run there yet, so there is nothing to report; "
                         "run the same command without --report_only to train it.")
    table = studies.run(built, targets, _PROCESSES.value, _RETRY.value, _REPORT_ONLY.value, extra)
    return built, targets, table


def main(argv):
    from kbatch.study import runs

    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {' '.join(argv[1:])}")
    try:
        run()
    except runs.SweepStopped as stop:
        print(f"sweep: {stop}", file=sys.stderr)
        return stop.exit_code
    return 0


def parse_flags(argv):
    """The tool's own flags, then kbatch-train's parser (`--config` and its overrides: it imports
    kbatch and TensorFlow)."""
    kbatch_cli.refuse_unknown("sweep", argv)
    from kbatch.train import one_line_parser

    return one_line_parser("sweep", define_config)(argv)


if __name__ == "__main__":
    kbatch_cli.run_tool("sweep", main, __doc__, flags_parser=parse_flags,
                          config_help=kbatch_cli.CONFIG_HELP)
