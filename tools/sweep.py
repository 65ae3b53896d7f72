"""Run a sweep of one config, any fields, each point in its own model_dir under --sweep_dir, and
report it (kbatch.study.studies): a CSV with one row per point, a markdown table, a PNG (steps and
examples to each target against batch size, log-log, with perfect scaling; final accuracy), and
TensorBoard HParams summaries (`tensorboard --logdir SWEEP_DIR/tensorboard`).

  python tools/sweep.py --sweep_dir=/tmp/sweep --config.dataset=mnist1d/original \
      --config.num_epochs=2 --grid=batch_size=64,256,1024 --grid=optimizer=momentum,lars

  python tools/sweep.py --sweep_dir=/tmp/sweep --report_only --targets=0.9,0.95

Each --grid axis is FIELD=VALUE[,VALUE...] (--grid flags naming one field add to its values);
the points are every combination. `--spec=FILE.py` reads a sweep written down: a file defining
SWEEP = {"overrides": {...}, "grid": {...}, "points": [{...}, ...], "targets": [...]} (a point is
a dict of overrides; --grid axes are combined with the spec's). Every point's config is checked
before the first run. The same command again continues a stopped sweep: finished points are read
back, a cut-short point resumes from its checkpoint, a failed or diverged one is left as recorded
(--retry_failed runs it again). A folder holding another sweep is refused. The report goes into
--sweep_dir (report.csv, report.md, report.png), and also to --output_prefix.csv, .md and .png
when given (refused if they exist, unless --overwrite).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kbatch_cli  # noqa: E402

OPTIONS = kbatch_cli.define_sweep_flags()


def define_config():
    kbatch_cli.define_config_flag("The base config every point overrides.")


def main(argv):
    from absl import flags

    from kbatch.study import runs, sweep_command

    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {' '.join(argv[1:])}")
    try:
        sweep_command.run(flags.FLAGS.config, OPTIONS())
    except runs.SweepStopped as stop:
        print(f"sweep: {stop}", file=sys.stderr)
        return stop.exit_code
    return 0


def parse_flags(argv):
    """The tool's own flags, then kbatch-train's parser (`--config` and its overrides: it imports
    kbatch and TensorFlow)."""
    kbatch_cli.refuse_unknown("sweep", argv)
    from kbatch.train import one_line_parser

    return one_line_parser("sweep", define_config)(argv)


if __name__ == "__main__":
    kbatch_cli.run_tool("sweep", main, __doc__, flags_parser=parse_flags, config_help=kbatch_cli.CONFIG_HELP)
