"""The sweep's figure, after Shallue et al. 2019 (Fig. 1): steps and examples to each target
against batch size on log-log axes, each series with its perfect-scaling line through its
smallest batch (steps halve when the batch doubles; examples stay the same), and the final
accuracy against batch size. A series is one setting of every varied field but the batch.
"""

from matplotlib.figure import Figure  # not pyplot: drawing a file leaves a notebook's plotting backend alone

from kbatch.study import lr_search, report
from kbatch.study.axes import batch_axis


def series(table, axes):
    """{label: rows sorted by batch}: the rows grouped by every varied field but `batch_size`."""
    others = [a for a in axes if a != "batch_size"]
    groups = {}
    for row in table:
        label = ", ".join(f"{a}={report.cell_text(row[a])}" for a in others) or "all"
        groups.setdefault(label, []).append(row)
    return {label: sorted(rows, key=lambda r: r["batch_size"]) for label, rows in groups.items()}


def _to_target(ax, groups, column, per_step, theory=None):
    """One panel of steps (per_step) or examples to a target, with perfect-scaling lines."""
    for i, (label, rows) in enumerate(groups.items()):
        points = [(r["batch_size"], r[column]) for r in rows if r[column]]
        if not points:
            continue
        ax.plot(*zip(*points), "o-", color=f"C{i % 10}", label=label)
        b0, y0 = points[0]
        ideal = [y0 * b0 / b if per_step else y0 for b, _ in points]
        ax.plot([b for b, _ in points], ideal, "--", color=f"C{i % 10}", lw=0.8, alpha=0.6)
    for name, curve in (theory or {}).items():
        batches = sorted(curve)
        ax.plot(batches, [curve[b] if per_step else curve[b] * b for b in batches], "k:", lw=1.5, label=name)
    ax.set_yscale("log")


def plot_sweep(path, table, axes, targets, title, theory=None):
    """Write the figure to `path` (PNG). `theory` maps a label to {batch: steps} curves (the NQM's),
    drawn dotted beside the first target's measurements."""
    groups = series(table, axes)
    batches = sorted({r["batch_size"] for r in table})
    fig = Figure(figsize=(15, 4.2 * len(targets)))
    grid = fig.subplots(len(targets), 3, squeeze=False)
    for t, target in enumerate(targets):
        steps, examples = report.target_columns(target)
        curve = theory if t == 0 else None
        _to_target(grid[t][0], groups, steps, True, curve)
        _to_target(grid[t][1], groups, examples, False, curve)
        grid[t][0].set_ylabel(f"steps to {100 * target:g}% test accuracy")
        grid[t][1].set_ylabel(f"examples to {100 * target:g}% test accuracy")
    for t, column in enumerate(["final_eval_accuracy", "best_eval_accuracy"][: len(targets)]):
        for i, (label, rows) in enumerate(groups.items()):
            points = [(r["batch_size"], 100 * r[column]) for r in rows if r[column] is not None]
            if points:
                grid[t][2].plot(*zip(*points), "o-", color=f"C{i % 10}", label=label)
        grid[t][2].set_ylabel(f"{column.replace('_', ' ')} (%)")
    for ax in grid.flat:
        batch_axis(ax, batches)
    if len(targets) > 2:
        for ax in grid[2:, 2]:
            ax.axis("off")
    # On the steps panel, unless no series reached the first target (then on the accuracy panel);
    # long labels (several swept fields) below the panels, where they cover no line.
    legend_ax = grid[0][0] if grid[0][0].get_legend_handles_labels()[0] else grid[0][2]
    handles, labels = legend_ax.get_legend_handles_labels()
    legend = dict(fontsize=7, title="dashed: perfect scaling", title_fontsize=7)
    bottom = 0.0
    if max(map(len, labels), default=0) > 40:
        fig.legend(handles, labels, loc="lower center", ncol=2, **legend)
        bottom = (2 + (len(labels) + 1) // 2) * 0.16 / (4.2 * len(targets))
    else:
        legend_ax.legend(**legend)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=110)


REGIME_SHADES = {"perfect": "#d9f0d3", "diminishing": "#fee8c8", "none": "#f4cccc"}


def _lr_panel(ax, table, best, fits, fields):
    """Every point (batch, peak rate): reached the target (filled), not (open), failed (x); the
    best rate per batch joined, with its fitted power law."""
    for i, (group, by_batch) in enumerate(best.items()):
        color = f"C{i % 10}"
        mine = [r for r in table if tuple(r[f] for f in fields) == group]
        done = [r for r in mine if r["state"] == "finished"]
        ax.scatter(
            [r["batch_size"] for r in done],
            [r["peak_learning_rate"] for r in done],
            s=18,
            facecolors="none",
            edgecolors=color,
            alpha=0.6,
        )
        failed = [r for r in mine if r["state"] in ("failed", "diverged")]
        ax.scatter(
            [r["batch_size"] for r in failed],
            [r["peak_learning_rate"] for r in failed],
            marker="x",
            color=color,
            alpha=0.6,
        )
        batches = list(by_batch)
        ax.plot(
            batches,
            [by_batch[b]["peak_learning_rate"] for b in batches],
            "o-",
            color=color,
            label=f"{lr_search.group_label(group, fields)}: alpha {_alpha_text(fits[group])}",
        )
    ax.set_yscale("log")
    ax.set_ylabel("peak learning rate (o: tried, x: diverged or failed)")


def _alpha_text(fit):
    alpha, error = fit
    if alpha is None:
        return "-"
    return f"{alpha:.2f}" + (f" ± {error:.2f}" if error is not None else "")


def _steps_panel(ax, best, column, fields, theory):
    """Steps to the target at the best rate, with perfect scaling and the regimes shaded."""
    for i, (group, by_batch) in enumerate(best.items()):
        curve = {b: r[column] for b, r in by_batch.items()}
        b0 = min(curve)
        ax.plot(list(curve), list(curve.values()), "o-", color=f"C{i % 10}", label=lr_search.group_label(group, fields))
        ax.plot(list(curve), [curve[b0] * b0 / b for b in curve], "--", color=f"C{i % 10}", lw=0.8, alpha=0.6)
        if i == 0:
            for small, large, name in lr_search.regimes(curve):
                ax.axvspan(small, large, color=REGIME_SHADES[name], alpha=0.5, lw=0)
    for name, curve in (theory or {}).items():
        ax.plot(sorted(curve), [curve[b] for b in sorted(curve)], "k:", lw=1.5, label=name)
    ax.set_yscale("log")


def plot_lr_search(path, table, fields, target, fits, title, theory=None):
    """The LR search's figure: the rates tried and the best per batch with alpha; steps to `target`
    at the best rate (regimes shaded for the first group: green perfect scaling, orange diminishing
    returns, red none); the final accuracy at the best rate by final accuracy."""
    column = report.target_columns(target)[0]
    by_steps = lr_search.best_rows(table, fields, column)
    by_final = lr_search.best_rows(table, fields, "final_eval_accuracy")
    fig = Figure(figsize=(16, 4.6))
    rates, steps, final = fig.subplots(1, 3)
    _lr_panel(rates, table, by_steps, fits, fields)
    _steps_panel(steps, by_steps, column, fields, theory)
    steps.set_ylabel(f"steps to {100 * target:g}% at the best rate (dashed: perfect scaling)")
    for i, (group, by_batch) in enumerate(by_final.items()):
        final.plot(
            list(by_batch),
            [100 * r["final_eval_accuracy"] for r in by_batch.values()],
            "o-",
            color=f"C{i % 10}",
            label=lr_search.group_label(group, fields),
        )
    final.set_ylabel("final test accuracy at the best rate (%)")
    batches = sorted({r["batch_size"] for r in table})
    if not by_steps:
        steps.text(0.5, 0.5, f"no run reached {100 * target:g}%", transform=steps.transAxes, ha="center")
    for ax in (rates, steps, final):
        batch_axis(ax, batches)
        if ax.get_legend_handles_labels()[0]:  # a panel with no line has no legend (and no warning)
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_staleness(path, histograms):
    """The measured staleness of each run ({label: updates per delay}): the share of its updates
    at each delay tau, on a log axis (the tail is where asynchrony hurts)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for i, (label, counts) in enumerate(histograms.items()):
        total = sum(counts)
        shares = [n / total if n else float("nan") for n in counts]  # no line across a delay never seen
        ax.plot(range(len(counts)), shares, "o-", color=f"C{i % 10}", label=label, markersize=4)
    ax.set_yscale("log")
    ax.set_xlabel("staleness tau (updates applied between an update's read of the weights and its apply)")
    ax.set_ylabel("share of updates")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
