"""The checks every part of kbatch uses on its inputs, with one message style.

A bad value is a `ValueError` whose message names the input and what is allowed, in one line:

    config.batch_size=0: must be a positive integer.
    momentum=1.5: must be a finite number in [0, 1).

`name` is what the user wrote: `config.FIELD` for a config field, the argument's name for a
component (`GhostBatchNormalization(momentum=...)` -> `momentum`), `--flag` for a tool's flag.
Each check returns the value converted (an int, a float), so a caller can write
`self.momentum = checks.real("momentum", momentum, low=0, high=1, high_open=True)`.
Pure Python: no TensorFlow, no Keras.
"""

import math
import numbers


def fail(name, value, must):
    """Raise the one-line error: `name=value: must be <must>.`"""
    raise ValueError(f"{name}={value!r}: must be {must}.")


def _is_int(value):
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def integer(name, value, *, low=None):
    """`value` as an int; with `low`, at least `low`."""
    if not _is_int(value) or (low is not None and value < low):
        fail(name, value, "an integer" if low is None else f"an integer >= {low}")
    return int(value)


def positive_int(name, value):
    """`value` as an int > 0."""
    if not _is_int(value) or value <= 0:
        fail(name, value, "a positive integer")
    return int(value)


def interval(low=None, high=None, low_open=False, high_open=False):
    """The interval as written in messages: `[0, 1)`, `> 0`, `>= 0`, `<= 1`."""
    if low is not None and high is not None:
        return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "any finite number"


def real(name, value, *, low=None, high=None, low_open=False, high_open=False, allow_none=False):
    """`value` as a finite float in the interval (each bound closed unless `*_open`); None
    passes through when `allow_none`."""
    if value is None and allow_none:
        return None
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        where = interval(low, high, low_open, high_open)
        must = "a finite number" + (
            "" if where == "any finite number" else f" {'in ' if low is not None and high is not None else ''}{where}"
        )
        fail(name, value, must + (", or None" if allow_none else ""))
    return float(value)


def choice(name, value, allowed):
    """`value` if it is one of `allowed`."""
    try:
        ok = value in allowed
    except TypeError:  # an unhashable value looked up in a set
        ok = False
    if not ok:
        fail(name, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def boolean(name, value):
    """`value` if it is True or False (not 1, not "yes")."""
    if not isinstance(value, bool):
        fail(name, value, "True or False")
    return value


def text(name, value, *, allow_none=False):
    """`value` if it is a non-empty string (a path, a name)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        fail(name, value, "a non-empty string" + (", or None" if allow_none else ""))
    return value
