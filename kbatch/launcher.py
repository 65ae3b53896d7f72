"""Local multi-process jobs (`tools/launch_local.py`): N processes of one command on this machine,
each with its own TF_CONFIG (a multi-worker cluster, or a parameter-server one with a coordinator
and servers) or its own place in a JAX job (`kbatch.jax_job`'s variables, M host CPU devices
each), their output prefixed line by line, and all of them stopped together when one fails, on a
timeout, on Ctrl-C or SIGTERM, and killed by the kernel if the launcher is.

Imports nothing else of kbatch but `kbatch.study.children` and `kbatch.jax_job`: the launcher
loads it with `kbatch_cli.import_light("kbatch.launcher")`, without Keras, TensorFlow and JAX.
"""

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from kbatch import jax_job
from kbatch.study import children

TIMEOUT_EXIT_CODE = 124  # as coreutils' `timeout`
INTERRUPT_EXIT_CODE = 130  # as a shell after Ctrl-C
POLL_SECONDS = 0.05
HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def free_ports(count, host="127.0.0.1"):
    """`count` distinct ports that are free on `host` now (all held open until all are chosen)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_configs(ports, host="127.0.0.1", ps=0):
    """One TF_CONFIG dict per process: the same cluster, each its own task. Without `ps`, the
    ports are workers; with `ps` parameter servers, the first port is the coordinator (`chief`)
    and the last `ps` ones the parameter servers."""
    addresses = [f"{host}:{port}" for port in ports]
    if ps:
        cluster = {"chief": addresses[:1], "worker": addresses[1:-ps], "ps": addresses[-ps:]}
    else:
        cluster = {"worker": addresses}
    return [
        {"cluster": cluster, "task": {"type": job, "index": i}}
        for job, members in cluster.items()
        for i in range(len(members))
    ]


def jax_environments(processes, devices_per_process, port, host="127.0.0.1", xla_flags=""):
    """The variables of each process of a JAX job on `host`: the job's (`kbatch.jax_job`; process 0
    the coordinator, serving on `port` of `host` only), Keras on JAX, and `devices_per_process`
    host CPU devices (replacing a device count in `xla_flags`, the XLA_FLAGS they inherit)."""
    kept = [flag for flag in xla_flags.split() if not flag.startswith(HOST_DEVICES_FLAG + "=")]
    job = {
        jax_job.JOB_ADDRESSES: f"{host}:{port}",
        jax_job.NUM_PROCESSES: str(processes),
        "JAX_COORDINATOR_BIND_ADDRESS": f"{host}:{port}",
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": " ".join([*kept, f"{HOST_DEVICES_FLAG}={devices_per_process}"]),
    }
    return [{**job, jax_job.PROCESS_ID: str(i)} for i in range(processes)]


def exit_code(returncode):
    """A shell-style exit code: a process killed by signal N (returncode -N) counts as 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def ended(returncode):
    """How a process ended, for the launcher's line: "exited with code 3", "was killed by SIGKILL
    (exit code 137)"."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name} (exit code {exit_code(returncode)})"


def dying_with_launcher():
    """The processes' `preexec_fn`: SIGKILL when the launcher dies, even of SIGKILL, which runs no
    `stop`; they resume from their checkpoints when the same command runs again."""
    return children.dying_with_parent(signal.SIGKILL)


class _Printer:
    """Copies a worker's stream to ours line by line, with its prefix (one line at a time)."""

    lock = threading.Lock()

    def __init__(self, pipe, prefix, out):
        self.thread = threading.Thread(target=self._copy, args=(pipe, prefix, out), daemon=True)
        self.thread.start()

    def _copy(self, pipe, prefix, out):
        with pipe:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                with self.lock:
                    out.write(f"{prefix}{line}\n")
                    out.flush()


def _signal_group(process, sig):
    try:
        os.killpg(process.pid, sig)  # the worker started its own group: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass  # the whole group has exited already


def stop(processes, grace_s):
    """SIGTERM to every worker's process group, SIGKILL to what is left after `grace_s`."""
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for process in processes:  # the leader may be gone while its children live on
        _signal_group(process, signal.SIGKILL)
    for process in processes:
        process.wait()


def launch(
    command,
    workers,
    timeout_s=None,
    env=None,
    grace_s=5.0,
    stdout=None,
    stderr=None,
    host="127.0.0.1",
    ps=0,
    devices_per_process=None,
):
    """Run `command` (a list of strings) as `workers` processes of one job; return the exit code.

    Args:
      command: the command, the same for every process (it reads TF_CONFIG, or the JAX job's variables).
      workers: the number of TF workers, or of JAX processes, >= 1.
      ps: parameter servers; with ps >= 1, a parameter-server cluster (a coordinator, the workers,
        the servers) whose coordinator's exit ends the job.
      devices_per_process: None for TF workers; M >= 1: a JAX job of `workers` processes with M
        host CPU devices each (`jax_environments`; no parameter servers).
      timeout_s: stop everything after this many seconds and return 124; None: no limit.
      env: extra environment variables for the processes (on top of this process's environment).
      grace_s: seconds between SIGTERM and SIGKILL when processes are stopped.
      stdout, stderr: where the prefixed lines go (default: this process's streams).

    Returns the largest exit code of the processes that exited on their own (one killed by signal
    N counts as 128 + N), or the coordinator's, 124 after a timeout, 130 after Ctrl-C.
    """
    _check_arguments(command, workers, ps, devices_per_process, timeout_s, grace_s)
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    processes, printers = [], []
    say = functools.partial(_say, stderr)
    started = time.monotonic()
    try:
        tasks = _tasks(workers, ps, devices_per_process, host, {**os.environ, **(env or {})})
        _start(command, tasks, env, processes, printers, stdout, stderr)
        result = _wait(processes, [name for name, _ in tasks], ps, started, timeout_s, say)
    except KeyboardInterrupt:
        say("interrupted; stopping every process.")
        result = INTERRUPT_EXIT_CODE
    finally:
        stop(processes, grace_s)
        deadline = time.monotonic() + grace_s  # a pipe held open by an escaped child ends here
        for printer in printers:
            printer.thread.join(timeout=max(0.0, deadline - time.monotonic()))
    return result


def _tasks(workers, ps, devices_per_process, host, environ):
    """(name, variables) of each process to start: TF tasks, or the processes of a JAX job."""
    if devices_per_process:
        port = free_ports(1, host)[0]
        variables = jax_environments(workers, devices_per_process, port, host, environ.get("XLA_FLAGS", ""))
        return [(f"process {i}", job) for i, job in enumerate(variables)]
    configs = tf_configs(free_ports(workers + (ps + 1 if ps else 0), host), host, ps)
    return [(f"{c['task']['type']} {c['task']['index']}", {"TF_CONFIG": json.dumps(c)}) for c in configs]


def _check_arguments(command, workers, ps, devices_per_process, timeout_s, grace_s):
    """A ValueError naming the first bad argument of `launch`."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}.")
    if isinstance(ps, bool) or not isinstance(ps, int) or ps < 0:
        raise ValueError(f"ps must be a non-negative integer, got {ps!r}.")
    if devices_per_process is not None and (
        isinstance(devices_per_process, bool) or not isinstance(devices_per_process, int) or devices_per_process < 1
    ):
        raise ValueError(f"devices_per_process must be a positive integer or None, got {devices_per_process!r}.")
    if devices_per_process and ps:
        raise ValueError(f"ps={ps} with devices_per_process: a JAX job has no parameter servers.")
    if not command or not all(isinstance(part, str) for part in command):
        raise ValueError(f"command must be a non-empty list of strings, got {command!r}.")
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"timeout_s must be a positive number of seconds or None, got {timeout_s!r}.")
    if isinstance(grace_s, bool) or not isinstance(grace_s, (int, float)) or not grace_s >= 0:
        raise ValueError(f"grace_s must be a number of seconds >= 0, got {grace_s!r}.")


def _say(stderr, message):
    """One line of the launcher's own on `stderr`, between the workers' lines."""
    with _Printer.lock:
        stderr.write(f"[launcher] {message}\n")
        stderr.flush()


def _start(command, tasks, env, processes, printers, stdout, stderr):
    """Start one process per (name, variables) of `tasks`, appending each to `processes` as it
    starts (so that `launch` stops every started one) and its two stream copiers to `printers`."""
    preexec = dying_with_launcher()
    for name, variables in tasks:
        worker_env = {**os.environ, **(env or {}), **variables, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            command,
            env=worker_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=preexec,
        )
        processes.append(process)
        printers += [_Printer(process.stdout, f"[{name}] ", stdout), _Printer(process.stderr, f"[{name}] ", stderr)]


def _wait(processes, names, ps, started, timeout_s, say):
    """Poll `processes` until the job ends (or `timeout_s` after `started`); its exit code (see `launch`)."""
    while True:
        result = _outcome([process.poll() for process in processes], names, ps, say)
        if result is not None:
            return result
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            say(f"timeout: {timeout_s} s passed; stopping every process.")
            return TIMEOUT_EXIT_CODE
        time.sleep(POLL_SECONDS)


def _outcome(codes, names, ps, say):
    """The job's exit code once the processes' exit `codes` (None: running) end it, else None."""
    running = [names[i] for i, c in enumerate(codes) if c is None]
    if ps and codes[0] is not None:  # the coordinator is done: the servers have no end
        if codes[0]:
            say(f"{names[0]} (the coordinator) {ended(codes[0])}; stopping {', '.join(running)}.")
        return exit_code(codes[0])
    failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
    if failed:
        for i, code in failed:
            say(f"{names[i]} {ended(code)}; stopping {', '.join(running) or 'nothing'}.")
        return max(exit_code(code) for _, code in failed)
    if all(c == 0 for c in codes):
        return 0
    return None
