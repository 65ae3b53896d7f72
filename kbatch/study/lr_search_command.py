"""The learning-rate search's command line (`tools/lr_search.py`): a sweep's options
(`kbatch.study.sweep_command`) plus the rates at the base batch per optimizer, the batch sizes, the
wildcard rates off the lines lr = cB and a run to draw the noisy quadratic model from; the points
of `kbatch.study.lr_search` trained and analysed (`kbatch.study.studies.analyse_lr_search`)."""

import os

from kbatch.study import lr_search, studies, sweep_command, theory
from kbatch.training.run_files import run_dir


def parse_rates(entries):
    """{optimizer: [rates]} from the --lrs entries; a ValueError naming the entry."""
    rates = {}
    for entry in entries:
        optimizer, _, values = entry.partition(":")
        try:
            numbers = [float(v) for v in values.split(",")]
        except ValueError:
            numbers = []
        if not optimizer or not numbers or min(numbers) <= 0 or optimizer in rates:
            raise ValueError(f"--lrs={entry}: write OPTIMIZER:RATE,RATE,... with positive rates, once per optimizer.")
        rates[optimizer] = numbers
    if not rates:
        raise ValueError("--lrs: give at least one OPTIMIZER:RATE,... (the grid is empty).")
    return rates


def parse_batches(values):
    """The batch sizes in the order given (the order they are trained in)."""
    try:
        batches = [int(v) for v in values]
    except ValueError:
        batches = []
    if not batches or any(b <= 0 for b in batches) or len(set(batches)) < len(batches):
        raise ValueError(f"--batch_sizes={','.join(values)}: give distinct positive batch sizes (the grid is empty).")
    return batches


def theory_result(theory_run, target):
    """The `theory_run`'s result.json, its measurements at `target` checked (None without one)."""
    if not theory_run:
        return None
    path = os.path.join(theory_run, run_dir.RESULT_FILE)
    if not os.path.exists(path):
        raise ValueError(f"--theory_run={theory_run}: no result.json there: give a finished run's model_dir.")
    result = run_dir.read_json(path)
    try:
        theory.run_measurements(result, target)
    except ValueError as error:
        raise ValueError(f"--theory_run={theory_run}: {error}") from None
    return result


def run(config, options, lrs, batch_sizes, wildcards, seed, theory_run):
    """Check the flags, train the search's points (`sweep_command.run`) and write its analysis;
    `lrs` the --lrs entries, `batch_sizes` strings."""
    rates, batches = parse_rates(lrs), parse_batches(batch_sizes)
    if config.lr_scaling != "linear":
        raise ValueError(
            f"config.lr_scaling={config.lr_scaling!r}: the search walks the lines lr = cB, so it needs 'linear'."
        )
    if wildcards < 0:
        raise ValueError(f"--wildcards={wildcards}: give 0 or more.")
    prefix = options.output_prefix and options.output_prefix + "_lr"
    extra = sweep_command.outputs(prefix, options.overwrite, {"markdown": ".md", "plot": ".png"})
    targets = sweep_command.parse_targets(options.targets, [config.target_accuracy or 0.95])
    result = theory_result(theory_run, targets[0])
    built, targets, table = sweep_command.run(config, options, lr_search.points(rates, batches, wildcards, seed))
    studies.analyse_lr_search(built, targets, table, extra and prefix, result)
