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

from absl import flags

import study_output  # noqa: E402  (tools/ is the script's own folder, first on sys.path)
import sweep  # noqa: E402  (its flags come too)

_BATCHES = flags.DEFINE_list("batch_sizes", [], "Global batch sizes to search the rate at.")
_LRS = flags.DEFINE_multi_string("lrs", [], "OPTIMIZER:RATE,RATE,... rates at base_batch_size; repeat per optimizer.")
_WILDCARDS = flags.DEFINE_integer("wildcards", 0, "Random rates per optimizer and batch, off the lines.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the wildcard rates.")
_THEORY_RUN = flags.DEFINE_string("theory_run", None, "model_dir of a finished run with sharpness and noise-scale "
                                  "points: the noisy quadratic model fitted to it is drawn beside SGD-momentum's curve.")
THEORY_OPTIMIZERS = {"sgd": "sgd", "momentum": "momentum", "nesterov": "momentum"}


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


def summary_markdown(fields, target, best, fits, summary):
    """The best rates per batch (`summary`), then per group its alpha and regimes (`best`, `fits`)."""
    from kbatch.study import lr_search

    lines = [f"Best peak learning rate per batch (by steps to {100 * target:g}%, and by final accuracy); "
             "* marks a rate at the edge of the range searched there:", "",
             "| group | batch | rate by steps | steps | rate by final | final (%) |", "|---|---:|---:|---:|---:|---:|"]
    for row in summary:
        rate_steps, rate_final = _rate(row["rate_by_steps"], row["edge_by_steps"]), _rate(row["rate_by_final"], row["edge_by_final"])
        final = f"{100 * row['final_eval_accuracy']:.2f}" if row["final_eval_accuracy"] is not None else "-"
        lines.append(f"| {lr_search.group_label(row['group'], fields)} | {row['batch_size']} | {rate_steps} | "
                     f"{row['steps'] or '-'} | {rate_final} | {final} |")
    if not best:
        return "\n".join(lines + ["", no_target_line(target)]) + "\n"
    lines += ["", "| group | alpha (lr* ~ B^alpha, by steps) | regimes (per doubling of the batch) |", "|---|---|---|"]
    column = f"steps_to_{target:g}"
    for group, by_batch in best.items():
        shown = ", ".join(f"{a}-{b} {name}" for a, b, name in lr_search.regimes({b: r[column] for b, r in by_batch.items()}))
        lines.append(f"| {lr_search.group_label(group, fields)} | {_alpha(fits[group])} | {shown or '-'} |")
    return "\n".join(lines) + "\n"


def no_target_line(target):
    """What the search says when no run reached `target`: there is no best rate by steps to fit."""
    return (f"No run reached {100 * target:g}%: no best rate by steps and no alpha (lower --targets, or train "
            "longer).")


def _rate(rate, edge):
    return "-" if not rate else f"{rate:.4g}" + ("*" if edge else "")


def _alpha(fit):
    alpha, error = fit
    return "-" if alpha is None else f"{alpha:.2f}" + (f" ± {error:.2f}" if error is not None else "")


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


def theory_curves(result, target, fields, best):
    """{label: {batch: steps}}: the NQM fitted to `result`, calibrated at the smallest batch of each
    group whose optimizer it models; and the markdown lines comparing them."""
    from kbatch.study import theory

    if result is None or "optimizer" not in fields:
        return {}, []
    model = theory.fitted_to_run(result, target)
    top, b_simple, _ = theory.run_measurements(result, target)
    curves, lines = {}, []
    for group, by_batch in best.items():
        optimizer = THEORY_OPTIMIZERS.get(group[fields.index("optimizer")])
        if optimizer is None or len(by_batch) < 2:
            continue
        measured = {b: r[f"steps_to_{target:g}"] for b, r in by_batch.items()}
        curve, _ = theory.predicted_curve(model, optimizer, measured)
        label = f"NQM ({optimizer}), lambda_max {top:.3g}, B_simple {b_simple:,.0f}, fitted at B={min(measured)}"
        curves[label] = curve
        lines += [f"{label}:", "", "| batch | measured steps | NQM steps |", "|---:|---:|---:|"]
        lines += [f"| {b} | {measured[b]} | {curve.get(b, '-')} |" for b in sorted(measured)] + [""]
    return curves, lines


def analyse(built, targets, table, extra, theory_run):
    """lr_search.md and .png for the first target; returns the fitted exponents."""
    from kbatch.study import lr_search, plots

    fields = [a for a in built.axes if a not in ("batch_size", lr_search.RATE)] or ["optimizer"]
    target, column = targets[0], f"steps_to_{targets[0]:g}"
    best = lr_search.best_rows(table, fields, column)
    fits = {group: lr_search.fit_exponent(list(by_batch), [r["peak_learning_rate"] for r in by_batch.values()])
            for group, by_batch in best.items()}
    curves, theory_lines = theory_curves(theory_run, target, fields, best)
    text = summary_markdown(fields, target, best, fits, lr_search.summary_rows(table, fields, target))
    text += "\n".join(["", *theory_lines]) if theory_lines else ""
    title = f"LR search: {built.base['model']} on {built.base['dataset']}, {built.base['num_epochs']} epochs"
    for prefix in [os.path.join(built.sweep_dir, "lr_search")] + ([extra] if extra else []):
        with open(prefix + ".md", "w") as f:
            f.write(text)
        plots.plot_lr_search(prefix + ".png", table, fields, target, fits, title, curves)
    print(text, end="", flush=True)
    return fits


def main(argv):
    from kbatch.study import lr_search, runs

    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {' '.join(argv[1:])}")
    rates, batches = parse_rates(_LRS.value), parse_batches(_BATCHES.value)
    if flags.FLAGS.config.lr_scaling != "linear":
        raise ValueError(f"config.lr_scaling={flags.FLAGS.config.lr_scaling!r}: the search walks the lines lr = cB, "
                         "so it needs 'linear'.")
    if _WILDCARDS.value < 0:
        raise ValueError(f"--wildcards={_WILDCARDS.value}: give 0 or more.")
    extra = sweep.outputs(sweep._PREFIX.value and sweep._PREFIX.value + "_lr", {"markdown": ".md", "plot": ".png"})
    theory_run = theory_result(sweep.parse_targets(sweep._TARGETS.value, [flags.FLAGS.config.target_accuracy or 0.95])[0])
    try:
        built, targets, table = sweep.run(lr_search.points(rates, batches, _WILDCARDS.value, _SEED.value))
    except runs.SweepStopped as stop:
        print(f"lr_search: {stop}", file=sys.stderr)
        return stop.exit_code
    analyse(built, targets, table, extra and sweep._PREFIX.value + "_lr", theory_run)
    return 0


def parse_flags(argv):
    """The tool's own flags, then kbatch-train's parser (`--config` and its overrides: it imports
    kbatch and TensorFlow)."""
    study_output.refuse_unknown("lr_search", argv)
    from kbatch.train import one_line_parser

    return one_line_parser("lr_search", sweep.define_config)(argv)


if __name__ == "__main__":
    study_output.run_tool("lr_search", main, __doc__, flags_parser=parse_flags,
                          config_help=study_output.CONFIG_HELP)
