"""The staleness measured in runs (`tools/staleness_report.py`): a markdown table (each run's
accuracy, mean and largest staleness, the share of its updates at each delay) and a figure of the
histograms. A synchronous run is at staleness 0; a run with `config.staleness` tau, at exactly tau
(the delay line)."""

import json
import os

from kbatch.study import plots

SHOWN_DELAYS = 4  # the table's columns: the share at tau = 0 .. 3, then the rest together


def read_runs(entries):
    """[(label, result)] of the LABEL=MODEL_DIR entries (a run with `config.staleness` labelled
    with it, and its summary put in the result); a ValueError naming a bad one."""
    runs = []
    for entry in entries:
        label, _, model_dir = entry.partition("=")
        path = os.path.join(model_dir, "result.json")
        if not label or not model_dir:
            raise ValueError(f"--runs: {entry!r} is not LABEL=MODEL_DIR.")
        if not os.path.exists(path):
            raise ValueError(f"--runs: {label}={model_dir} has no result.json: give a finished run's model_dir.")
        with open(path) as f:
            result = json.load(f)
        tau = configured_staleness(model_dir)
        if tau and not result.get("staleness"):
            result = {**result, "staleness": delayed_by(tau, result["steps"])}
            label = f"{label} (config.staleness={tau})"
        runs.append((label, result))
    if not runs:
        raise ValueError("--runs is required: LABEL=MODEL_DIR,...")
    return runs


def configured_staleness(model_dir):
    """The run's `config.staleness` (its config.json; 0 when there is none or it has no such field)."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        config = json.load(f)
    return (config.get("staleness") or 0) if isinstance(config, dict) else 0


def delayed_by(tau, steps):
    """The staleness summary of `steps` updates each applying the gradient of exactly `tau` updates
    before (the delay line; its first tau updates apply the zero gradient of the filling line)."""
    return {"counts": [0] * tau + [steps], "mean": float(tau), "max": tau}


def summary_of(result):
    """The run's staleness as `result.json` has it (counts per delay, mean, max); a synchronous
    run: every update at 0."""
    return result.get("staleness") or {"counts": [result["steps"]], "mean": 0.0, "max": 0}


def table(runs):
    """The markdown table of `read_runs`'s runs."""
    delays = [f"tau {t}" for t in range(SHOWN_DELAYS)] + [f"tau >= {SHOWN_DELAYS}"]
    lines = [
        "| run | final accuracy (%) | best (%) | updates | mean staleness | max | " + " | ".join(delays) + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(delays),
    ]
    for label, result in runs:
        summary = summary_of(result)
        counts = summary["counts"]
        total = sum(counts)
        shares = [*counts[:SHOWN_DELAYS], *[0] * (SHOWN_DELAYS - len(counts)), sum(counts[SHOWN_DELAYS:])]
        cells = [f"{100 * n / total:.1f}%" for n in shares]
        lines.append(
            f"| {label} | {100 * result['final_eval_accuracy']:.2f} | {100 * result['best_eval_accuracy']:.2f}"
            f" | {total} | {summary['mean']:.2f} | {summary['max']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def report(entries, markdown_path, plot_path):
    """Read the LABEL=MODEL_DIR `entries`, write the table to `markdown_path` and the histograms to
    `plot_path`; the table. A ValueError names a bad entry before anything is written."""
    runs = read_runs(entries)
    text = table(runs)
    with open(markdown_path, "w") as f:
        f.write(text)
    summaries = {label: summary_of(result) for label, result in runs}
    plots.plot_staleness(plot_path, {f"{label} (mean {s['mean']:.2f})": s["counts"] for label, s in summaries.items()})
    return text
