"""One process of a JAX job that tools/launch_local.py --jax_processes starts (tests/test_launcher.py).

  python tests/jax_job_process.py MODE PID_DIR

It joins the job with `kbatch.jax_job.join()` (imported without Keras), then, by MODE:
  check   prints one JSON line: what JAX sees (processes, devices) and, from a global array made of
          every process's local rows (`jax.make_array_from_process_local_data`), its rows gathered
          back and their sum computed by a jitted function over the whole job
  sleep   records its pid in PID_DIR/<process>.pid and sleeps 120 s
  exitN   as sleep, but process 1 returns exit code N (through `jax_job.leaving_at_once_on_error`)
          once every process has recorded its pid, while the others go on with their own work
"""

import json
import os
import sys
import time

import kbatch_cli

jax_job = kbatch_cli.import_light("kbatch.jax_job")


def local_rows(process, devices):
    """This process's rows of the global array: one row of 3 per local device, distinct per process."""
    import numpy as np

    return np.arange(devices * 3, dtype=np.float32).reshape(devices, 3) + 100.0 * process


def check():
    import jax
    import numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("batch",))
    rows = local_rows(jax.process_index(), jax.local_device_count())
    global_array = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("batch")), rows)
    total = jax.jit(jax.numpy.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(global_array)
    print(
        json.dumps(
            {
                "process_index": jax.process_index(),
                "process_count": jax.process_count(),
                "device_count": jax.device_count(),
                "local_device_count": jax.local_device_count(),
                "platform": jax.devices()[0].platform,
                "global_shape": list(global_array.shape),
                "gathered": multihost_utils.process_allgather(global_array, tiled=True).tolist(),
                "sum": float(total),
            }
        ),
        flush=True,
    )


def wait_or_exit(argv):
    import jax

    mode, pid_dir = argv[1:]
    name = os.path.join(pid_dir, str(jax.process_index()))
    with open(name + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(name + ".tmp", name + ".pid")
    if mode == "sleep":
        time.sleep(120)
    while len([n for n in os.listdir(pid_dir) if n.endswith(".pid")]) < jax.process_count():
        time.sleep(0.02)
    if jax.process_index() == 1:
        return int(mode[4:])
    time.sleep(120)


if __name__ == "__main__":
    assert jax_job.join(), "the environment names no JAX job"
    if sys.argv[1] == "check":
        check()
    else:
        sys.exit(jax_job.leaving_at_once_on_error(wait_or_exit)(sys.argv))
