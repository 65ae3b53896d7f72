"""Scratch folders for the benchmarks' runs, removed when the benchmark's process exits."""

import atexit
import shutil
import tempfile


def scratch_folder(prefix):
    """A new folder under the system's temporary folder, removed at exit (a benchmark's run
    folders hold checkpoints and models no one reads afterwards)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
