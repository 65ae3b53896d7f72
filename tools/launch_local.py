"""Start N multi-worker training processes on this machine, the way N hosts would run them.

  python tools/launch_local.py --workers=2 -- \\
      kbatch-train --config=configs/mnist1d_cnn.py --config.strategy=multiworker

Everything after `--` is the worker command, run once per worker. Each worker gets its own
`TF_CONFIG` (the cluster of N workers on free ports of 127.0.0.1, and its own task index; worker 0
is the chief), runs in its own process group, and has each line of its stdout / stderr printed
with a `[worker i] ` prefix. The launcher exits with the largest exit code of the workers. As
soon as one worker fails, the others are stopped (SIGTERM to their whole process group, SIGKILL
after `--grace_s`): a multi-worker job with a dead worker would otherwise wait in its next
collective op forever. `--timeout_s` stops everything past that many seconds (exit code 124);
Ctrl-C stops everything (exit code 130). Nothing is left running.

With `--ps=M` it starts a parameter-server cluster instead: a coordinator (TF_CONFIG task
`chief`), the `--workers` workers and M parameter servers, each running the same command:

  python tools/launch_local.py --workers=2 --ps=1 -- \\
      kbatch-train --config.strategy=parameter_server

The coordinator trains; the workers and parameter servers serve it (`kbatch.distribute.serve`)
and never exit on their own: when the coordinator exits, everything is stopped and the launcher
exits with the coordinator's code. A server that fails first stops everything, as above.

On real machines there is no launcher: set TF_CONFIG on each host and run the same command there
(docs/distributed.md).
"""

import signal
import sys

from absl import flags

import kbatch_cli

FLAGS = flags.FLAGS
flags.DEFINE_integer("workers", 2, "Number of worker processes.", lower_bound=1)
flags.DEFINE_integer(
    "ps",
    0,
    "Parameter servers: with >= 1, a parameter-server cluster (a coordinator, the "
    "workers and these) for --config.strategy=parameter_server.",
    lower_bound=0,
)
flags.DEFINE_float("timeout_s", None, "Stop all workers after this many seconds (exit code 124).")
flags.DEFINE_float("grace_s", 5.0, "Seconds between SIGTERM and SIGKILL when stopping workers.", lower_bound=0)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM to the launcher stops the workers as Ctrl-C does


def main(argv):
    command = argv[1:]
    if not command:
        raise ValueError("give the worker command after `--`, e.g. -- kbatch-train --config.strategy=multiworker")
    launcher = kbatch_cli.import_light("kbatch.launcher")  # no Keras, no TensorFlow
    signal.signal(signal.SIGTERM, _interrupt)
    # A shell without job control starts a background command (`launch_local.py ... &`) with
    # SIGINT ignored, and Python then keeps it ignored: Ctrl-C must stop the workers all the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return launcher.launch(command, FLAGS.workers, timeout_s=FLAGS.timeout_s, grace_s=FLAGS.grace_s, ps=FLAGS.ps)
    except OSError as error:  # the command does not exist or cannot be run
        print(f"[launcher] cannot start {command[0]!r}: {error}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    kbatch_cli.run_tool("launch_local", main, __doc__)
