"""`kbatch-train`, or a script of tools/ or benchmarks/, as a real separate process that skips
importing TensorFlow, Keras and kbatch: forked from a server that imported them once
(`multiprocessing`'s forkserver, started by the first call in each pytest worker). `Popen` and
`run` stand in for `subprocess`'s:

  forked.run(["kbatch-train", *flags], cwd=..., env=..., timeout=300)      # a CompletedProcess
  process = forked.Popen(["kbatch-train", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  forked.run([...], fault="state_file:8")    # tests/fault_run.py's fault planted first
  forked.run(["/repo/tools/sweep.py", *flags])  # the script as `python script.py` runs it

The child is its own session (a process-group signal reaches it alone), gets SIGKILL when the
server dies (the server ends with the pytest worker), takes `cwd`, `env` (os.environ replaced),
stdin /dev/null and its stdout/stderr (a pipe's text is read from a file once it ends) before it
runs `kbatch.train.main()` (a script: `runpy` runs it as `__main__`, its folder first on
sys.path, as `python script.py` puts it); its exit code is the command's (-N for a signal), the handlers it
registers with `atexit` run, the server's do not.

Only for runs whose environment differs from the server's in variables read at run time
(TF_CONFIG, not KERAS_BACKEND or TF_CPP_MIN_LOG_LEVEL, read at import: `Popen` refuses those):
tests about the command itself (the console script, the import-time logging, `--verbosity`)
keep `subprocess`. The child's sys.path is the server's (as the console script's, the current
folder is not on it). Checked (tests/test_forked.py): the server holds one thread when it forks;
`cpu:N` logical devices and a MirroredStrategy work in the child and give the weights of the same
command run as a subprocess.

Measured (`/usr/bin/time -v python -m pytest -n 0 FILE`, children included, 2-core machine,
2026-12-05), before and after: test_faults.py 370 -> 164 CPU-s (5 min 51 s -> 2 min 30 s),
test_resume.py 133 -> 89 (1 min 56 s -> 1 min 20 s), test_adversarial_input.py with
test_bad_input.py 117 -> 44 (1 min 55 s -> 40 s). Starting the server costs one import (~6 CPU-s).
"""

import atexit
import ctypes
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import runpy
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAM = "kbatch-train"
# read when TensorFlow, Keras or kbatch is imported: a child cannot change them
IMPORT_TIME = ("KERAS_BACKEND", "KERAS_HOME", "TF_CPP_MIN_LOG_LEVEL", "TF_CPP_MAX_VLOG_LEVEL", "PYTHONPATH")
_PR_SET_PDEATHSIG = 1
_context = None


def _server():
    """The forkserver context, its server importing kbatch.train (and with it TensorFlow) once."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["forked", "fault_run", "kbatch.train"])
        atexit.register(_stop_server)
    return _context


def _stop_server():
    """At the test process's exit: end the server and wait for it, so that it and the runs it
    forked count in this process's children's CPU time (`/usr/bin/time`, `resource`)."""
    server = multiprocessing.forkserver._forkserver
    if server._forkserver_pid is not None:
        os.close(server._forkserver_alive_fd)
        os.waitpid(server._forkserver_pid, 0)
        server._forkserver_alive_fd = server._forkserver_address = server._forkserver_pid = None


def server_pids():
    """The pids of the processes `multiprocessing` started for this one (the forkserver and its
    resource tracker), to leave out of a "no child left" check."""
    pids = [
        multiprocessing.forkserver._forkserver._forkserver_pid,
        multiprocessing.resource_tracker._resource_tracker._pid,
    ]
    return {pid for pid in pids if pid is not None}


def _redirect(fd, path, flags):
    target = os.open(path, flags, 0o600)
    os.dup2(target, fd)
    os.close(target)


def _leave_the_server():
    """Close the server's "alive" pipe and the resource tracker's, which a forkserver child
    inherits (for children of its own): held open here, they kept the server, and so the child,
    alive after the test process died."""
    server, tracker = multiprocessing.forkserver._forkserver, multiprocessing.resource_tracker._resource_tracker
    for fd in (server._forkserver_alive_fd, tracker._fd):
        os.close(fd)
    server._forkserver_alive_fd = server._forkserver_address = server._forkserver_pid = None
    tracker._fd = tracker._pid = None


def _child(argv, cwd, env, outputs, fault):
    """The forked child: its own session, killed with the server, then the command."""
    _leave_the_server()
    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the server died before prctl
        os._exit(1)
    atexit._clear()  # the server's handlers; the command's own run at its end, as in a real process
    # Ctrl-C raises KeyboardInterrupt, as in a command started from a shell: the server keeps the
    # disposition it was started with, SIG_IGN where the pytest worker ignored SIGINT then (a sweep
    # sent SIGINT ran on to the end, in CI).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    _redirect(0, os.devnull, os.O_RDONLY)
    for fd, path in outputs.items():
        _redirect(fd, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    sys.argv = list(argv)
    try:
        if fault:
            import fault_run

            fault_run.plant(fault)
        if argv[0] == PROGRAM:
            from kbatch import train

            train.main()
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
    finally:
        atexit._run_exitfuncs()


class Popen:
    """A forked `kbatch-train argv[1:]` (or `python argv[0] argv[1:]` for a script), with
    subprocess.Popen's pid, poll, wait, send_signal, kill, returncode and communicate (text);
    stdout/stderr None (inherit), PIPE or DEVNULL."""

    def __init__(self, argv, *, cwd=None, env=None, stdout=None, stderr=None, fault=None, text=True):
        env = dict(os.environ if env is None else env)
        changed = [name for name in IMPORT_TIME if env.get(name) != os.environ.get(name)]
        if not (argv[0] == PROGRAM or argv[0].endswith(".py")) or changed or not text:
            raise ValueError(
                f"forked runs {PROGRAM} or a script in text mode in this environment; use subprocess for {changed}"
            )
        self._folder = tempfile.TemporaryDirectory(prefix="forked-")
        self._pipes, outputs = {}, {}
        for fd, how in ((1, stdout), (2, stderr)):
            if how == subprocess.PIPE:
                outputs[fd] = self._pipes[fd] = os.path.join(self._folder.name, f"fd{fd}")
            elif how == subprocess.DEVNULL:
                outputs[fd] = os.devnull
        self.args = list(argv)
        self._process = _server().Process(
            target=_child, args=(self.args, os.path.abspath(cwd or os.getcwd()), env, outputs, fault)
        )
        self._process.start()
        self.pid = self._process.pid
        self.stdout = self.stderr = None

    @property
    def returncode(self):
        return self._process.exitcode

    def poll(self):
        return self._process.exitcode

    def wait(self, timeout=None):
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self._process.exitcode

    def send_signal(self, sig):
        if self._process.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def _read(self, fd):
        if fd not in self._pipes or not os.path.exists(self._pipes[fd]):
            return None
        with open(self._pipes[fd], errors="replace") as file:
            return file.read()

    def communicate(self, timeout=None):
        """(stdout, stderr) once the process has ended; the text of each PIPE, else None."""
        self.wait(timeout)
        self.stdout, self.stderr = self._read(1), self._read(2)
        return self.stdout, self.stderr


def run(argv, *, cwd=None, env=None, timeout=None, check=False, fault=None):
    """subprocess.run(argv, capture_output=True, text=True, ...) with a forked `kbatch-train`:
    the child is killed if it outlives `timeout` (TimeoutExpired, as subprocess.run raises);
    `check`: a non-zero exit is CalledProcessError."""
    process = Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, fault=fault)
    try:
        stdout, stderr = process.communicate(timeout)
    finally:
        process.kill()
        process.wait()
    if check and process.returncode:
        raise subprocess.CalledProcessError(process.returncode, process.args, stdout, stderr)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
