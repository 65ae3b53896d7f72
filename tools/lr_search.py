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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

import kbatch_cli  # noqa: E402

OPTIONS = kbatch_cli.define_sweep_flags()  # every flag of tools/sweep.py works here too
_BATCHES = flags.DEFINE_list("batch_sizes", [], "Global batch sizes to search the rate at.")
_LRS = flags.DEFINE_multi_string("lrs", [], "OPTIMIZER:RATE,RATE,... rates at base_batch_size; repeat per optimizer.")
_WILDCARDS = flags.DEFINE_integer("wildcards", 0, "Random rates per optimizer and batch, off the lines.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the wildcard rates.")
_THEORY_RUN = flags.DEFINE_string(
    "theory_run",
    None,
    "model_dir of a finished run with sharpness and noise-scale "
    "points: the noisy quadratic model fitted to it is drawn beside SGD-momentum's "
    "curve.",
)


def main(argv):
    from kbatch.study import lr_search_command, runs

    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {' '.join(argv[1:])}")
    try:
        lr_search_command.run(
            flags.FLAGS.config, OPTIONS(), _LRS.value, _BATCHES.value, _WILDCARDS.value, _SEED.value, _THEORY_RUN.value
        )
    except runs.SweepStopped as stop:
        print(f"lr_search: {stop}", file=sys.stderr)
        return stop.exit_code
    return 0


def parse_flags(argv):
    """The tool's own flags, then kbatch-train's parser (`--config` and its overrides: it imports
    kbatch and TensorFlow)."""
    kbatch_cli.refuse_unknown("lr_search", argv)
    from kbatch.train import one_line_parser

    return one_line_parser(
        "lr_search", lambda: kbatch_cli.define_config_flag("The base config every point overrides.")
    )(argv)


if __name__ == "__main__":
    kbatch_cli.run_tool("lr_search", main, __doc__, flags_parser=parse_flags, config_help=kbatch_cli.CONFIG_HELP)
