"""Sharpness and the generalization gap against the batch size, from finished runs trained with
`--config.sharpness_every`: per run the final sharpness lambda_max, lr x lambda_max at its peak
beside heavy-ball SGD's stability bound 2 + 2m, and train minus test accuracy (the train accuracy
measured here, on the whole training split in inference mode, from the run's `model.keras`).
Writes a markdown table and a plot.

  python tools/sharpness_report.py --runs=/tmp/sharp/b64,/tmp/sharp/none-b256,... \
      --markdown=/tmp/sharpness.md --plot=/tmp/sharpness.png
"""

from absl import flags

from kbatch_cli import refuse_existing, run_tool

RUNS = flags.DEFINE_list("runs", None, "model_dirs of finished runs (trained with sharpness_every > 0).")
MARKDOWN = flags.DEFINE_string("markdown", None, "The table (markdown) to write.")
PLOT = flags.DEFINE_string("plot", None, "The plot (PNG) to write.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --markdown and --plot if they exist.")


def main(argv):
    del argv
    refuse_existing({"markdown": MARKDOWN.value, "plot": PLOT.value}, OVERWRITE.value)
    from kbatch.study import sharpness_report  # after the checks: kbatch starts TensorFlow

    print(sharpness_report.report(RUNS.value, MARKDOWN.value, PLOT.value), end="")


if __name__ == "__main__":
    run_tool("sharpness_report", main, __doc__)
