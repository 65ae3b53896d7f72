"""The axes the study figures share: a log2 batch-size (or worker-count) axis, and a log axis
against epochs for the diagnostics recorded over training. Matplotlib only (no kbatch, Keras or
TensorFlow), so the NumPy-only reports draw them too."""


def batch_axis(ax, batches, label="global batch size"):
    """A log2 batch axis with a tick at each batch tried."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel(label)
    ax.grid(alpha=0.3, which="both")


def log_over_epochs(ax, ylabel):
    """A log y axis against epochs, with a grid and a legend."""
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
