"""kbatch.launcher and tools/launch_local.py: N workers with their own TF_CONFIG, prefixed output, and nothing left
running when a worker fails, time runs out or the user presses Ctrl-C.

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

import psutil
import pytest

from kbatch.launcher import launch, tf_configs

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
