"""Batches of examples as NumPy: an array, or a dict of arrays (named features), one row per
example. The helpers every source shares to slice, join and describe them."""

import numpy as np

from kbatch.data.names import FeatureSpec


def map_features(fn, x):
    """`fn` applied to each feature of `x` (an array or a dict of arrays)."""
    return {key: fn(value) for key, value in x.items()} if isinstance(x, dict) else fn(x)


def count(x):
    """The number of examples (rows) in `x`."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take(x, index):
    """The rows `index` (an index array or a slice) of every feature of `x`."""
    return map_features(lambda value: value[index], x)


def join(parts):
    """The batches `parts` (all with the same features) concatenated row-wise."""
    if isinstance(parts[0], dict):
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return np.concatenate(parts)


def spec(x):
    """The `FeatureSpec` of one example of `x` (a dict of them for a dict)."""
    return map_features(lambda value: FeatureSpec(tuple(value.shape[1:]), np.asarray(value).dtype.name), x)


def shapes(input_spec):
    """The example shape of `input_spec` (a dict of shapes for a dict)."""
    return map_features(lambda feature: feature.shape, input_spec)


def as_arrays(x):
    """`x` with each feature a NumPy array."""
    return {key: np.asarray(value) for key, value in x.items()} if isinstance(x, dict) else np.asarray(x)


def recut(chunks, size):
    """`(x, y)` chunks of any size re-cut into batches of `size` rows, in order; the last one is
    shorter where the rows run out."""
    pending, held = [], 0
    for x, y in chunks:
        pending.append((x, y))
        held += len(y)
        while held >= size:
            x_all, y_all = join([part[0] for part in pending]), np.concatenate([part[1] for part in pending])
            yield take(x_all, slice(0, size)), y_all[:size]
            pending, held = [(take(x_all, slice(size, None)), y_all[size:])], held - size
    if held:
        yield join([part[0] for part in pending]), np.concatenate([part[1] for part in pending])


def skip(chunks, count):
    """`(x, y)` chunks without their first `count` rows."""
    for x, y in chunks:
        if count >= len(y):
            count -= len(y)
            continue
        yield take(x, slice(count, None)), y[count:]
        count = 0
