"""The learning rate searched at every batch size (kbatch.study.lr_search), on the sweep engine of
tools/sweep.py (every flag of it works here too: --config, --sweep_dir, --grid, --targets,
--processes, --report_only, --retry_failed, --output_prefix, --overwrite).

  python tools/lr_search.py --sweep_dir=/tmp/lr_search --config.dataset=mnist1d/original \
      --config.num_epochs=2 --batch_sizes=64,256,1024 --lrs=momentum:0.025,0.05,0.1 --wildcards=1

Each --lrs entry OPTIMIZER:RATE,RATE,... gives rates at the config's base_batch_size B0; with the
linear rule each is the line lr = (RATE / B0) B across the batch sizes. --wildcards more rates
per optimizer and batch are drawn log-uniformly from [min/2, 2 max] of its rates (seeded by
--seed). Besides the sweep's report it writes lr_search.md (the best rate per batch by steps to
the first target and by final accuracy, edge-of-range warnings, the fitted alpha of
lr* ~ B^alpha with its standard error, the regimes) and lr_search.png into --sweep_dir, and to
--output_prefix_lr.md / _lr.png when --output_prefix is given. With --report_only it reports the
search its flags describe as far as it has run (points not yet trained shown pending), training
nothing.
"""

import os
import sys

import sweep  # noqa: E402  (its flags come too)
from absl import flags

import kbatch_cli  # noqa: E402

_BATCHES = flags.DEFINE_list("batch_sizes", [], "Global batch sizes to search the rate at.")
_LRS = flags.DEFINE_multi_string("lrs", [], "OPTIMIZER:RATE,RATE,... rates at base_batch_size; repeat per optimizer.")
_WILDCARDS = flags.DEFINE_integer("wildcards", 0, "Random rates per optimizer and batch, off the lines.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the wildcard rates.")
_THEORY_RUN = flags.DEFINE_string("theory_run", None, "model_dir of a finished run with sharpness and noise-scale "
                                  "points: the noisy quadratic model fitted to it is drawn beside SGD-momentum's "
                                  "curve.")


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


def theory_result(target):
    """The --theory_run's result.json, its measurements at `target` checked (None without one)."""
    from kbatch.study import theory
    from kbatch.training import run_dir

    if not _THEORY_RUN.value:
        return None
    path = os.path.join(_THEORY_RUN.value, run_dir.RESULT_FILE)
    if not os.path.exists(path):
        raise ValueError(f"--theory_run={_THEORY_RUN.value}: no result.json there: give a finished run's model_dir.")
    result = run_dir.read_json(path)
    try:
        theory.run_measurements(result, target)
    except ValueError as error:
        raise ValueError(f"--theory_run={_THEORY_RUN.value}: {error}") from None
    return result


def main(argv):
    from kbatch.study import lr_search, runs, studies

    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {' '.join(argv[1:])}")
    rates, batches = parse_rates(_LRS.value), parse_batches(_BATCHES.value)
    if flags.FLAGS.config.lr_scaling != "linear":
        raise ValueError(f"config.lr_scaling={flags.FLAGS.config.lr_scaling!r}: the search walks the lines lr = cB, "
                         "so it needs 'linear'.")
    if _WILDCARDS.value < 0:
        raise ValueError(f"--wildcards={_WILDCARDS.value}: give 0 or more.")
    extra = sweep.outputs(sweep._PREFIX.value and sweep._PREFIX.value + "_lr", {"markdown": ".md", "plot": ".png"})
    targets = sweep.parse_targets(sweep._TARGETS.value, [flags.FLAGS.config.target_accuracy or 0.95])
    theory_run = theory_result(targets[0])
    try:
        built, targets, table = sweep.run(lr_search.points(rates, batches, _WILDCARDS.value, _SEED.value))
    except runs.SweepStopped as stop:
        print(f"lr_search: {stop}", file=sys.stderr)
        return stop.exit_code
    studies.analyse_lr_search(built, targets, table, extra and sweep._PREFIX.value + "_lr", theory_run)
    return 0


def parse_flags(argv):
    """The tool's own flags, then kbatch-train's parser (`--config` and its overrides: it imports
    kbatch and TensorFlow)."""
    kbatch_cli.refuse_unknown("lr_search", argv)
    from kbatch.train import one_line_parser

    return one_line_parser("lr_search", sweep.define_config)(argv)


if __name__ == "__main__":
    kbatch_cli.run_tool("lr_search", main, __doc__, flags_parser=parse_flags,
                          config_help=kbatch_cli.CONFIG_HELP)
