"""The hardware curve: seconds per update and examples/s against the global batch, on this machine.

For each of `--batch_sizes` a real run of `--config` (`kbatch.study.throughput.time_updates`:
`build_run` at that batch with batch_size = base_batch_size and a constant learning rate, its
input stream, compiled loop and per-loop actions) compiles and warms up in one loop, then times
`--steps` updates `--repeats` times; the median is the figure. The medians are fitted with
T_update(B) = T0 + k * B**gamma: T0 the fixed cost per update that a larger batch amortises,
gamma 0 a fixed cost (latency bound), 1 a time proportional to the batch (compute bound).

With `--sweep_csv` (a sweep's CSV with batch_size, status or state, and `--target_column`
columns: tools/sweep.py's report.csv, with e.g. --target_column=steps_to_0.95), the fewest steps
to target of its finished runs at each batch times the fitted time per update is the wall time to
target, and the batch that minimises it is named.

Writes `--csv` (a row per batch), `--markdown` (the tables and the fit) and `--plot` (log-log time
per update with the fit; examples/s; wall time to target), and refuses to overwrite them unless
`--overwrite`. A bad flag or config field is one line `throughput: ...` and exit code 2, before
any run (the tool's own flags before TensorFlow is imported).

  python tools/throughput.py --batch_sizes=32,64,128,256,512,1024,2048 \\
      --csv=/tmp/throughput.csv --markdown=/tmp/throughput.md --plot=/tmp/throughput.png
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging  # noqa: E402

import kbatch_cli  # noqa: E402

BATCH_SIZES = flags.DEFINE_list(
    "batch_sizes",
    ["32", "64", "128", "256", "512", "1024", "2048"],
    "Global batch sizes to time (distinct positive integers, at least 3).",
)
STEPS = flags.DEFINE_integer("steps", 20, "Timed updates per batch and repeat.")
REPEATS = flags.DEFINE_integer("repeats", 3, "Timings per batch; the median is the figure.")
SWEEP_CSV = flags.DEFINE_string(
    "sweep_csv",
    None,
    "A sweep's CSV (batch_size, status or state, --target_column): "
    "with it, the wall time to target at each of its batch sizes.",
)
TARGET_COLUMN = flags.DEFINE_string("target_column", "steps_to_target", "--sweep_csv's column of steps to target.")
CSV = flags.DEFINE_string("csv", None, "The table (CSV) to write: a row per batch.")
MARKDOWN = flags.DEFINE_string("markdown", None, "The tables and the fit (markdown) to write.")
PLOT = flags.DEFINE_string("plot", None, "The plot (PNG) to write.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --csv, --markdown and --plot if they exist.")


def parse_batch_sizes(values):
    """The sorted batch sizes of --batch_sizes; ValueError unless at least 3 distinct positive integers."""
    usage = f"--batch_sizes={','.join(values)}: want at least 3 distinct positive integers (the fit has 3 parameters)"
    try:
        batches = [int(value) for value in values]
    except ValueError:
        raise ValueError(usage + ".") from None
    if len(batches) < 3 or len(set(batches)) != len(batches) or min(batches) <= 0:
        raise ValueError(usage + ".")
    return sorted(batches)


def check_flags():
    """ValueError naming the first bad flag of the tool's own (not --config)."""
    parse_batch_sizes(BATCH_SIZES.value)
    for flag in (STEPS, REPEATS):
        if flag.value < 1:
            raise ValueError(f"--{flag.name}={flag.value}: want a positive integer.")
    if SWEEP_CSV.value is not None and not os.path.isfile(SWEEP_CSV.value):
        raise ValueError(f"--sweep_csv={SWEEP_CSV.value}: no such file.")
    kbatch_cli.refuse_existing({"csv": CSV.value, "markdown": MARKDOWN.value, "plot": PLOT.value}, OVERWRITE.value)


def parse_flags(argv):
    """The tool's own flags, parsed and checked, then `--config` (defined here: ml_collections
    reads its overrides as it loads the file, and the file imports kbatch and TensorFlow); a bad
    one is one line and exit code 2 instead of a traceback."""
    kbatch_cli.refuse_unknown("throughput", argv)
    try:
        flags.FLAGS(argv, known_only=True)
        check_flags()
    except (flags.Error, ValueError) as error:
        _refuse(str(error).splitlines()[0])
    try:
        kbatch_cli.define_config_flag(
            "The config to time; the batch, learning-rate schedule, epochs and model_dir are set for each timing."
        )
        rest = flags.FLAGS(argv)
        flags.FLAGS.config.keys()  # a config file that does not load fails here
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as error:
        from kbatch.train import bad_flag_message  # kbatch-train's line: an unknown field with its closest names

        _refuse(bad_flag_message(argv, error))
    logging.set_verbosity(logging.WARNING)
    return rest


def _refuse(message):
    kbatch_cli.refuse("throughput", message)


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {' '.join(argv[1:])}: settings go in flags or --config.FIELD=VALUE")
    from kbatch.study import throughput_report

    paths = {"csv": CSV.value, "markdown": MARKDOWN.value, "plot": PLOT.value}
    fit = throughput_report.report(
        flags.FLAGS.config,
        parse_batch_sizes(BATCH_SIZES.value),
        STEPS.value,
        REPEATS.value,
        paths,
        SWEEP_CSV.value,
        TARGET_COLUMN.value,
    )
    print(
        f"throughput: T0 {1e3 * fit.t0:.3f} ms, k {1e3 * fit.k:.4g} ms, gamma {fit.gamma:.2f}; wrote "
        f"{', '.join(paths.values())}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    kbatch_cli.run_tool("throughput", main, __doc__, flags_parser=parse_flags, config_help=kbatch_cli.CONFIG_HELP)
