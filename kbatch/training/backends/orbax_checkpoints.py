"""The JAX backend's checkpoint files: Orbax's, `checkpoints/ckpt_<step>/`, and the `.npz` files
kbatch wrote before it (read, never written).

Orbax's `CheckpointManager` writes a checkpoint into a temporary folder
(`ckpt_<step>.orbax-checkpoint-tmp`) and renames it once whole, so a half-written one is
never listed (the next manager removes it). Several JAX processes save together, each its own
shards, and Orbax agrees between them. A checkpoint is restored onto the live arrays' shardings,
so a run resumes on another number of devices or processes. Asynchronous saving returns once
the arrays are copied off the devices and writes the files while training goes on.
"""

import contextlib
import glob
import logging
import os
import re
import sys
import zipfile

import jax
import numpy as np
import orbax.checkpoint as ocp

from kbatch.training.backends import backend

PREFIX = "ckpt"  # Orbax's step folders are `ckpt_<step>`
LEGACY = re.compile(r"ckpt-(\d+)\.npz$")  # kbatch's own format before Orbax
# What Orbax (tensorstore, its JSON metadata) and NumPy raise for a checkpoint that does not read.
READ_ERRORS = (OSError, ValueError, KeyError, EOFError, AttributeError, zipfile.BadZipFile)


class OrbaxCheckpoints:
    """The checkpoints in `directory`: a pytree of jax arrays per step, the newest `keep` kept,
    written in the background when `asynchronous`."""

    def __init__(self, directory, keep, asynchronous=False):
        self.directory, self._keep, self._asynchronous = directory, keep, asynchronous
        self._manager = None

    def _open(self, create=False):
        """Orbax's manager, made on first use once the folder exists (nothing is written before)."""
        if self._manager is None and (create or os.path.isdir(self.directory)):
            _quiet_abandoned_operations()
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self._keep,
                step_prefix=PREFIX,
                enable_async_checkpointing=self._asynchronous,
                cleanup_tmp_directories=True,
            )
            self._manager = ocp.CheckpointManager(
                os.path.abspath(self.directory), options=options, item_handlers=ocp.StandardCheckpointHandler()
            )
        return self._manager

    def path(self, step):
        return os.path.join(self.directory, f"{PREFIX}_{step}")

    def candidates(self):
        """Every checkpoint's path, oldest first: Orbax's committed steps (after the save in
        flight), and legacy `.npz` files (before Orbax's of the same step)."""
        found = [(step, 0, path) for step, path in _legacy_files(self.directory)]
        manager = self._open()
        if manager is not None:
            with contextlib.suppress(OSError, ValueError):  # a save that failed is not listed (`save` says why)
                manager.wait_until_finished()
            found += [(step, 1, self.path(step)) for step in manager.all_steps()]
        return [path for _, _, path in sorted(found)]

    def save(self, step, state):
        """Save `state` (a pytree of jax arrays) as `step`'s checkpoint; nothing when this step is saved already
        (a preemption right after a checkpoint). Every process calls it."""
        manager = self._open(create=True)
        if step not in manager.all_steps():
            with _write_errors_as_os_errors():
                manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def load(self, path, like):
        """(step, state) of the Orbax checkpoint at `path`, placed as the arrays of `like` (a pytree
        of the same structure) are; `DamagedCheckpoint` or `CheckpointMismatch` from the cause."""
        step, manager = _step(path), self._open()
        try:
            saved = manager.item_metadata(step).tree
        except READ_ERRORS as error:
            raise backend.DamagedCheckpoint() from error
        _check_same_arrays(saved, like)
        target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), like)
        try:
            return step, manager.restore(step, args=ocp.args.StandardRestore(target))
        except READ_ERRORS as error:
            raise backend.DamagedCheckpoint() from error

    def discard_after(self, path):
        """Delete Orbax's checkpoints newer than `path` (damaged ones: their steps are saved again)."""
        manager, restored = self._open(), _step(path)
        for step in [s for s in (manager.all_steps() if manager else []) if s > restored]:
            manager.delete(step)

    def close(self):
        """Wait for a save in flight and let the manager go (a later use makes a new one)."""
        if self._manager is not None:
            manager, self._manager = self._manager, None
            try:
                with _write_errors_as_os_errors():
                    manager.wait_until_finished()
            finally:
                manager.close()


@contextlib.contextmanager
def _write_errors_as_os_errors():
    """Orbax's write errors (tensorstore's ValueError: a full disk, a folder made read-only; or
    Python's own OSError from Orbax's metadata files) as the OSError a backend's `save` raises,
    with the system's words when it names an errno."""
    try:
        yield
    except (OSError, ValueError) as error:
        if isinstance(error, OSError) and error.strerror:  # which write fills the disk first varies
            raise OSError(error.errno, error.strerror) from None
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        code = re.search(r"os_error_code='(\d+)'", text)
        raise (OSError(int(code.group(1)), os.strerror(int(code.group(1)))) if code else OSError(text[:200])) from None


def _quiet_abandoned_operations():
    """From now on, drop the noise of a failed read or write, which kbatch reports in one line: Orbax
    closes its event loop at the first error while the other reads or writes are still under way.
    Each of them, finishing (then or later), reports "Event loop is closed" to `sys.unraisablehook`,
    or asyncio logs its read error as "exception was never retrieved" when it is collected: a
    traceback on stderr each. Every other report passes on."""
    previous = sys.unraisablehook
    if getattr(previous, "kbatch_quiet", False):
        return

    def hook(unraisable):
        if not (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"):
            previous(unraisable)

    hook.kbatch_quiet = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_abandoned_read_or_write)


def _abandoned_read_or_write(record):
    """False (drop it) for asyncio's report of a task's read or write error that nobody awaited."""
    abandoned = record.getMessage().split("\n", 1)[0].endswith("exception was never retrieved")
    return not (abandoned and record.exc_info and issubclass(record.exc_info[0], READ_ERRORS))


def _check_same_arrays(saved, like):
    """`CheckpointMismatch` unless the checkpoint's tree `saved` has `like`'s structure and shapes."""
    if jax.tree.structure(saved) != jax.tree.structure(like):
        raise backend.CheckpointMismatch() from ValueError(
            f"{len(jax.tree.leaves(saved))} arrays in another structure, this model has {len(jax.tree.leaves(like))}"
        )
    for (name, array), want in zip(jax.tree_util.tree_leaves_with_path(saved), jax.tree.leaves(like)):
        if tuple(array.shape) != tuple(want.shape):
            raise backend.CheckpointMismatch() from ValueError(
                f"{jax.tree_util.keystr(name)}: shape {tuple(array.shape)} != {tuple(want.shape)}"
            )


def _step(path):
    match = LEGACY.search(path)
    return int(match.group(1)) if match else int(os.path.basename(path).rsplit("_", 1)[1])


def _legacy_files(directory):
    """(step, path) of the `ckpt-<step>.npz` files kbatch wrote before Orbax."""
    paths = glob.glob(os.path.join(directory, "ckpt-*.npz"))
    return [(int(LEGACY.search(p).group(1)), p) for p in paths if LEGACY.search(p)]


def is_legacy(path):
    return LEGACY.search(path) is not None


def read_legacy(path, variables):
    """Assign a legacy `.npz` checkpoint (`v<i>` for each of `variables`, in order, and `step`) to
    `variables`; its step. `DamagedCheckpoint` or `CheckpointMismatch` from the cause."""
    try:
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in saved.files}
    except READ_ERRORS as error:
        raise backend.DamagedCheckpoint() from error
    values = [arrays.get(f"v{i}") for i in range(len(variables))]
    if len(arrays) != len(variables) + 1 or [np.shape(v) for v in values] != [tuple(v.shape) for v in variables]:
        raise backend.CheckpointMismatch() from ValueError(
            f"{len(arrays) - 1} arrays, this model has {len(variables)} variables, or their shapes differ"
        )
    for variable, value in zip(variables, values):
        variable.assign(value)
    return int(arrays["step"])
