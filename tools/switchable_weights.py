"""Which statistics switchable normalization learned to use (Luo et al. 2018, Figure 4): for each
finished run of a sweep whose norm is `switchable`, the importance weights (the softmax of the
learned logits) of the mean and of the variance, per mode, averaged over the model's
SwitchableNormalization layers, in a markdown table, one row per run, by batch size
(kbatch.study.switchable).

  python tools/switchable_weights.py --sweep_dir=/tmp/norms --markdown=/tmp/switchable_weights.md
"""

from absl import flags

from kbatch_cli import refuse_existing, run_tool

SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "A sweep's folder (tools/sweep.py's --sweep_dir).")
MARKDOWN = flags.DEFINE_string("markdown", None, "The table (markdown) to write.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --markdown if it exists.")


def main(argv):
    del argv
    from kbatch.study import switchable

    refuse_existing({"markdown": MARKDOWN.value}, OVERWRITE.value)
    if not SWEEP_DIR.value:
        raise ValueError("--sweep_dir is required.")
    text = switchable.weights_table(SWEEP_DIR.value)
    with open(MARKDOWN.value, "w") as file:
        file.write(text)
    print(text, end="")


if __name__ == "__main__":
    run_tool("switchable_weights", main, __doc__)
