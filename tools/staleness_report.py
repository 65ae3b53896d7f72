"""The staleness measured in runs (`result.json`'s `staleness`, written by parameter-server
runs: `kbatch.training.backends.ps_backend`), side by side: a markdown table (the run, its accuracy, mean
and largest staleness, and the share of its updates at each delay) and a figure of the
histograms (updates per delay, log scale). A synchronous run is listed at staleness 0; a run
with the simulated delay `config.staleness = tau` (its `config.json`; `kbatch.training.transforms.delay_line`)
has every update exactly tau updates stale, and its label says so.

  python tools/staleness_report.py --runs=sync=runs/sync,2_workers=runs/ps2 \\
      --markdown=/tmp/staleness.md --plot=/tmp/staleness.png
"""

from absl import flags

from kbatch_cli import refuse_existing, run_tool

RUNS = flags.DEFINE_list("runs", [], "LABEL=MODEL_DIR of each finished run, in the order to show them.")
MARKDOWN = flags.DEFINE_string("markdown", None, "The table (markdown) to write.")
PLOT = flags.DEFINE_string("plot", None, "The histograms (PNG) to write.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --markdown and --plot if they exist.")


def main(argv):
    del argv
    refuse_existing({"markdown": MARKDOWN.value, "plot": PLOT.value}, OVERWRITE.value)
    from kbatch.study import staleness_report  # after the checks: kbatch starts TensorFlow

    print(staleness_report.report(RUNS.value, MARKDOWN.value, PLOT.value), end="")


if __name__ == "__main__":
    run_tool("staleness_report", main, __doc__)
