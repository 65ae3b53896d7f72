"""Joining a multi-process JAX job: one process per host of a TPU pod slice (or of a GPU cluster),
or several on one machine (`tools/launch_local.py --jax_processes=N`). Every process runs the same
command; `join()` connects it to the others (`jax.distributed.initialize`) before any JAX
computation, after which `jax.devices()` lists the devices of every process.

The job is named by the environment, the variables `keras.distribution.initialize()` reads:

  KERAS_DISTRIBUTION_JOB_ADDRESSES  host:port of process 0 (the coordinator), or of every process,
                                    comma-separated (the first is the coordinator)
  KERAS_DISTRIBUTION_NUM_PROCESSES  N, the number of processes
  KERAS_DISTRIBUTION_PROCESS_ID     this process's index, 0 .. N-1

(JAX's own `JAX_COORDINATOR_ADDRESS` may stand for the first), or by `KBATCH_JAX_DISTRIBUTED=auto`
where JAX finds the job itself (a Cloud TPU pod slice, SLURM, Open MPI, Kubernetes). With none of
them set there is no job: one process, `join()` does nothing.

`join()` calls `jax.distributed.initialize` as `keras.distribution.initialize()` does, but with
bounded waits: a process whose peer died leaves within `shutdown_timeout_s` at exit (JAX waits
300 s by default) and a dead peer is noticed within `heartbeat_timeout_s`. It does not seed
Keras (Keras's `initialize` agrees on a random seed where none is set): seed every process alike,
`keras.utils.set_random_seed(seed)`, as `kbatch.training.train` does from `config.seed`.

At the end JAX waits, at exit, for every process to reach it (`jax.distributed.shutdown`). A
process that ends with an error under `leaving_at_once_on_error` (kbatch-train) leaves at once
instead, with its exit code: its peers are stopped by the launcher, or end when they miss its
heartbeat.

Imports nothing of kbatch, and JAX only in `join`: `tools/launch_local.py` reads the names here.
"""

import os
import socket
import sys
import time
import traceback

JOB_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
JAX_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
AUTO_VARIABLE, AUTO = "KBATCH_JAX_DISTRIBUTED", "auto"
JOB_VARIABLES = (JOB_ADDRESSES, NUM_PROCESSES, PROCESS_ID, JAX_COORDINATOR, AUTO_VARIABLE)
AUTO_FINDS = "a Cloud TPU pod slice, SLURM, Open MPI, Kubernetes"


def job_settings(environ=None):
    """The job `environ` (default `os.environ`) names, as `jax.distributed.initialize`'s
    `coordinator_address`, `num_processes`, `process_id` (None: JAX finds it, with
    `KBATCH_JAX_DISTRIBUTED=auto`); None where it names no job. A one-line ValueError naming the
    variable where a value is bad or missing."""
    environ = os.environ if environ is None else environ
    if not any(environ.get(name) for name in JOB_VARIABLES):
        return None
    auto = _auto(environ.get(AUTO_VARIABLE, ""))
    num_processes = _integer(environ, NUM_PROCESSES, 1, None, ">= 1 (the number of processes in the job)")
    highest = num_processes - 1 if num_processes else f"{NUM_PROCESSES} - 1"
    process_id = _integer(environ, PROCESS_ID, 0, num_processes, f"0 .. {highest} (this process's index)")
    coordinator = _coordinator(environ, num_processes)
    given = ((JOB_ADDRESSES, coordinator), (NUM_PROCESSES, num_processes), (PROCESS_ID, process_id))
    missing = [name for name, value in given if value is None]
    if missing and not auto:
        raise ValueError(
            f"{missing[0]} is not set: a JAX job needs {JOB_ADDRESSES}, {NUM_PROCESSES} and {PROCESS_ID} "
            f"(or {AUTO_VARIABLE}={AUTO} where JAX finds the job itself: {AUTO_FINDS})."
        )
    return {"coordinator_address": coordinator, "num_processes": num_processes, "process_id": process_id}


def _auto(value):
    """Whether `KBATCH_JAX_DISTRIBUTED` asks JAX to find the job; '' is unset."""
    if value.strip().lower() not in ("", AUTO):
        raise ValueError(f"{AUTO_VARIABLE}={value}: must be {AUTO} (JAX finds the job: {AUTO_FINDS}) or unset.")
    return bool(value.strip())


def _integer(environ, name, lowest, above, allowed):
    """The integer variable `name` (None where unset), >= `lowest` and < `above` (None: no bound);
    `allowed` says which in the error."""
    text = environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < lowest or (above is not None and value >= above):
        raise ValueError(f"{name}={text}: must be an integer {allowed}.")
    return value


def _coordinator(environ, num_processes):
    """The coordinator's host:port: the first of KERAS_DISTRIBUTION_JOB_ADDRESSES, else
    JAX_COORDINATOR_ADDRESS, else None."""
    name = JOB_ADDRESSES if environ.get(JOB_ADDRESSES, "").strip() else JAX_COORDINATOR
    text = environ.get(name, "").strip()
    if not text:
        return None
    addresses = [address.strip() for address in text.split(",")]
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{name}={text}: {address!r} is not host:port (a port 1 .. 65535).")
    if len(addresses) > 1 and num_processes is not None and len(addresses) != num_processes:
        raise ValueError(f"{name}={text}: {len(addresses)} addresses, but {NUM_PROCESSES}={num_processes}.")
    return addresses[0]


def join(environ=None, initialization_timeout_s=300, heartbeat_timeout_s=60, shutdown_timeout_s=60):
    """Join the JAX job `environ` names (see the module docstring); return whether there is one.

    Call it first, before any JAX computation; calling it again does nothing. A bad setting, a job
    joined too late or one that cannot be reached within `initialization_timeout_s` is a one-line
    ValueError. JAX leaves the job at exit (`jax.distributed.shutdown`)."""
    settings = job_settings(environ)
    if settings is None:
        return False
    import jax

    if jax.distributed.is_initialized():
        return True
    try:
        if settings["process_id"] and settings["coordinator_address"]:
            _wait_for_coordinator(settings["coordinator_address"], initialization_timeout_s)
        jax.distributed.initialize(
            **settings,
            initialization_timeout=initialization_timeout_s,
            heartbeat_timeout_seconds=heartbeat_timeout_s,
            shutdown_timeout_seconds=shutdown_timeout_s,
        )
    except (OSError, RuntimeError, ValueError) as error:  # JaxRuntimeError is a RuntimeError
        raise ValueError(f"cannot join the JAX job ({_described(settings)}): {_first_line(error)}") from None
    return True


def _wait_for_coordinator(address, timeout_s):
    """Return once something listens at `address` (process 0's coordinator), else an OSError after
    `timeout_s`: JAX would end the process (exit code 134) where it finds no coordinator."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise OSError(f"nothing answers at {address} after {timeout_s} s (process 0 serves there)") from None
            time.sleep(0.2)


def _described(settings):
    """ "process 1 of 2, coordinator 127.0.0.1:1234", with what JAX was left to find."""
    process = settings["process_id"] if settings["process_id"] is not None else "?"
    count = settings["num_processes"] or "?"
    coordinator = settings["coordinator_address"] or f"found by JAX ({AUTO_VARIABLE}={AUTO})"
    return f"process {process} of {count}, coordinator {coordinator}"


def _first_line(error):
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def joined():
    """Whether this process is in a multi-process JAX job (without importing JAX)."""
    jax = sys.modules.get("jax")
    return bool(jax and jax.distributed.is_initialized())


def leaving_at_once_on_error(main):
    """`main(argv)` (a command's, for `absl.app.run`) wrapped: where it returns a non-zero exit code
    or raises in a job it joined, the process leaves at once with that code (1 after a traceback).
    JAX's exit would wait `shutdown_timeout_s` for peers that are not leaving, then abort every
    process (exit code 134), the error's own code lost."""

    def run(argv):
        try:
            code = main(argv)
        except Exception:  # noqa: BLE001 - printed as Python would, then the same exit
            if not joined():
                raise
            traceback.print_exc()
            code = 1
        if code and joined():
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code

    return run
