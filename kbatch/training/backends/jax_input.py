"""The JAX backend's input on one process or several: each process reads only the rows of a
global batch that its own devices hold, and the global array is made from those rows
(`jax.make_array_from_process_local_data`), as a TPU pod slice's hosts each feed their own chips.

Global batch t is stream positions [s + tB, s + (t + 1)B) (`kbatch.data.sources.base`); under
`keras.distribution.DataParallel` the batch axis is split over the mesh's devices in order, so the
devices of one process hold one contiguous range of rows [start, stop) of every global batch
(`process_rows`), and that process reads positions [s + tB + start, s + tB + stop): global batch t
is the same examples whatever the number of processes. A source that cannot say which example a
position holds (a user's iterable) is read whole by every process, each keeping its rows.
"""

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from kbatch.data.sources.base import PositionalSource


def process_rows(sharding, batch_size):
    """(start, stop): the rows of a global batch of `batch_size` held by this process's devices
    under `sharding` (a batch-axis sharding); a ValueError when they are not one range."""
    rows = sorted(
        (index[0].indices(batch_size)[:2] for index in sharding.addressable_devices_indices_map((batch_size,)).values())
    )
    start, stop = rows[0][0], rows[-1][1]
    held = sum(b - a for a, b in set(rows))  # a device mesh with a model axis repeats a range: count it once
    if held != stop - start:
        raise ValueError(
            f"this process's devices hold rows {rows} of a global batch of {batch_size}, which are not one range: "
            "give DataParallel the devices ordered by process (jax.devices() is)."
        )
    return start, stop


def _rows(tree, start, stop):
    return jax.tree.map(lambda a: a[start:stop], tree)


def local_train_batches(source, global_batch_size, seed, start_example, rows):
    """This process's rows `(x, y)` of each global training batch, forever (see the module's docstring)."""
    start, stop = rows
    if not isinstance(source, PositionalSource):
        for batch in source.train_batches(global_batch_size, seed, start_example):
            yield _rows(batch, start, stop)
        return
    position = start_example
    while True:
        yield source.examples_at(position + start, position + stop, seed)
        position += global_batch_size


def local_eval_batches(source, global_batch_size, rows):
    """This process's rows `(x, y, weight)` of each evaluation batch (every process reads the
    evaluation split whole: one pass, each example once over all processes)."""
    return [_rows(batch, *rows) for batch in source.eval_batches(global_batch_size)]


def global_arrays(distribution, global_batch_size, local):
    """The global arrays of one batch from this process's rows `local` (a tuple of arrays), split
    along the batch axis over the distribution's devices."""
    arrays = []
    for a in local:
        shape = (global_batch_size, *np.shape(a)[1:])
        arrays.append(jax.make_array_from_process_local_data(_sharding(distribution, shape), a, shape))
    return arrays


def stacked_global_arrays(distribution, global_batch_size, batches):
    """The global arrays of several batches stacked along a new leading axis, from this process's
    rows of each (`batches`, a list of tuples of arrays): split along the batch axis (the second)."""
    arrays = []
    for parts in zip(*batches):
        shape = (global_batch_size, *np.shape(parts[0])[1:])
        batch_sharding = _sharding(distribution, shape)
        stacked = NamedSharding(batch_sharding.mesh, PartitionSpec(None, *batch_sharding.spec))
        arrays.append(jax.make_array_from_process_local_data(stacked, np.stack(parts), (len(parts), *shape)))
    return arrays


def _sharding(distribution, shape):
    """The distribution's sharding of a batch of `shape` (split along its first axis)."""
    return distribution.get_data_layout(shape).backend_layout
