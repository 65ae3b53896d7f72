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

import csv
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import study_output  # noqa: E402  (tools/ is the script's own folder, first on sys.path)
from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "kbatch", "configs", "mnist1d_cnn.py")

BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["32", "64", "128", "256", "512", "1024", "2048"],
                                "Global batch sizes to time (distinct positive integers, at least 3).")
STEPS = flags.DEFINE_integer("steps", 20, "Timed updates per batch and repeat.")
REPEATS = flags.DEFINE_integer("repeats", 3, "Timings per batch; the median is the figure.")
SWEEP_CSV = flags.DEFINE_string("sweep_csv", None, "A sweep's CSV (batch_size, status or state, --target_column): "
                                "with it, the wall time to target at each of its batch sizes.")
TARGET_COLUMN = flags.DEFINE_string("target_column", "steps_to_target", "--sweep_csv's column of steps to target.")
CSV = flags.DEFINE_string("csv", None, "The table (CSV) to write: a row per batch.")
MARKDOWN = flags.DEFINE_string("markdown", None, "The tables and the fit (markdown) to write.")
PLOT = flags.DEFINE_string("plot", None, "The plot (PNG) to write.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --csv, --markdown and --plot if they exist.")
GAMMA_MEANING = ("gamma 0 = a fixed cost per update (latency bound), 1 = time proportional to the batch "
                 "(compute bound)")


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
    study_output.refuse_existing({"csv": CSV.value, "markdown": MARKDOWN.value, "plot": PLOT.value}, OVERWRITE.value)


def parse_flags(argv):
    """The tool's own flags, parsed and checked, then `--config` (defined here: ml_collections
    reads its overrides as it loads the file, and the file imports kbatch and TensorFlow); a bad
    one is one line and exit code 2 instead of a traceback."""
    study_output.refuse_unknown("throughput", argv)
    try:
        flags.FLAGS(argv, known_only=True)
        check_flags()
    except (flags.Error, ValueError) as error:
        _refuse(str(error).splitlines()[0])
    try:
        config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "The config to time; the batch, learning-rate "
                                        "schedule, epochs and model_dir are set for each timing.")
        rest = flags.FLAGS(argv)
        flags.FLAGS.config.keys()  # a config file that does not load fails here
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as error:
        from kbatch.train import bad_flag_message  # kbatch-train's line: an unknown field with its closest names

        _refuse(bad_flag_message(argv, error))
    logging.set_verbosity(logging.WARNING)
    return rest


def _refuse(message):
    study_output.refuse("throughput", message)


def device_description():
    """The Keras backend and the devices it trains on, e.g. "jax on 1 x NVIDIA H200"."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        devices = jax.devices()
        if devices[0].platform != "cpu":
            return f"jax on {len(devices)} x {devices[0].device_kind}"
    else:
        import tensorflow as tf

        for kind in ("TPU", "GPU"):
            devices = tf.config.list_physical_devices(kind)
            if devices:
                name = tf.config.experimental.get_device_details(devices[0]).get("device_name", kind)
                return f"{backend} on {len(devices)} x {name}"
    return f"{backend} on the CPU ({os.cpu_count()} cores)"


def write_csv(path, timings, fit, wall):
    """A row per timed batch: the median and each repeat's seconds per update, examples/s, the
    fit there and, with a sweep, the steps and wall time to target."""
    repeats = len(next(iter(timings.values())))
    fields = ["batch", "seconds_per_update", "examples_per_second", "fit_seconds_per_update",
              *(f"repeat_{i}_seconds_per_update" for i in range(1, repeats + 1))]
    if wall is not None:
        fields += [TARGET_COLUMN.value, "seconds_to_target"]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(fields)
        for batch, (median, *each) in _medians(timings):
            row = [batch, f"{median:.6g}", f"{batch / median:.6g}", f"{float(fit.seconds(batch)):.6g}",
                   *(f"{s:.6g}" for s in each)]
            if wall is not None:
                at = wall.get(batch, {})
                row += [_or_blank(at.get("steps")), _or_blank(at.get("seconds_to_target"), "{:.6g}")]
            writer.writerow(row)


def _medians(timings):
    """(batch, (median, *each repeat)) by batch."""
    return [(batch, (float(np.median(seconds)), *seconds)) for batch, seconds in sorted(timings.items())]


def _or_blank(value, form="{}"):
    return "" if value is None else form.format(value)


def markdown(timings, fit, rows, best, title, config):
    """The timing table, the fit and what it means, and with a sweep the wall time to target."""
    lines = [f"# Time per update against the global batch: {title}", "",
             f"{STEPS.value} timed updates per repeat (steps_per_loop {min(config.steps_per_loop, STEPS.value)}), "
             f"median of {REPEATS.value}; strategy {config.strategy}, jit_compile {config.jit_compile}, "
             f"mixed_precision {config.mixed_precision}.", "",
             "| batch | ms per update (median) | examples/s | ms per update, each repeat | fit, ms |",
             "| ---: | ---: | ---: | --- | ---: |"]
    for batch, (median, *each) in _medians(timings):
        lines.append(f"| {batch} | {1e3 * median:.3f} | {batch / median:,.0f} | "
                     f"{', '.join(f'{1e3 * s:.3f}' for s in each)} | {1e3 * float(fit.seconds(batch)):.3f} |")
    lines += ["", f"Fit T_update(B) = T0 + k B^gamma: **T0 = {1e3 * fit.t0:.3f} ms**, k = {1e3 * fit.k:.4g} ms, "
              f"**gamma = {fit.gamma:.2f}** (RMS relative error {fit.residual:.1%}); {GAMMA_MEANING}. "
              "T0 is the fixed cost of an update that a larger batch amortises."]
    if fit.gamma_at_search_edge:
        lines[-1] += " (gamma is at the edge of the range searched: the data want a value beyond it.)"
    if fit.t0 > 0 and fit.k > 0:
        even = (fit.t0 / fit.k) ** (1 / fit.gamma)
        lines[-1] += (f" The batch-dependent part equals T0 at B = {even:,.0f}: below it the fixed cost dominates "
                      "and examples/s grows almost in proportion to the batch; above it examples/s goes as "
                      "B^(1 - gamma).")
    if rows is not None:
        lines += ["", *wall_table(rows, best, sorted(timings))]
    return "\n".join(lines) + "\n"


def wall_table(rows, best, timed):
    """The wall time to target at each batch of the sweep, and the batch that minimises it."""
    lines = [f"Wall time to target: the sweep's fewest `{TARGET_COLUMN.value}` at each batch (its best "
             "learning rate) times the fitted time per update.", "",
             "| batch | steps to target | ms per update (fit) | wall time to target (s) |",
             "| ---: | ---: | ---: | ---: |"]
    for row in rows:
        outside = "" if timed[0] <= row["batch"] <= timed[-1] else " (extrapolated)"
        wall = "not reached" if row["steps"] is None else f"{row['seconds_to_target']:,.2f}"
        lines.append(f"| {row['batch']} | {_or_blank(row['steps']) or '-'} | "
                     f"{1e3 * row['seconds_per_update']:.3f}{outside} | {wall} |")
    if best is None:
        lines += ["", "No batch of the sweep reached the target."]
    else:
        seconds = next(r["seconds_to_target"] for r in rows if r["batch"] == best)
        lines += ["", f"Fastest to target: **batch {best}**, {seconds:,.2f} s."]
    return lines


def plot(path, timings, fit, rows, best, title):
    """Time per update (log-log, with the fit), examples/s, and with a sweep wall time to target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted(timings)
    medians = np.array([np.median(timings[b]) for b in batches])
    grid = np.geomspace(batches[0], batches[-1], 200)
    figure, axes = plt.subplots(1, 2 if rows is None else 3, figsize=(5 * (2 if rows is None else 3), 4))
    per_update, rate = axes[0], axes[1]
    for batch in batches:
        per_update.plot([batch] * len(timings[batch]), 1e3 * np.array(timings[batch]), ".", color="0.6",
                        label="each repeat" if batch == batches[0] else None)
    per_update.plot(batches, 1e3 * medians, "o", color="C0", label="measured (median)")
    per_update.plot(grid, 1e3 * fit.seconds(grid), "--", color="C1",
                    label=f"T0 + k B^gamma: T0 {1e3 * fit.t0:.3g} ms, gamma {fit.gamma:.2f}")
    per_update.set_ylabel("ms per update")
    per_update.set_title("time per update", fontsize=9)
    rate.plot(batches, np.array(batches) / medians, "o", color="C0", label="measured (median)")
    rate.plot(grid, fit.examples_per_second(grid), "--", color="C1", label="fit")
    rate.set_ylabel("examples / s")
    rate.set_title("throughput", fontsize=9)
    for ax in (per_update, rate):
        plain_log_y(ax)
        study_output.batch_size_axis(ax, batches, "global batch")
        ax.legend(fontsize=7)
    if rows is not None:
        wall_panel(axes[2], rows, best)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plain_log_y(ax):
    """A log y axis labelled 14, 20, 3000 rather than 1.4 x 10^1 (the ranges here are short)."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")
    for axis_format in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_format(FuncFormatter(lambda value, _: f"{value:g}"))


def wall_panel(ax, rows, best):
    """Wall time to target against batch, the fastest batch starred."""
    reached = [r for r in rows if r["seconds_to_target"] is not None]
    ax.plot([r["batch"] for r in reached], [r["seconds_to_target"] for r in reached], "o-", color="C2")
    if best is not None:
        ax.plot([best], [next(r["seconds_to_target"] for r in reached if r["batch"] == best)], "*", color="C3",
                markersize=14, label=f"fastest: batch {best}")
        ax.legend(fontsize=7)
    plain_log_y(ax)
    ax.set_ylabel("wall time to target (s)")
    ax.set_title(f"wall time to target: {TARGET_COLUMN.value} x fitted T_update", fontsize=9)
    study_output.batch_size_axis(ax, [r["batch"] for r in rows], "global batch")


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {' '.join(argv[1:])}: settings go in flags or --config.FIELD=VALUE")
    import warnings

    from kbatch.study import throughput
    from kbatch.training import validate

    config, batches = flags.FLAGS.config, parse_batch_sizes(BATCH_SIZES.value)
    steps_by_batch = None
    if SWEEP_CSV.value is not None:
        steps_by_batch = throughput.read_steps(SWEEP_CSV.value, TARGET_COLUMN.value)
        if not steps_by_batch:
            raise ValueError(f"--sweep_csv={SWEEP_CSV.value}: no finished run in it.")
    for batch in batches:  # every timing's config checked before the first run
        validate(throughput.timing_config(config, batch, STEPS.value, REPEATS.value))
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    timings = {}
    for batch in batches:
        timings[batch] = throughput.time_updates(config, batch, STEPS.value, REPEATS.value)
        median = float(np.median(timings[batch]))
        print(f"throughput: batch {batch}: {1e3 * median:.3f} ms/update, {batch / median:,.0f} examples/s", flush=True)
    fit = throughput.fit_update_time(batches, [np.median(timings[b]) for b in batches])
    rows = None if steps_by_batch is None else throughput.wall_time_to_target(fit, steps_by_batch)
    best = None if rows is None else throughput.fastest(rows)
    title = f"{config.model} on {config.dataset}, Keras {device_description()}"
    write_csv(CSV.value, timings, fit, None if rows is None else {r["batch"]: r for r in rows})
    with open(MARKDOWN.value, "w") as file:
        file.write(markdown(timings, fit, rows, best, title, config))
    plot(PLOT.value, timings, fit, rows, best, title)
    print(f"throughput: T0 {1e3 * fit.t0:.3f} ms, k {1e3 * fit.k:.4g} ms, gamma {fit.gamma:.2f}; wrote "
          f"{CSV.value}, {MARKDOWN.value}, {PLOT.value}", flush=True)
    return 0


if __name__ == "__main__":
    study_output.run_tool("throughput", main, __doc__, flags_parser=parse_flags,
                          config_help=study_output.CONFIG_HELP)
