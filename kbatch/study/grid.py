"""A sweep's points: overrides of one config, the product of axes (`batch_size=32,64`) and any
explicit points, each with a name that says what it overrides.

`parse_axis("batch_size=32,64")` reads a command-line axis; values are Python literals
(`32`, `0.1`, `None`, `True`, `(2, 4)`) or else strings (`lars`). Field names are checked
against the config schema here; the values themselves are checked when each run's config is.
Nothing here trains.
"""

import ast
import hashlib
import itertools
import json
import re

from kbatch.training.config import schema

NAME_LIMIT = 120  # characters of a run's folder name before it is shortened with a hash


def parse_value(text):
    """A command-line value: a Python literal if it is one, else the text itself."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def check_field(name, where):
    """A ValueError (naming `where`, e.g. `--grid`) unless `name` is a config field."""
    if name not in schema.NAMES:
        raise ValueError(f"{where}: {schema.unknown_field_message(name)}")


def parse_axis(text, where="--grid"):
    """(field, [values]) from `field=v1,v2,...`; a ValueError naming `where` when it is malformed.
    A tuple value is written in parentheses: `decay_boundaries=(4,6),(2,)`."""
    field, sep, values = text.partition("=")
    field = field.strip()
    if not sep or not field or not values.strip():
        raise ValueError(f"{where}={text}: write FIELD=VALUE[,VALUE...], e.g. batch_size=32,64.")
    check_field(field, where)
    parts = [parse_value(p) for p in _split_top_level(values)]
    if len(set(map(repr, parts))) != len(parts):
        raise ValueError(f"{where}={text}: a value is given twice.")
    return field, parts


def _split_top_level(text):
    """`a,(1,2),b` -> ['a', '(1,2)', 'b']: commas inside parentheses or brackets stay."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]


def expand(axes, points=()):
    """The sweep's override dicts: each of `points` (default: one empty point) combined with every
    combination of `axes` ({field: [values]}, in order). A ValueError for an empty grid, an
    unknown field, or two points that are the same run."""
    for field, values in axes.items():
        check_field(field, "grid axis")
        if not values:
            raise ValueError(f"grid axis {field}: give at least one value.")
    for point in points:
        for field in point:
            check_field(field, "point")
    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    runs = [{**point, **combo} for point in (points or [{}]) for combo in combos]
    if not axes and not points:
        raise ValueError("the grid is empty: give at least one --grid axis or point.")
    names = [run_name(r) for r in runs]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"the grid holds the run {twice} twice.")
    return runs


def run_name(overrides):
    """A folder name for one point: `batch_size=64,optimizer=lars`, fields sorted; shortened with
    a hash of the whole when it is too long for a path."""
    text = ",".join(f"{k}={_short(v)}" for k, v in sorted(overrides.items())) or "base"
    text = re.sub(r"[^A-Za-z0-9=,._+-]", "_", text)
    if len(text) <= NAME_LIMIT:
        return text
    # JSON, not repr: sweep.json keeps a tuple as a list, and the name must not change on reopening.
    digest = hashlib.sha256(json.dumps(sorted(overrides.items())).encode()).hexdigest()[:10]
    return f"{text[: NAME_LIMIT - 11]}-{digest}"


def _short(value):
    if isinstance(value, float):
        return format(value, ".6g")
    if isinstance(value, (tuple, list)):
        return "_".join(_short(v) for v in value) or "none"
    return str(value)
