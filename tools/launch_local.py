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

With `--jax_processes=N` it starts a JAX job instead, the stand-in for N hosts of a TPU pod slice:

  python tools/launch_local.py --jax_processes=2 --devices_per_process=2 -- \\
      kbatch-train --config.backend=jax

Each process gets the variables `keras.distribution.initialize()` reads (`kbatch.jax_job`):
KERAS_DISTRIBUTION_JOB_ADDRESSES (process 0's coordinator, on a free port of 127.0.0.1),
KERAS_DISTRIBUTION_NUM_PROCESSES=N and KERAS_DISTRIBUTION_PROCESS_ID, with KERAS_BACKEND=jax,
JAX_PLATFORMS=cpu and XLA_FLAGS=--xla_force_host_platform_device_count=M: N x M CPU devices in
one job (collectives over gloo). Its output is prefixed `[process i] `; failures, timeouts and
Ctrl-C stop everything as above.

On real machines there is no launcher: set TF_CONFIG (or the JAX job's variables) on each host and
run the same command there (docs/distributed.md).
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
flags.DEFINE_integer(
    "jax_processes",
    None,
    "A JAX job of this many processes instead of TF workers (--config.backend=jax).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "devices_per_process",
    None,
    "Host CPU devices of each JAX process (default 1; with --jax_processes).",
    lower_bound=1,
)
flags.DEFINE_float("timeout_s", None, "Stop all workers after this many seconds (exit code 124).")
flags.DEFINE_float("grace_s", 5.0, "Seconds between SIGTERM and SIGKILL when stopping workers.", lower_bound=0)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM to the launcher stops the workers as Ctrl-C does


def _job():
    """(processes, devices_per_process) the flags ask for: TF workers (devices None) or a JAX job;
    a ValueError naming a flag that does not go with the others."""
    if FLAGS.jax_processes is None:
        if FLAGS.devices_per_process is not None:
            raise ValueError("--devices_per_process goes with --jax_processes (the host devices of each JAX process).")
        return FLAGS.workers, None
    if FLAGS["ps"].present:
        raise ValueError("--ps with --jax_processes: a JAX job has no parameter servers.")
    if FLAGS["workers"].present:
        raise ValueError("--workers with --jax_processes: give one (--workers starts TF workers, --jax_processes JAX).")
    return FLAGS.jax_processes, FLAGS.devices_per_process or 1


def main(argv):
    command = argv[1:]
    if not command:
        raise ValueError("give the worker command after `--`, e.g. -- kbatch-train --config.strategy=multiworker")
    processes, devices = _job()
    launcher = kbatch_cli.import_light("kbatch.launcher")  # no Keras, no TensorFlow
    signal.signal(signal.SIGTERM, _interrupt)
    # A shell without job control starts a background command (`launch_local.py ... &`) with
    # SIGINT ignored, and Python then keeps it ignored: Ctrl-C must stop the workers all the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return launcher.launch(
            command,
            processes,
            timeout_s=FLAGS.timeout_s,
            grace_s=FLAGS.grace_s,
            ps=FLAGS.ps,
            devices_per_process=devices,
        )
    except OSError as error:  # the command does not exist or cannot be run
        print(f"[launcher] cannot start {command[0]!r}: {error}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    kbatch_cli.run_tool("launch_local", main, __doc__)
