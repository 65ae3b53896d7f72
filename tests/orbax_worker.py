"""One JAX process of tests/test_orbax_checkpoints.py's multi-process case (gloo on 127.0.0.1):

  python tests/orbax_worker.py PROCESS PROCESSES PORT DIRECTORY save|load

`save` saves step 4 (synchronously) and step 8 (asynchronously) of a (8, 3) array sharded over
every process's devices and a replicated (3,) one; `load` restores the newest onto zeros of the
same shardings and prints `restored STEP True` when this process's shards hold the saved values.
"""

import sys

import jax
import numpy as np

process, processes, port, directory, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
if processes > 1:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=processes, process_id=process)

from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

from kbatch.training.backends.orbax_checkpoints import OrbaxCheckpoints  # noqa: E402

SAVED = np.arange(24, dtype=np.float32).reshape(8, 3)


def state(values):
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    return {
        "trainable": [
            jax.make_array_from_callback((8, 3), NamedSharding(mesh, PartitionSpec("batch")), lambda i: values[i]),
            jax.make_array_from_callback((3,), NamedSharding(mesh, PartitionSpec()), lambda i: values[0][i]),
        ],
        "non_trainable": [],
        "optimizer": [],
    }


if mode == "load":
    checkpoints = OrbaxCheckpoints(directory, keep=3)
    step, restored = checkpoints.load(checkpoints.candidates()[-1], state(np.zeros_like(SAVED)))
    sharded, replicated = restored["trainable"]
    local = [np.array_equal(np.asarray(s.data), SAVED[s.index]) for s in sharded.addressable_shards]
    print("restored", step, all(local) and np.array_equal(np.asarray(replicated), SAVED[0]), flush=True)
    checkpoints.close()
else:
    for step, asynchronous in ((4, False), (8, True)):
        checkpoints = OrbaxCheckpoints(directory, keep=3, asynchronous=asynchronous)
        checkpoints.save(step, state(SAVED))
        checkpoints.close()
