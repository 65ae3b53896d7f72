"""A sweep and an LR search run from Python, as `tools/sweep.py` and `tools/lr_search.py` run them
from a shell (the tools are flags over these; the notebooks in colab/ call them directly, so they
work from a pip install with no tools/ folder):

    kbatch.study.studies.sweep("/tmp/s", config, {"batch_size": [64, 256]}, targets=[0.9])
    kbatch.study.studies.lr_search("/tmp/lr", config, {"momentum": [0.05, 0.2]}, [256, 1024], [0.9])

Each writes its report into the sweep folder: report.csv, report.md, report.png and the HParams
(`tensorboard --logdir SWEEP_DIR/tensorboard`); the LR search also lr_search.md and .png.
"""

import functools
import os
import warnings

from kbatch.study import grid, plots, report, runs, theory
from kbatch.study import lr_search as lr_search_lib
from kbatch.study import sweep as sweep_lib

SUFFIXES = {"csv": ".csv", "markdown": ".md", "plot": ".png"}
SAY = functools.partial(print, flush=True)  # the default `log`: each line as it comes


def sweep(sweep_dir, config, axes=None, targets=(0.95,), points=(), processes=1, retry_failed=False, log=SAY):
    """Train every point of `config` (a ConfigDict) under `axes` ({field: [values]}, every
    combination) and `points` (override dicts) not yet finished in `sweep_dir`, and report it;
    the report's rows. A stop (Ctrl-C, preemption) ends the call after the point's checkpoint; the
    same call again continues the sweep."""
    built = sweep_lib.Sweep(sweep_dir, config, grid.expand(dict(axes or {}), list(points)))
    return run(built, list(targets), processes, retry_failed, log=log)


def run(built, targets, processes=1, retry_failed=False, report_only=False, extra=None, log=SAY):
    """Check every point of the Sweep `built`, train what is still to run (nothing if
    `report_only`), and write its report (also to `extra`'s {kind: path}); the rows."""
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    if processes < 1:
        raise ValueError(f"--processes={processes}: give a positive number.")
    if not report_only:
        check_datasets(built)
        built.write_manifest()
        runs.run_sweep(built, processes, retry_failed, log=log)
    return write_report(built, targets, extra, log)


def check_datasets(built):
    """Every point's config, its folder, and its batch against its data set's size (a "tfds:NAME"
    or "python:MODULE:FUNCTION" source is built here once to be counted)."""
    from kbatch import data
    from kbatch.data import names, sources

    sizes = {}

    def train_examples(dataset, data_dir):
        if (dataset, data_dir) not in sizes:
            info = (
                data.describe(dataset, data_dir)
                if names.is_builtin(dataset)
                else sources.get(dataset, data_dir, tokenize_text=False).describe()
            )
            sizes[dataset, data_dir] = info.num_train_examples
        return sizes[dataset, data_dir]

    built.check(train_examples)


def write_report(built, targets, extra=None, log=SAY):
    """report.csv, .md and .png in the sweep folder (and `extra`'s paths), and the HParams; the rows."""
    table = report.rows(built, targets)
    title = f"{built.base['model']} on {built.base['dataset']}, {built.base['num_epochs']} epochs: {len(table)} points"
    for out in [{k: os.path.join(built.sweep_dir, "report" + s) for k, s in SUFFIXES.items()}, extra]:
        if out:
            report.write_csv(out["csv"], table)
            with open(out["markdown"], "w") as f:
                f.write(report.markdown_table(table, built.axes, targets))
            plots.plot_sweep(out["plot"], table, built.axes, targets, title)
    report.write_hparams(os.path.join(built.sweep_dir, "tensorboard"), table, built.axes, targets)
    states = [r["state"] for r in table]
    also = f" and {os.path.splitext(extra['csv'])[0]}.*" if extra else ""
    log(
        f"sweep: {', '.join(f'{states.count(s)} {s}' for s in dict.fromkeys(states))}; report in "
        f"{built.sweep_dir}{also}; HParams: tensorboard --logdir {os.path.join(built.sweep_dir, 'tensorboard')}"
    )
    return table


def lr_search(sweep_dir, config, rates, batch_sizes, targets, wildcards=0, seed=0, processes=1, log=SAY):
    """Search the rate at every batch (`rates`: {optimizer: [rates at base_batch_size]}, see
    `lr_search.points`), and write the sweep's report and lr_search.md and .png; the fits."""
    if config.lr_scaling != "linear":
        raise ValueError(
            f"config.lr_scaling={config.lr_scaling!r}: the search walks the lines lr = cB, so it needs 'linear'."
        )
    points = lr_search_lib.points(rates, batch_sizes, wildcards, seed)
    built = sweep_lib.Sweep(sweep_dir, config, grid.expand({}, points))
    table = run(built, list(targets), processes, log=log)
    return analyse_lr_search(built, list(targets), table, log=log)


def analyse_lr_search(built, targets, table, extra_prefix=None, theory_run=None, log=SAY):
    """lr_search.md and .png for the first target (also at `extra_prefix`.md/.png), with the
    noisy quadratic model fitted to `theory_run` (a finished run's result) when given; the fits."""
    fields = [a for a in built.axes if a not in ("batch_size", lr_search_lib.RATE)] or ["optimizer"]
    target, column = targets[0], f"steps_to_{targets[0]:g}"
    best = lr_search_lib.best_rows(table, fields, column)
    fits = {
        group: lr_search_lib.fit_exponent(list(by_batch), [r["peak_learning_rate"] for r in by_batch.values()])
        for group, by_batch in best.items()
    }
    curves, theory_lines = theory.group_curves(theory_run, target, fields, best)
    text = lr_search_lib.summary_markdown(fields, target, best, fits, lr_search_lib.summary_rows(table, fields, target))
    text += "\n".join(["", *theory_lines]) if theory_lines else ""
    title = f"LR search: {built.base['model']} on {built.base['dataset']}, {built.base['num_epochs']} epochs"
    for prefix in [os.path.join(built.sweep_dir, "lr_search")] + ([extra_prefix] if extra_prefix else []):
        with open(prefix + ".md", "w") as f:
            f.write(text)
        plots.plot_lr_search(prefix + ".png", table, fields, target, fits, title, curves)
    log(text.rstrip("\n"))
    return fits
