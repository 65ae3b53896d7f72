"""A sweep's command line (`tools/sweep.py`, and `tools/lr_search.py` on top of it): the options
(`kbatch_cli.define_sweep_flags` defines their flags) read into a `kbatch.study.sweep.Sweep` of a
base config, a `--spec` file's SWEEP, the `--grid` axes and a tool's own points; then
`kbatch.study.studies.run` trains what is left and reports."""

import os
import runpy

import kbatch_cli
from kbatch.study import grid, studies, sweep


def read_spec(path):
    """The SWEEP dict of a spec file, its keys and their types checked; a file that does not run
    (a syntax error, an exception) is a ValueError naming it and the error."""
    if not os.path.isfile(path):
        raise ValueError(f"--spec={path}: no such file.")
    try:
        spec = runpy.run_path(path).get("SWEEP")
    except Exception as error:  # noqa: BLE001 - any error of the user's file is reported in one line
        raise ValueError(
            f"--spec={path}: the file does not run: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from None
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
            raise ValueError(
                f"--spec={path}: SWEEP['grid'][{field!r}] = {values!r}: give a list of values, e.g. [{values!r}]."
            )
    if not all(isinstance(point, dict) for point in spec.get("points", [])):
        raise ValueError(f"--spec={path}: SWEEP['points'] must be a list of dicts of overrides.")


def command_line_axes(texts):
    """{field: [values]} of the --grid flags, the values of flags naming one field merged in order;
    a ValueError for a value given twice."""
    axes = {}
    for text in texts:
        field, values = grid.parse_axis(text)
        merged = axes.get(field, []) + values
        if len(set(map(repr, merged))) != len(merged):
            raise ValueError(f"--grid={text}: a value of {field} is given twice across the --grid flags.")
        axes[field] = merged
    return axes


def parse_targets(values, default):
    """The --targets as floats (`default` without any); a ValueError unless each is in (0, 1]."""
    try:
        targets = [float(v) for v in values] if values else list(default)
    except ValueError:
        targets = []
    if not targets or not all(0 < t <= 1 for t in targets):
        raise ValueError(f"--targets={','.join(map(str, values))}: give test accuracies in (0, 1].")
    return targets


def build_sweep(config, options, points=()):
    """The Sweep of `options` over the base `config` (and --spec, and `points`, override dicts a
    tool adds) and its report targets; a ValueError naming the flag."""
    if not options.sweep_dir:
        raise ValueError("--sweep_dir is required.")
    if options.report_only and not points and not options.grid and not options.spec:  # the whole folder
        opened = sweep.Sweep.open(options.sweep_dir)
        return opened, parse_targets(options.targets, [opened.base["target_accuracy"] or 0.95])
    spec = read_spec(options.spec) if options.spec else {}
    base = config.copy_and_resolve_references()
    for field, value in spec.get("overrides", {}).items():
        grid.check_field(field, "spec overrides")
        base[field] = value
    axes = dict(spec.get("grid", {}))
    axes.update(command_line_axes(options.grid))
    built = sweep.Sweep(options.sweep_dir, base, grid.expand(axes, list(spec.get("points", [])) + list(points)))
    return built, parse_targets(options.targets, spec.get("targets", [base.target_accuracy or 0.95]))


def outputs(prefix, overwrite, suffixes=None):
    """{kind: path} of the files an --output_prefix names, refused if they exist unless `overwrite`."""
    if not prefix:
        return {}
    paths = {kind: prefix + suffix for kind, suffix in (suffixes or studies.SUFFIXES).items()}
    kbatch_cli.refuse_existing(paths, overwrite)
    return paths


def run(config, options, points=()):
    """Check everything, train what is still to run, report (kbatch.study.studies.run); the sweep,
    its targets and rows."""
    extra = outputs(options.output_prefix, options.overwrite)
    built, targets = build_sweep(config, options, points)
    if options.report_only and not os.path.isdir(built.sweep_dir):
        raise ValueError(
            f"--sweep_dir={built.sweep_dir}: no sweep has run there yet, so there is nothing to report; "
            "run the same command without --report_only to train it."
        )
    table = studies.run(built, targets, options.processes, options.retry_failed, options.report_only, extra)
    return built, targets, table
