"""What the batch-size study tools share about their output files: the refusal to overwrite a
table or plot a person made (critical_batch, sharpness_report, switchable_weights, throughput), the
batch-size axis of their plots, and the log axis over epochs of the
diagnostics' plots.

Kept free of TensorFlow, so a bad flag is reported before TensorFlow starts."""

import os


def refuse_existing(outputs, overwrite):
    """ValueError naming the flag if an output path (a dict flag -> path) is empty, or exists
    and `overwrite` is False."""
    for flag, path in outputs.items():
        if not path:
            raise ValueError(f"--{flag} is required.")
        if os.path.exists(path) and not overwrite:
            raise ValueError(f"--{flag}={path} exists: refusing to overwrite it (pass --overwrite).")


def log_over_epochs(ax, ylabel):
    """A log y axis against epochs, with a grid and a legend (the diagnostics' plots over training)."""
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)


def batch_size_axis(ax, batches, label):
    """A log2 x axis with a tick at each batch size tried (`kbatch.study.plots.batch_axis`)."""
    from kbatch.study.plots import batch_axis

    batch_axis(ax, batches, label)
