"""One run folder, one process: an exclusive lock on `model_dir` held while a run trains.

The lock is `fcntl.flock` on `model_dir/.kbatch.lock`. The kernel releases it when the holding
process exits in any way (kill -9 included), so a lock left by a dead process is never in the
way: the file may stay, the lock does not. The file names its holder (pid, host, start time), so
the refusal says who holds the folder. Only the process that writes `model_dir` (the chief) locks
it; the other workers of a multi-worker run write elsewhere.
"""

import datetime
import fcntl
import json
import os
import socket

LOCK_FILE = ".kbatch.lock"


class RunLock:
    """The held lock of one `model_dir` (see `acquire`); `release()` drops it (idempotent)."""

    # Kept here: a Run still alive at interpreter exit is freed after the modules' globals (`os`) are cleared.
    _close = staticmethod(os.close)

    def __init__(self, model_dir, fd, made_dir):
        self.model_dir, self._fd, self._made_dir = model_dir, fd, made_dir

    def __del__(self):  # a Run dropped without training or close()
        self.release()

    def release(self, discard_empty=False):
        """Drop the lock. With `discard_empty`, a folder this lock made and nothing else wrote
        into is removed again, so a refused run leaves nothing behind."""
        if self._fd is None:
            return
        self._close(self._fd)
        self._fd = None
        if discard_empty and self._made_dir and os.listdir(self.model_dir) == [LOCK_FILE]:
            os.remove(os.path.join(self.model_dir, LOCK_FILE))
            os.rmdir(self.model_dir)


def acquire(model_dir):
    """The lock of `model_dir` (made if missing), or a ValueError naming the process that holds
    it, or the reason the folder cannot be written (a read-only file system, a full disk)."""
    made_dir = not os.path.isdir(model_dir)
    try:
        os.makedirs(model_dir, exist_ok=True)
        fd = os.open(os.path.join(model_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ValueError(f"config.model_dir={model_dir!r} cannot be written ({error.strerror}).") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            raise ValueError(
                f"config.model_dir={model_dir!r} is held by an earlier Run of this process that was "
                "neither trained nor closed: call .close() on it (or train it) first."
            ) from None
        raise ValueError(
            f"config.model_dir={model_dir!r} is in use by another run ({_describe(holder)}): one folder "
            "takes one run at a time; wait for it to end, or choose another model_dir."
        ) from None
    try:
        _write_holder(fd)
    except OSError as error:
        os.close(fd)
        raise ValueError(f"config.model_dir={model_dir!r} cannot be written ({error.strerror}).") from None
    return RunLock(model_dir, fd, made_dir)


def _write_holder(fd):
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)


def _read_holder(fd):
    """{"pid", "host", "since"} as the holder wrote them ({} where it has not yet)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder):
    if not {"pid", "host", "since"} <= set(holder):
        return "a process that has not yet said who it is"
    return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
