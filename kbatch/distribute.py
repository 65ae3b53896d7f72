"""Strategy resolution and global / per-replica batch arithmetic.

`resolve_strategy(name)` turns the config field `strategy` into a `tf.distribute.Strategy`:

  "auto"           a TPU if one is attached, else every GPU, else the CPU
  "tpu"            the attached TPU (TPU VM or Colab), "tpu:ADDRESS" a remote one
  "mirrored"       MirroredStrategy over every local GPU (the CPU if there is none)
  "multiworker"    MultiWorkerMirroredStrategy, the cluster from the TF_CONFIG variable
  "parameter_server"  ParameterServerStrategy: asynchronous updates; this process is the
                   coordinator (TF_CONFIG task "chief"); the worker and ps tasks run `serve()`
  "one_device"     the first GPU, else the CPU
  "cpu:N"          N logical CPU devices under MirroredStrategy: data parallelism on a laptop

`per_replica_batch_size(global_batch_size, num_replicas, accumulation_steps)` is
`kbatch.ledger.per_replica_batch_size`, re-exported here.
"""

import json
import os

import tensorflow as tf

from kbatch import runtime
from kbatch.ledger import per_replica_batch_size

__all__ = [
    "STRATEGIES",
    "configure_logical_cpus",
    "per_replica_batch_size",
    "read_tf_config",
    "resolve_strategy",
    "serve",
]

STRATEGIES = ("auto", "tpu", "tpu:ADDRESS", "mirrored", "multiworker", "parameter_server", "one_device", "cpu:N")
PS_TASKS = ("worker", "ps")  # the TF_CONFIG tasks of a parameter-server cluster that only serve


def configure_logical_cpus(count):
    """Split the host CPU into `count` logical devices (before TensorFlow initializes).

    Returns the number of logical CPUs in use, which is larger than `count` when an earlier call
    made more (a process that tests `cpu:2` and `cpu:4` configures 4 once and uses the first 2).
    """
    physical = tf.config.list_physical_devices("CPU")
    configured = tf.config.get_logical_device_configuration(physical[0])
    if configured and len(configured) >= count:
        return len(configured)
    try:
        tf.config.set_logical_device_configuration(physical[0], [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as error:
        raise ValueError(
            f"strategy 'cpu:{count}' needs {count} logical CPU devices, but TensorFlow was "
            f"initialized with {len(tf.config.list_logical_devices('CPU'))}: call "
            f"kbatch.distribute.configure_logical_cpus({count}) before any TensorFlow op."
        ) from error
    return count


TPU_PIN = "tensorflow-tpu==2.19.1"  # TensorFlow's last TPU release (Keras's requirements-tensorflow-tpu.txt)


def _tpu_strategy(address):
    """TPUStrategy on the TPU at `address`; a one-line ValueError where this TensorFlow cannot
    reach one (TensorFlow's TPU support ended with `TPU_PIN`; Keras on JAX is the live path)."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        if address not in ("", "local"):
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, NotImplementedError, tf.errors.OpError) as error:
        raise ValueError(
            f"config.strategy: TensorFlow {tf.__version__} cannot reach a TPU ({str(error).splitlines()[0][:120]}). "
            f"Train on the TPU with Keras on JAX (KERAS_BACKEND=jax kbatch-train --config.backend=jax), or "
            f"install TensorFlow's last TPU release: pip install {TPU_PIN}."
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def read_tf_config(strategy="multiworker"):
    """The TF_CONFIG cluster description, validated; a ValueError names what is wrong."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            f"strategy '{strategy}' needs the TF_CONFIG environment variable (JSON with 'cluster' "
            "and 'task'); start the processes with tools/launch_local.py or set it on each host."
        )
    try:
        tf_config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {raw[:200]!r}") from error
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"TF_CONFIG names no 'cluster' (a dict of job name -> addresses): {raw[:200]!r}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG names no 'task' with 'type' and 'index': {raw[:200]!r}")
    if task["type"] not in cluster or not 0 <= int(task["index"]) < len(cluster[task["type"]]):
        raise ValueError(f"TF_CONFIG's task {task} is not in its cluster {cluster}.")
    if strategy == "parameter_server" and not all(cluster.get(job) for job in ("chief", "worker", "ps")):
        raise ValueError(
            f"strategy 'parameter_server' needs a cluster with 'chief', 'worker' and 'ps' jobs (TF_CONFIG has "
            f"{', '.join(sorted(cluster))}): a server with no coordinator would wait forever; "
            "tools/launch_local.py --workers=N --ps=M starts all of them."
        )
    return tf_config


_RESOLVED = {}


def resolve_strategy(name="auto"):
    """A `tf.distribute.Strategy` for the config field `strategy` (see the module docstring).

    One strategy per name per process: a notebook or a sweep that trains several times reuses
    it (a TPU system is initialized once; collective-op keys of two MirroredStrategy objects
    in one process would collide)."""
    if not isinstance(name, str):
        raise ValueError(f"strategy must be a string, one of {', '.join(STRATEGIES)}; got {name!r}.")
    if name not in _RESOLVED:
        _RESOLVED[name] = _create_strategy(name)
    return _RESOLVED[name]


def _create_strategy(name):
    if name == "auto":
        if runtime.tpu_attached():
            return _tpu_strategy(os.environ.get("TPU_NAME", "local"))
        if len(tf.config.list_physical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy()
        return _create_strategy("one_device")
    if name == "tpu" or name.startswith("tpu:"):
        return _tpu_strategy(name.partition(":")[2] or os.environ.get("TPU_NAME", "local"))
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        read_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "parameter_server":
        return _parameter_server_strategy()
    if name == "one_device":
        device = "/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if name.startswith("cpu:"):
        count = name.partition(":")[2]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"strategy 'cpu:N' needs a positive integer N, got {name!r}.")
        configure_logical_cpus(int(count))
        # Reduce through one device rather than with collective ops: strategies over different
        # CPU counts can then live in one process (their collective group keys would collide).
        return tf.distribute.MirroredStrategy(
            [f"/cpu:{i}" for i in range(int(count))], cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    raise ValueError(f"Unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}.")


def _parameter_server_threads(cluster):
    """Inter-op threads a worker server needs: one per worker and server of the cluster, plus two,
    and no fewer than the cores (with 2 threads on a 2-core machine a worker hung in a probe)."""
    return max(os.cpu_count() or 1, len(cluster.get("worker", ())) + len(cluster.get("ps", ())) + 2)


def _parameter_server_strategy():
    tf_config = read_tf_config("parameter_server")
    cluster, task = tf_config["cluster"], tf_config["task"]
    if task["type"] != "chief":
        raise ValueError(
            f"strategy 'parameter_server': the training process is the coordinator, TF_CONFIG task 'chief' (got "
            f"task {task}, jobs {sorted(cluster)}); the worker and ps processes serve: tools/launch_local.py --ps=1 "
            "starts all of them."
        )
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return tf.distribute.ParameterServerStrategy(resolver)


def serve(tf_config):
    """Run this process's worker or ps server of a parameter-server cluster until it is killed
    (the coordinator sends the work; a server has no end of its own)."""
    cluster, task = tf_config["cluster"], tf_config["task"]
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=_parameter_server_threads(cluster))
    server = tf.distribute.Server(
        tf.train.ClusterSpec(cluster),
        job_name=task["type"],
        task_index=int(task["index"]),
        config=config,
        protocol="grpc",
        start=True,
    )
    print(
        f"kbatch: {task['type']} {task['index']} of a parameter-server cluster serving at {server.target}.", flush=True
    )
    server.join()
