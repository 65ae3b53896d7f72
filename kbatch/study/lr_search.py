"""The learning rate searched at every batch size, as Shallue et al. 2019 re-tune it: points along
the lines lr = c B (a few c, given as the rate at `base_batch_size` with the linear rule) and a
few random "wildcard" rates off those lines; then the best rate at each batch, the steps it
takes there, and the exponent alpha of lr* ~ B^alpha (the linear rule says 1; Shallue et al. and
McCandlish et al. find it near 1 at small batch and falling to 0 past the critical batch).
"""

import math

import numpy as np

from kbatch.study import report

RATE = "base_learning_rate"


def points(optimizer_rates, batch_sizes, wildcards=0, seed=0):
    """Override dicts: every (optimizer, batch, rate) of `optimizer_rates` ({optimizer: [rates at
    base_batch_size]}) and, per (optimizer, batch), `wildcards` rates drawn log-uniformly from
    [min / 2, 2 max] of that optimizer's rates (three significant digits, so they name a folder)."""
    rng = np.random.default_rng(seed)
    out = []
    for optimizer, rates in optimizer_rates.items():
        low, high = math.log(min(rates) / 2), math.log(2 * max(rates))
        for batch in batch_sizes:
            drawn = [float(f"{math.exp(rng.uniform(low, high)):.3g}") for _ in range(wildcards)]
            for rate in list(rates) + [r for r in drawn if r not in rates]:
                out.append({"optimizer": optimizer, "batch_size": batch, RATE: rate})
    return out


def group_key(row, fields):
    return tuple(row[f] for f in fields)


def group_label(group, fields):
    """`optimizer=lars, warmup_epochs=2.5` for the group key (values of `fields`)."""
    return ", ".join(f"{f}={v}" for f, v in zip(fields, group))


def best_rows(table, fields, column):
    """{group: {batch: row}}: at each batch of each group (one setting of `fields`), the row that
    reached the target of `column` in the fewest steps (ties: the higher final accuracy), or, for
    column "final_eval_accuracy", the highest final accuracy. Unfinished points never win."""
    best = {}
    for row in table:
        if row["state"] != "finished" or row[column] is None:
            continue
        score = (-row[column],) if column == "final_eval_accuracy" else (row[column], -row["final_eval_accuracy"])
        slot = best.setdefault(group_key(row, fields), {})
        held = slot.get(row["batch_size"])
        if held is None or score < held[0]:
            slot[row["batch_size"]] = (score, row)
    return {g: {b: row for b, (_, row) in sorted(by_batch.items())} for g, by_batch in best.items()}


def at_edge(table, row, fields):
    """Whether `row`'s rate is the smallest or largest tried at its batch in its group: the best
    rate may then lie outside the searched range."""
    rates = [
        r[RATE]
        for r in table
        if r["batch_size"] == row["batch_size"] and group_key(r, fields) == group_key(row, fields)
    ]
    return row[RATE] in (min(rates), max(rates))


def fit_exponent(batches, rates):
    """(alpha, standard error) of the least-squares line log lr* = alpha log B + const; the error
    is the slope's standard error from the residuals (None with fewer than 3 batches)."""
    x, y = np.log(np.asarray(batches, float)), np.log(np.asarray(rates, float))
    if len(x) < 2:
        return None, None
    slope, intercept = np.polyfit(x, y, 1)
    if len(x) < 3:
        return float(slope), None
    residual = y - (slope * x + intercept)
    stderr = math.sqrt(residual @ residual / (len(x) - 2) / ((x - x.mean()) @ (x - x.mean())))
    return float(slope), stderr


def regimes(curve):
    """The three regimes of Shallue et al. 2019 along a steps-to-target curve ({batch: steps}):
    [(B, 2B, name)] for each doubling, "perfect" when the steps fall by at least 0.6x (near the
    ideal 0.5x), "diminishing" when they fall, but less, "none" when they fall by under 10%."""
    batches = sorted(curve)
    out = []
    for small, large in zip(batches, batches[1:]):
        ratio = (curve[large] / curve[small]) ** (1 / math.log2(large / small))  # per doubling
        out.append((small, large, "perfect" if ratio <= 0.6 else "diminishing" if ratio <= 0.9 else "none"))
    return out


def summary_rows(table, fields, target):
    """Per group and batch: the best rate by steps to `target` and by final accuracy."""
    steps = report.target_columns(target)[0]
    by_steps, by_final = best_rows(table, fields, steps), best_rows(table, fields, "final_eval_accuracy")
    out = []
    for group in sorted(set(by_steps) | set(by_final), key=str):
        for batch in sorted(set(by_steps.get(group, {})) | set(by_final.get(group, {}))):
            fast, good = by_steps.get(group, {}).get(batch), by_final.get(group, {}).get(batch)
            out.append(
                {
                    "group": group,
                    "batch_size": batch,
                    "rate_by_steps": fast and fast["peak_learning_rate"],
                    "steps": fast and fast[steps],
                    "edge_by_steps": bool(fast) and at_edge(table, fast, fields),
                    "rate_by_final": good and good["peak_learning_rate"],
                    "final_eval_accuracy": good and good["final_eval_accuracy"],
                    "edge_by_final": bool(good) and at_edge(table, good, fields),
                }
            )
    return out


def summary_markdown(fields, target, best, fits, summary):
    """The best rates per batch (`summary`, see `summary_rows`), then per group its alpha and
    regimes (`best`, see `best_rows`; `fits`, see `fit_exponent`), in markdown."""
    lines = [
        f"Best peak learning rate per batch (by steps to {100 * target:g}%, and by final accuracy); "
        "* marks a rate at the edge of the range searched there:",
        "",
        "| group | batch | rate by steps | steps | rate by final | final (%) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        rate_steps = _rate(row["rate_by_steps"], row["edge_by_steps"])
        rate_final = _rate(row["rate_by_final"], row["edge_by_final"])
        final = f"{100 * row['final_eval_accuracy']:.2f}" if row["final_eval_accuracy"] is not None else "-"
        lines.append(
            f"| {group_label(row['group'], fields)} | {row['batch_size']} | {rate_steps} | "
            f"{row['steps'] or '-'} | {rate_final} | {final} |"
        )
    if not best:
        return "\n".join(lines + ["", no_target_line(target)]) + "\n"
    lines += ["", "| group | alpha (lr* ~ B^alpha, by steps) | regimes (per doubling of the batch) |", "|---|---|---|"]
    column = f"steps_to_{target:g}"
    for group, by_batch in best.items():
        shown = ", ".join(f"{a}-{b} {name}" for a, b, name in regimes({b: r[column] for b, r in by_batch.items()}))
        lines.append(f"| {group_label(group, fields)} | {_alpha(fits[group])} | {shown or '-'} |")
    return "\n".join(lines) + "\n"


def no_target_line(target):
    """What the search says when no run reached `target`: there is no best rate by steps to fit."""
    return f"No run reached {100 * target:g}%: no best rate by steps and no alpha (lower --targets, or train longer)."


def _rate(rate, edge):
    return "-" if not rate else f"{rate:.4g}" + ("*" if edge else "")


def _alpha(fit):
    alpha, error = fit
    return "-" if alpha is None else f"{alpha:.2f}" + (f" ± {error:.2f}" if error is not None else "")
