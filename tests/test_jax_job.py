"""kbatch.jax_job: the multi-process JAX job the environment names (Keras's KERAS_DISTRIBUTION_*
variables, JAX's coordinator address, or KBATCH_JAX_DISTRIBUTED=auto), each bad value one line
naming its variable, in `kbatch-train` too (exit code 2, nothing written); joining it, and the
one-line errors where it cannot be joined. Several processes joining one job: tests/test_launcher.py."""

import os
import subprocess
import sys

import pytest

from kbatch import jax_job
from kbatch.launcher import free_ports

pytestmark = pytest.mark.fast

JOB = {
    "KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234",
    "KERAS_DISTRIBUTION_NUM_PROCESSES": "4",
    "KERAS_DISTRIBUTION_PROCESS_ID": "3",
}
ONE_PROCESS = {"KERAS_DISTRIBUTION_NUM_PROCESSES": "1", "KERAS_DISTRIBUTION_PROCESS_ID": "0"}
# The variables JAX finds a cluster by (SLURM, Open MPI, Kubernetes, Cloud TPU): left out where a test needs no cluster.
CLUSTER_SIGNS = ("SLURM_", "OMPI_", "KUBERNETES_", "TPU_", "CLOUD_TPU", "JAX_", "KERAS_DISTRIBUTION_", "KBATCH_JAX")


def test_no_job_variable_is_no_job():
    assert jax_job.job_settings({}) is None
    assert (
        jax_job.job_settings({"PATH": "/bin", "KERAS_BACKEND": "jax", "KERAS_DISTRIBUTION_NUM_PROCESSES": ""}) is None
    )
    assert jax_job.join({}) is False


@pytest.mark.parametrize(
    "environ, expected",
    [
        (JOB, ("10.0.0.1:1234", 4, 3)),
        (
            {**JOB, "KERAS_DISTRIBUTION_JOB_ADDRESSES": "h0:1, h1:2 ,h2:3,h3:4"},
            ("h0:1", 4, 3),
        ),  # Keras: first = coordinator
        (
            {**JOB, "KERAS_DISTRIBUTION_JOB_ADDRESSES": "", "JAX_COORDINATOR_ADDRESS": "[::1]:8476"},
            ("[::1]:8476", 4, 3),
        ),
        ({"KBATCH_JAX_DISTRIBUTED": "auto"}, (None, None, None)),  # a TPU pod slice: JAX finds all three
        ({"KBATCH_JAX_DISTRIBUTED": " AUTO ", "KERAS_DISTRIBUTION_NUM_PROCESSES": "8"}, (None, 8, None)),
    ],
)
def test_the_job_is_read_as_keras_distribution_initialize_reads_it(environ, expected):
    settings = jax_job.job_settings(environ)
    assert (settings["coordinator_address"], settings["num_processes"], settings["process_id"]) == expected


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"KERAS_DISTRIBUTION_NUM_PROCESSES": "two"},
            "KERAS_DISTRIBUTION_NUM_PROCESSES=two: must be an integer >= 1 (the number of processes in the job).",
        ),
        (
            {"KERAS_DISTRIBUTION_NUM_PROCESSES": "0"},
            "KERAS_DISTRIBUTION_NUM_PROCESSES=0: must be an integer >= 1 (the number of processes in the job).",
        ),
        (
            {"KERAS_DISTRIBUTION_PROCESS_ID": "4"},
            "KERAS_DISTRIBUTION_PROCESS_ID=4: must be an integer 0 .. 3 (this process's index).",
        ),
        (
            {"KERAS_DISTRIBUTION_PROCESS_ID": "-1"},
            "KERAS_DISTRIBUTION_PROCESS_ID=-1: must be an integer 0 .. 3 (this process's index).",
        ),
        (
            {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1"},
            "KERAS_DISTRIBUTION_JOB_ADDRESSES=10.0.0.1: '10.0.0.1' is not host:port (a port 1 .. 65535).",
        ),
        (
            {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "h0:1,h1:70000"},
            "KERAS_DISTRIBUTION_JOB_ADDRESSES=h0:1,h1:70000: 'h1:70000' is not host:port (a port 1 .. 65535).",
        ),
        (
            {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "h0:1,h1:2"},
            "KERAS_DISTRIBUTION_JOB_ADDRESSES=h0:1,h1:2: 2 addresses, but KERAS_DISTRIBUTION_NUM_PROCESSES=4.",
        ),
        (
            {"KERAS_DISTRIBUTION_PROCESS_ID": ""},
            "KERAS_DISTRIBUTION_PROCESS_ID is not set: a JAX job needs KERAS_DISTRIBUTION_JOB_ADDRESSES, "
            "KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID (or KBATCH_JAX_DISTRIBUTED=auto "
            "where JAX finds the job itself: a Cloud TPU pod slice, SLURM, Open MPI, Kubernetes).",
        ),
        (
            {"KBATCH_JAX_DISTRIBUTED": "yes"},
            "KBATCH_JAX_DISTRIBUTED=yes: must be auto (JAX finds the job: a Cloud TPU pod slice, SLURM, Open MPI, "
            "Kubernetes) or unset.",
        ),
    ],
)
def test_a_bad_job_variable_is_one_line_naming_it(change, message):
    with pytest.raises(ValueError) as error:
        jax_job.job_settings({**JOB, **change})
    assert str(error.value) == message


def test_a_process_id_without_the_number_of_processes_is_named():
    with pytest.raises(ValueError, match=r"^KERAS_DISTRIBUTION_JOB_ADDRESSES is not set: a JAX job needs"):
        jax_job.job_settings({"KERAS_DISTRIBUTION_PROCESS_ID": "1"})
    with pytest.raises(ValueError, match=r"^KERAS_DISTRIBUTION_PROCESS_ID=-2: must be an integer 0 \.\. "):
        jax_job.job_settings({"KERAS_DISTRIBUTION_PROCESS_ID": "-2"})


def _no_cluster_env(**variables):
    env = {name: value for name, value in os.environ.items() if not name.startswith(CLUSTER_SIGNS)}
    return {**env, "JAX_PLATFORMS": "cpu", **variables}


def _join(env, *arguments, before=""):
    """`kbatch.jax_job.join(*arguments)` in a fresh Python (after `before`), then `join()` again and
    `joined()`: what it prints (their results, or the error) and its exit code."""
    script = (
        "import kbatch_cli\n"
        "jax_job = kbatch_cli.import_light('kbatch.jax_job')\n"
        f"{before}\n"
        "try:\n"
        f"    print('joined', jax_job.join(None, {', '.join(arguments)}), end=', ')\n"
        "    print('again', jax_job.join(), end=', ')\n"
        "    print('in a job', jax_job.joined())\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)


def test_a_job_of_one_process_is_joined_once():
    (port,) = free_ports(1)
    env = _no_cluster_env(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}", **ONE_PROCESS)
    run = _join(env)
    assert run.returncode == 0 and run.stdout == "joined True, again True, in a job True\n", run.stderr[-2000:]


def test_joining_after_a_jax_computation_is_one_line():
    (port,) = free_ports(1)
    env = _no_cluster_env(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}", **ONE_PROCESS)
    run = _join(env, before="import jax; jax.numpy.ones(2).sum()")
    assert run.returncode == 0 and run.stdout.startswith(
        f"cannot join the JAX job (process 0 of 1, coordinator 127.0.0.1:{port}): jax.distributed.initialize() "
        "must be called before any JAX"
    ), run.stderr[-2000:]
    assert len(run.stdout.splitlines()) == 1


def test_a_coordinator_that_never_answers_is_one_line_after_the_timeout():
    """JAX itself ends the process (a C++ check failure, exit code 134) where no coordinator answers."""
    (port,) = free_ports(1)
    env = _no_cluster_env(**{**JOB, "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}"})
    run = _join(env, "initialization_timeout_s=1")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout == (
        f"cannot join the JAX job (process 3 of 4, coordinator 127.0.0.1:{port}): nothing answers at "
        f"127.0.0.1:{port} after 1 s (process 0 serves there)\n"
    )


def test_auto_where_jax_finds_no_job_is_one_line():
    run = _join(_no_cluster_env(KBATCH_JAX_DISTRIBUTED="auto"))
    assert run.returncode == 0 and run.stdout == (
        "cannot join the JAX job (process ? of ?, coordinator found by JAX (KBATCH_JAX_DISTRIBUTED=auto)): "
        "coordinator_address should be defined.\n"
    ), run.stderr[-2000:]


@pytest.mark.parametrize(
    "variables, flags, message",
    [
        (
            {**JOB, "KERAS_DISTRIBUTION_NUM_PROCESSES": "two"},
            [],
            "KERAS_DISTRIBUTION_NUM_PROCESSES=two: must be an integer >= 1 (the number of processes in the job).",
        ),
        (
            {**JOB, "KERAS_DISTRIBUTION_PROCESS_ID": "4"},
            ["--check"],
            "KERAS_DISTRIBUTION_PROCESS_ID=4: must be an integer 0 .. 3 (this process's index).",
        ),
    ],
    ids=["run", "check"],
)
def test_kbatch_train_on_jax_refuses_a_bad_job_variable_in_one_line_before_anything_is_written(
    tmp_path, variables, flags, message
):
    env = _no_cluster_env(KERAS_BACKEND="jax", **variables)
    command = [
        sys.executable,
        "-m",
        "kbatch.train",
        "--config.backend=jax",
        "--config.dataset=mnist1d/original",
        f"--config.model_dir={tmp_path / 'run'}",
        *flags,
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == [f"kbatch-train: {message}"]
    assert not (tmp_path / "run").exists()
