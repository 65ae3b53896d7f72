"""Training a sweep's points: one after another in this process, or N worker processes at a time.

A point that fails (a bad value found only once training starts, an error in the model) or
diverges (the loss stopped being finite) is recorded in `failures/` with its one-line error, and
the sweep goes on. A killed sweep continues where it stopped when started again: finished points
are read back, a point that was cut short resumes from its last checkpoint. Ctrl-C or preemption
stops the whole sweep (after the run in progress saved its checkpoint).

    python -m kbatch.study.runs SWEEP_DIR NAME     # a worker: trains one point of the sweep
"""

import os
import signal
import subprocess
import sys
import time

from kbatch import runtime
from kbatch.study import children
from kbatch.study import sweep as sweep_lib
from kbatch.training import stops

WORKER_POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 60  # a stopped worker's time to save its checkpoint before SIGKILL


class SweepStopped(Exception):
    """A worker was preempted or interrupted (its checkpoint saved): the sweep stops with the
    worker's exit code (`exit_code`), and the same command continues it."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def describe(state, record):
    """One line for a point's outcome."""
    if state == "finished":
        target = record.get("steps_to_target")
        return (
            f"finished, final accuracy {record['final_eval_accuracy']:.4f}, {record['steps']} steps "
            f"({target if target is not None else '-'} to target), {record['wall_seconds']:.0f} s"
        )
    return f"{state}: {record['error'].split('. ')[0]}" if record else state


def train_point(sweep, point):
    """Train one point here; (state, result or failure record). Stops (Ctrl-C, preemption) propagate."""
    import keras

    from kbatch.training import stops, train

    keras.backend.clear_session()
    try:
        return "finished", train(point.config, verbose=False)
    except (stops.Preempted, stops.Interrupted):
        raise  # its checkpoint is saved: the point resumes when the sweep is run again
    except FloatingPointError as error:
        state, message = "diverged", str(error)
    except ValueError as error:
        state, message = "failed", str(error)
    except Exception as error:  # noqa: BLE001 - a broken point must not end the sweep; its error is kept
        state, message = "failed", f"{type(error).__name__}: {error}"
    sweep.record_failure(point, state, message.splitlines()[0] if message else state)
    return sweep.state(point)


def run_sweep(sweep, processes=1, retry_failed=False, log=print):
    """Train every point still to run: here when `processes` is 1, else in that many worker
    processes at a time. `log` gets one progress line per point."""
    todo = sweep.to_run(retry_failed)
    for point in todo:  # a retried failure resumes from its last checkpoint, its record removed
        if os.path.exists(sweep.failure_path(point)):
            os.remove(sweep.failure_path(point))
    done = len(sweep.points) - len(todo)
    log(
        f"sweep: {len(sweep.points)} points, {done} already done, {len(todo)} to run "
        f"({'here' if processes == 1 else f'{processes} processes at a time'})"
    )
    started = time.time()

    def report(index, point, state, record):
        log(
            f"[{index}/{len(todo)}] {point.name}: {describe(state, record)}; "
            f"{(time.time() - started) / 60:.1f} min so far"
        )

    if processes == 1:
        for index, point in enumerate(todo, 1):
            report(index, point, *train_point(sweep, point))
    else:
        _run_in_workers(sweep, todo, processes, report)


def _run_in_workers(sweep, todo, processes, report):
    """Keep `processes` workers busy until every point of `todo` has run. SIGTERM or Ctrl-C stops
    the sweep (SweepStopped, 42 or 130) once the running workers saved their checkpoints."""
    waiting, running, finished = list(todo), {}, 0
    previous = signal.signal(signal.SIGTERM, _preempted)
    try:
        while waiting or running:
            while waiting and len(running) < processes:
                point = waiting.pop(0)
                running[point.name] = (point, _start_worker(sweep, point))
            time.sleep(WORKER_POLL_SECONDS)
            for name, (point, worker) in list(running.items()):
                if worker.poll() is None:
                    continue
                del running[name]
                finished += 1
                report(finished, point, *_worker_outcome(sweep, point, worker))
    except KeyboardInterrupt:
        raise SweepStopped(_stopped_line("interrupted", running), stops.INTERRUPTED) from None
    except _Terminated:
        raise SweepStopped(_stopped_line("preempted", running), stops.PREEMPTED) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_workers([worker for _, worker in running.values()])


class _Terminated(Exception):
    """SIGTERM reached the sweep itself (its workers train: it has no checkpoint of its own)."""


def _preempted(signum, frame):
    raise _Terminated


def _stopped_line(how, running):
    names = ", ".join(running) or "no point"
    return (
        f"{how}: stopped the workers of {names} (a point resumes from its last checkpoint); run the same "
        "command again to continue the sweep."
    )


def _stop_workers(workers):
    """SIGTERM to each worker (a training saves its checkpoint and exits 42), SIGKILL after
    STOP_GRACE_SECONDS."""
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for worker in workers:
        try:
            worker.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _start_worker(sweep, point):
    backend = point.config.get("backend", "tensorflow")
    env = dict(os.environ, KERAS_BACKEND=runtime.keras_backend() if backend == "auto" else backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Its own session: Ctrl-C at the terminal reaches the sweep alone, which stops each worker once
    # (SIGTERM); and SIGTERM from the kernel (it saves its checkpoint) if the sweep is killed with SIGKILL.
    return subprocess.Popen(
        [sys.executable, "-m", "kbatch.study.runs", sweep.sweep_dir, point.name],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=children.dying_with_parent(signal.SIGTERM),
    )


def _worker_outcome(sweep, point, worker):
    """A worker that died without a record (killed, out of memory) is recorded as failed."""
    error_tail = worker.stderr.read().strip().splitlines()
    state, record = sweep.state(point)
    if state in ("partial", "pending"):
        if worker.returncode in (42, 130):  # preempted or interrupted: it resumes next time
            raise SweepStopped(
                f"point {point.name}: {error_tail[-1] if error_tail else 'stopped'}; run the same "
                "command again to continue the sweep.",
                worker.returncode,
            )
        message = error_tail[-1] if error_tail else f"the worker exited with code {worker.returncode}"
        sweep.record_failure(point, "failed", f"exit code {worker.returncode}: {message}")
        state, record = sweep.state(point)
    return state, record


def _worker_main(argv):
    """Train the point `argv[1]` of the sweep in `argv[0]` (the worker of `run_sweep`)."""
    sweep = sweep_lib.Sweep.open(argv[0])
    point = next(p for p in sweep.points if p.name == argv[1])
    train_point(sweep, point)
    return 0


if __name__ == "__main__":
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    sys.exit(stops.reporting("kbatch.study.runs", _worker_main)(sys.argv[1:]))
