"""The critical batch two ways (McCandlish et al. 2018): fitted from a sweep's steps-to-target
curve, S(B) = S_min + E_min / B, B_crit = E_min / S_min; and predicted by the gradient noise
scale B_simple measured in a run (`--config.noise_scale_every`), read where that run reached the
same target. Writes a markdown table and a plot.

  python tools/critical_batch.py --sweep_csv=docs/results/batch_study.csv --where=optimizer=lars \
      --noise_run=/tmp/noise_default --markdown=/tmp/critical_batch.md --plot=/tmp/critical_batch.png

`--sweep_csv` is the CSV `tools/sweep.py` or `tools/lr_search.py` writes: one row per run, with its
`batch_size` and a `steps_to_<T>` column per target T. The fit uses, at each batch size, the fewest
steps any row kept by `--where` took (the best recipe there: McCandlish et al. tune the LR per
batch); batch sizes where none reached a target are left out of that target's fit.
"""

from absl import flags

from kbatch_cli import refuse_existing, run_tool

SWEEP_CSV = flags.DEFINE_string(
    "sweep_csv", None, "A sweep's report CSV (required), e.g. docs/results/batch_study.csv."
)
WHERE = flags.DEFINE_multi_string("where", [], "FIELD=VALUE: keep only the rows whose FIELD is VALUE; repeatable.")
NOISE_RUN = flags.DEFINE_string("noise_run", None, "model_dir of a run trained with noise_scale_every > 0.")
MARKDOWN = flags.DEFINE_string("markdown", None, "The table (markdown) to write.")
PLOT = flags.DEFINE_string("plot", None, "The plot (PNG) to write.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --markdown and --plot if they exist.")


def main(argv):
    del argv
    refuse_existing({"markdown": MARKDOWN.value, "plot": PLOT.value}, OVERWRITE.value)
    from kbatch.study import critical_batch  # after the checks: kbatch starts TensorFlow

    print(critical_batch.report(SWEEP_CSV.value, WHERE.value, NOISE_RUN.value, MARKDOWN.value, PLOT.value), end="")


if __name__ == "__main__":
    run_tool("critical_batch", main, __doc__)
