"""kbatch.launcher and tools/launch_local.py: N workers with their own TF_CONFIG (or N processes of one JAX job),
prefixed output, and nothing left running when a worker fails, time runs out or the user presses Ctrl-C.

The workers here are small Python processes (no TensorFlow) that say who they are; each starts a
child of its own, so the tests also see that a worker's whole process group is stopped."""

import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax_job_process
import numpy as np
import psutil
import pytest

from kbatch import jax_job
from kbatch.launcher import jax_environments, launch, tf_configs

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A worker: `worker.py PIDDIR MODES`, MODES a comma-separated behaviour per worker index.
#   ok            print who it is and exit 0
#   sleep         start a child, record both pids, sleep 60 s
#   ignore_term   as sleep, but ignore SIGTERM (only SIGKILL stops it)
#   exitN         as sleep, but once every worker has recorded its pids, exit with code N
#   killself      as exitN, but die of SIGKILL
WORKER = r"""
import json, os, signal, socket, subprocess, sys, time

tf_config = json.loads(os.environ["TF_CONFIG"])
index = tf_config["task"]["index"]
workers = tf_config["cluster"]["worker"]
pid_dir, mode = sys.argv[1], sys.argv[2].split(",")[index]
if mode == "ok":
    host, port = workers[index].split(":")
    with socket.socket() as s:
        s.bind((host, int(port)))  # this worker's address is free for it to serve on
    print(json.dumps({"tf_config": tf_config, "pid": os.getpid()}))
    for k in range(3):
        print(f"out {index} line {k}")
        print(f"err {index} line {k}", file=sys.stderr)
    sys.exit(0)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
if mode == "ignore_term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(os.path.join(pid_dir, f"{index}.tmp"), "w") as f:
    json.dump([os.getpid(), child.pid], f)
os.replace(os.path.join(pid_dir, f"{index}.tmp"), os.path.join(pid_dir, f"{index}.json"))
if mode.startswith("exit") or mode == "killself":
    deadline = time.time() + 30
    while len([n for n in os.listdir(pid_dir) if n.endswith(".json")]) < len(workers):
        assert time.time() < deadline, "the other workers never started"
        time.sleep(0.02)
    if mode == "killself":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.exit(int(mode[4:]))
time.sleep(60)
"""


@pytest.fixture
def worker(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()

    def command(*modes):
        return [sys.executable, str(script), str(pid_dir), ",".join(modes)]

    command.pids = lambda: [
        pid
        for name in sorted(os.listdir(pid_dir))
        if name.endswith(".json")
        for pid in json.loads((pid_dir / name).read_text())
    ]
    yield command
    for pid in command.pids():  # a failed test must not leave its workers behind either
        if _running(pid):
            os.kill(pid, signal.SIGKILL)


def _running(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _none_running(pids, within_s=2.0):
    """True once no pid runs (a stopped worker's orphaned child is reaped by init, not by us)."""
    deadline = time.monotonic() + within_s
    while any(_running(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _launch(command, workers, **kwargs):
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = launch(command, workers, stdout=out, stderr=err, **kwargs)
    return code, time.monotonic() - started, out.getvalue(), err.getvalue()


def test_each_worker_gets_its_own_task_in_one_cluster_of_free_local_ports(worker):
    code, _, out, _ = _launch(worker("ok", "ok", "ok"), 3, timeout_s=60)
    assert code == 0
    seen = {}
    for line in out.splitlines():
        prefix, _, text = line.partition("] ")
        if text.startswith("{"):
            seen[int(prefix.removeprefix("[worker "))] = json.loads(text)["tf_config"]
    assert sorted(seen) == [0, 1, 2]
    cluster = seen[0]["cluster"]
    assert list(cluster) == ["worker"] and len(cluster["worker"]) == 3
    hosts, ports = zip(*(address.split(":") for address in cluster["worker"]))
    assert set(hosts) == {"127.0.0.1"} and len(set(ports)) == 3
    for index, tf_config in seen.items():
        assert tf_config == {"cluster": cluster, "task": {"type": "worker", "index": index}}


def test_every_output_line_carries_its_worker_prefix_on_the_same_stream(worker):
    code, _, out, err = _launch(worker("ok", "ok"), 2, timeout_s=60)
    assert code == 0
    for index in range(2):
        for k in range(3):
            assert f"[worker {index}] out {index} line {k}" in out.splitlines()
            assert f"[worker {index}] err {index} line {k}" in err.splitlines()
    for line in out.splitlines() + err.splitlines():
        assert line.startswith(("[worker 0] ", "[worker 1] ", "[launcher] ")), line
    assert "err " not in out and "out " not in err


def test_one_failing_worker_stops_the_others_within_seconds_and_its_code_is_returned(worker):
    # Worker 1 fails; worker 2 ignores SIGTERM, so only the SIGKILL after the grace period stops it.
    code, seconds, _, err = _launch(worker("sleep", "exit3", "ignore_term"), 3, grace_s=1.0, timeout_s=60)
    assert code == 3
    assert seconds < 10
    assert "[launcher] worker 1 exited with code 3" in err
    pids = worker.pids()
    assert len(pids) == 6  # three workers and a child of each
    assert _none_running(pids)


def test_a_worker_killed_by_a_signal_counts_as_failed_with_128_plus_the_signal(worker):
    code, seconds, _, err = _launch(worker("killself", "sleep"), 2, grace_s=1.0, timeout_s=60)
    assert code == 128 + signal.SIGKILL
    assert "[launcher] worker 0 was killed by SIGKILL (exit code 137); stopping worker 1." in err
    assert seconds < 10
    assert _none_running(worker.pids())


def test_timeout_stops_every_worker(worker):
    code, seconds, _, err = _launch(worker("sleep", "sleep"), 2, timeout_s=2.0, grace_s=1.0)
    assert code == 124
    assert 2.0 <= seconds < 10
    assert "timeout" in err
    assert len(worker.pids()) == 4 and _none_running(worker.pids())


def test_command_line_returns_the_failing_workers_code(worker):
    launcher = [sys.executable, str(ROOT / "tools" / "launch_local.py"), "--workers=2", "--timeout_s=60", "--"]
    run = subprocess.run(launcher + worker("exit5", "sleep"), capture_output=True, text=True, timeout=60)
    assert run.returncode == 5, run.stderr
    assert _none_running(worker.pids())


@pytest.mark.parametrize(
    "started_with_sigint",
    [signal.SIG_DFL, signal.SIG_IGN],
    ids=["foreground", "background job of a shell without job control"],
)
def test_ctrl_c_stops_every_worker(worker, started_with_sigint):
    launcher = [sys.executable, str(ROOT / "tools" / "launch_local.py"), "--workers=2", "--timeout_s=60", "--"]
    process = subprocess.Popen(
        launcher + worker("sleep", "sleep"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, started_with_sigint),
    )
    try:
        deadline = time.monotonic() + 30
        while len(worker.pids()) < 4:
            assert time.monotonic() < deadline and process.poll() is None, "the workers never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 130
        assert "interrupted" in process.stderr.read()
        assert _none_running(worker.pids())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    "command, workers, timeout_s, message",
    [
        (["true"], 0, None, "workers must be a positive integer"),
        ([], 2, None, "command must be a non-empty list"),
        (["true"], 2, 0, "timeout_s must be a positive number"),
    ],
)
def test_bad_arguments_are_named(command, workers, timeout_s, message):
    with pytest.raises(ValueError, match=message):
        launch(command, workers, timeout_s=timeout_s)


# A task of a parameter-server cluster: `ps_task.py PIDDIR CHIEF_CODE TASKS`. Every task records
# its pid and a child's; the chief waits for all TASKS to have done so and exits with CHIEF_CODE,
# the others (a worker or ps server) serve forever, as kbatch's do.
PS_TASK = r"""
import json, os, subprocess, sys, time

task = json.loads(os.environ["TF_CONFIG"])["task"]
pid_dir, chief_code, tasks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
name = f"{task['type']}{task['index']}"
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(os.path.join(pid_dir, name + ".tmp"), "w") as f:
    json.dump([os.getpid(), child.pid], f)
os.replace(os.path.join(pid_dir, name + ".tmp"), os.path.join(pid_dir, name + ".json"))
if task["type"] == "chief":
    deadline = time.time() + 30
    while len([n for n in os.listdir(pid_dir) if n.endswith(".json")]) < tasks:
        assert time.time() < deadline, "the servers never started"
        time.sleep(0.02)
    child.kill()
    if chief_code < 0:  # killed by signal -chief_code
        os.kill(os.getpid(), -chief_code)
    sys.exit(chief_code)
time.sleep(60)
"""


def test_parameter_server_cluster_has_a_coordinator_the_workers_and_the_servers():
    configs = tf_configs([5001, 5002, 5003, 5004, 5005], ps=2)
    cluster = {
        "chief": ["127.0.0.1:5001"],
        "worker": ["127.0.0.1:5002", "127.0.0.1:5003"],
        "ps": ["127.0.0.1:5004", "127.0.0.1:5005"],
    }
    assert [c["cluster"] for c in configs] == [cluster] * 5
    assert [c["task"] for c in configs] == [
        {"type": "chief", "index": 0},
        {"type": "worker", "index": 0},
        {"type": "worker", "index": 1},
        {"type": "ps", "index": 0},
        {"type": "ps", "index": 1},
    ]


@pytest.mark.parametrize("chief_code", [0, 3])
def test_parameter_server_cluster_ends_with_its_coordinator_and_stops_every_server(tmp_path, chief_code):
    script, pid_dir = tmp_path / "ps_task.py", tmp_path / "pids"
    script.write_text(PS_TASK)
    pid_dir.mkdir()
    command = [sys.executable, str(script), str(pid_dir), str(chief_code), "5"]
    code, seconds, _, _ = _launch(command, 2, ps=2, grace_s=1.0, timeout_s=60)
    pids = [
        pid
        for name in os.listdir(pid_dir)
        if name.endswith(".json")
        for pid in json.loads((pid_dir / name).read_text())
    ]
    assert sorted(os.listdir(pid_dir)) == ["chief0.json", "ps0.json", "ps1.json", "worker0.json", "worker1.json"]
    assert code == chief_code and seconds < 15
    assert _none_running(pids)


def test_a_coordinator_killed_by_a_signal_is_named_in_one_line(tmp_path):
    script, pid_dir = tmp_path / "ps_task.py", tmp_path / "pids"
    script.write_text(PS_TASK)
    pid_dir.mkdir()
    command = [sys.executable, str(script), str(pid_dir), str(-signal.SIGKILL), "3"]
    code, _, _, err = _launch(command, 1, ps=1, grace_s=1.0, timeout_s=60)
    assert code == 137
    assert err.strip().splitlines() == [
        "[launcher] chief 0 (the coordinator) was killed by SIGKILL (exit code 137); stopping worker 0, ps 0."
    ]


# A task that records its pid and serves forever (no child of its own: the kernel's death signal
# reaches the processes the launcher started, not processes they start in turn).
SERVER = r"""
import json, os, sys, time

task = json.loads(os.environ["TF_CONFIG"])["task"]
with open(os.path.join(sys.argv[1], f"{task['type']}{task['index']}.tmp"), "w") as f:
    f.write(str(os.getpid()))
os.replace(os.path.join(sys.argv[1], f"{task['type']}{task['index']}.tmp"),
           os.path.join(sys.argv[1], f"{task['type']}{task['index']}.pid"))
time.sleep(120)
"""


def test_sigkill_of_the_launcher_kills_every_process_it_started(tmp_path):
    """kill -9 runs no cleanup in the launcher: the kernel kills its processes (PR_SET_PDEATHSIG)."""
    script, pid_dir = tmp_path / "server.py", tmp_path / "pids"
    script.write_text(SERVER)
    pid_dir.mkdir()
    launcher = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tools" / "launch_local.py"),
            "--workers=2",
            "--ps=1",
            "--",
            sys.executable,
            str(script),
            str(pid_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while len([n for n in os.listdir(pid_dir) if n.endswith(".pid")]) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int((pid_dir / name).read_text()) for name in os.listdir(pid_dir) if name.endswith(".pid")]
    assert len(pids) == 4 and all(_running(pid) for pid in pids)
    launcher.kill()
    launcher.wait()
    try:
        assert _none_running(pids, within_s=5.0)
    finally:
        for pid in pids:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_negative_grace_is_refused_in_one_line():
    with pytest.raises(ValueError, match="grace_s must be a number of seconds >= 0"):
        launch(["true"], 1, grace_s=-5)
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "launch_local.py"), "--grace_s=-5", "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == "launch_local: flag --grace_s=-5: -5.0 is not a non-negative number"


# A JAX job: `--jax_processes=N --devices_per_process=M` starts N processes of tests/jax_job_process.py,
# each joining with kbatch.jax_job.join() (a coordinator on 127.0.0.1, gloo collectives between them).
JAX_PROCESS = [sys.executable, str(ROOT / "tests" / "jax_job_process.py")]


def test_jax_processes_get_one_job_of_local_addresses_with_their_host_devices():
    environments = jax_environments(3, 2, 5001, xla_flags="--xla_cpu_foo=1 --xla_force_host_platform_device_count=4")
    assert [e[jax_job.PROCESS_ID] for e in environments] == ["0", "1", "2"]
    for environment in environments:
        assert environment[jax_job.JOB_ADDRESSES] == environment["JAX_COORDINATOR_BIND_ADDRESS"] == "127.0.0.1:5001"
        assert environment[jax_job.NUM_PROCESSES] == "3"
        assert environment["KERAS_BACKEND"] == "jax" and environment["JAX_PLATFORMS"] == "cpu"
        assert environment["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=2"
    settings = [jax_job.job_settings(e) for e in environments]
    assert settings == [
        {"coordinator_address": "127.0.0.1:5001", "num_processes": 3, "process_id": i} for i in range(3)
    ]


def test_two_jax_processes_of_two_host_devices_form_one_job_that_sums_across_them():
    code, _, out, err = _launch(JAX_PROCESS + ["check"], 2, devices_per_process=2, timeout_s=120)
    assert code == 0, err[-3000:]
    seen = {}
    for line in out.splitlines():
        prefix, _, text = line.partition("] ")
        if text.startswith("{"):
            seen[int(prefix.removeprefix("[process "))] = json.loads(text)
    assert sorted(seen) == [0, 1]
    # The global array is process 0's rows, then process 1's: every process gathers it whole and sums it.
    rows = np.concatenate([jax_job_process.local_rows(process, 2) for process in range(2)])
    for process, report in seen.items():
        assert report["process_index"] == process and report["process_count"] == 2
        assert report["device_count"] == 4 and report["local_device_count"] == 2 and report["platform"] == "cpu"
        assert report["global_shape"] == [4, 3]
        np.testing.assert_array_equal(report["gathered"], rows)
        assert report["sum"] == float(rows.sum())


def test_a_failing_jax_process_stops_the_job_with_its_own_exit_code(tmp_path):
    """Process 1 returns 3 while process 0 goes on: JAX's exit would hold process 1 for process 0
    (60 s) and then abort both (exit code 134); it leaves at once with its own code instead."""
    code, seconds, _, err = _launch(JAX_PROCESS + ["exit3", str(tmp_path)], 2, devices_per_process=2, grace_s=1.0)
    pids = [int(path.read_text()) for path in tmp_path.glob("*.pid")]
    assert code == 3 and len(pids) == 2, err[-3000:]
    assert "[launcher] process 1 exited with code 3; stopping process 0." in err
    assert seconds < 30
    assert _none_running(pids)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_ctrl_c_or_sigterm_to_the_launcher_stops_every_jax_process(tmp_path, stop_signal):
    launcher = [sys.executable, str(ROOT / "tools" / "launch_local.py"), "--jax_processes=2", "--grace_s=1", "--"]
    process = subprocess.Popen(
        launcher + JAX_PROCESS + ["sleep", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("*.pid"))) < 2:  # both joined the job
            assert time.monotonic() < deadline and process.poll() is None, "the processes never joined"
            time.sleep(0.05)
        pids = [int(path.read_text()) for path in tmp_path.glob("*.pid")]
        process.send_signal(stop_signal)
        assert process.wait(timeout=15) == 130
        assert "[launcher] interrupted; stopping every process." in process.stderr.read()
        assert _none_running(pids)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--jax_processes=2", "--ps=1"], "--ps with --jax_processes: a JAX job has no parameter servers."),
        (["--jax_processes=2", "--workers=2"], "--workers with --jax_processes: give one"),
        (["--devices_per_process=2"], "--devices_per_process goes with --jax_processes"),
        (["--jax_processes=0"], "flag --jax_processes=0: 0 is not a positive integer"),
    ],
)
def test_a_jax_job_with_flags_that_do_not_go_together_is_refused_in_one_line(flags, message):
    launcher = [sys.executable, str(ROOT / "tools" / "launch_local.py"), *flags, "--", "true"]
    run = subprocess.run(launcher, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.splitlines()) == 1 and run.stderr.startswith("launch_local: ") and message in run.stderr


@pytest.mark.parametrize(
    "ps, devices_per_process, message",
    [
        (1, 2, "ps=1 with devices_per_process: a JAX job has no parameter servers"),
        (0, 0, "devices_per_process must be a positive integer or None"),
        (0, True, "devices_per_process must be a positive integer or None"),
    ],
)
def test_a_bad_jax_job_is_named_by_launch(ps, devices_per_process, message):
    with pytest.raises(ValueError, match=message):
        launch(["true"], 2, ps=ps, devices_per_process=devices_per_process)
