"""A source of your own named on the command line: `config.dataset="python:MODULE:FUNCTION"`
imports MODULE (found as `python -m` finds it: the current folder first, then `PYTHONPATH`) and
calls FUNCTION() for the `kbatch.data.Source` to train on. The config holds only the name, so
`kbatch-train`, a resumed run and the worker processes of `tools/sweep.py` and `tools/lr_search.py`
each build the same source by calling FUNCTION again."""

import importlib
import os
import sys

from kbatch.data import names
from kbatch.data.sources.base import Source

SPELLING = "'python:MODULE:FUNCTION' (FUNCTION() returns a kbatch.data.Source)"


def _fail(value, why):
    raise ValueError(f"config.dataset={value!r}: {why}; give {SPELLING}.")


def _import(value, module):
    """The module `module`, the current folder first on the path while it is imported."""
    folder, added = os.getcwd(), False
    if folder not in sys.path and "" not in sys.path:
        sys.path.insert(0, folder)
        added = True
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name and (module == error.name or module.startswith(error.name + ".")):
            _fail(value, f"no module {error.name!r} in {folder} or on PYTHONPATH")
        raise  # the module was found but imports something missing: the user's own traceback
    finally:
        if added:
            sys.path.remove(folder)


def function(value):
    """The FUNCTION of `value` ("python:MODULE:FUNCTION"), imported; a one-line ValueError when
    the spelling, the module or the function is wrong."""
    parts = value[len(names.PYTHON_PREFIX) :].split(":")
    if len(parts) != 2 or not all(part.strip() for part in parts):
        _fail(value, "not MODULE:FUNCTION")
    module_name, function_name = parts
    module = _import(value, module_name)
    made = getattr(module, function_name, None)
    if not callable(made):
        _fail(value, f"module {module_name!r} has no function {function_name!r}")
    return made


def source(value):
    """The `Source` that FUNCTION() of `value` returns; a one-line ValueError when it is not one."""
    made = function(value)()
    if not isinstance(made, Source):
        _fail(
            value,
            f"{value[len(names.PYTHON_PREFIX) :]}() returned a {type(made).__name__}, not a kbatch.data.Source "
            "(kbatch.data.from_arrays, from_tfds, from_tf_dataset, from_iterable)",
        )
    return made
