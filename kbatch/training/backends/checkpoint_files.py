"""TensorFlow checkpoint files in `model_dir/checkpoints`: which ones there are, and the state
file (`checkpoint`) that lists them.

TensorFlow finds checkpoints through the state file alone: deleted or damaged, every checkpoint
beside it looks absent and a run would start again from step 0 over them. Here the files on disk
are the fallback: every checkpoint with an index file is a candidate, newest first, and restoring
it tells whether it is whole.
"""

import glob
import os
import re

from kbatch.training.run_files import run_dir

STATE_FILE = "checkpoint"


FIELD = re.compile(
    r'^(model_checkpoint_path|all_model_checkpoint_paths): "([^"]*)"$'
    r"|^(all_model_checkpoint_timestamps|last_preserved_timestamp): [0-9.e+-]+$"
)


def state_listing(directory):
    """The checkpoint prefixes the state file lists, oldest first; None if it is missing or
    unreadable. (The file is the text form of TensorFlow's `CheckpointState`: a line per field.)"""
    try:
        with open(os.path.join(directory, STATE_FILE)) as f:
            lines = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError):
        return None
    matches = [FIELD.match(line) for line in lines]
    if not lines or not all(matches):
        return None
    paths = [m.group(2) for m in matches if m.group(1) == "all_model_checkpoint_paths"]
    return [p if os.path.isabs(p) else os.path.join(directory, p) for p in paths]


def on_disk(directory):
    """The prefixes of the checkpoints whose index file exists, oldest first."""
    found = glob.glob(os.path.join(directory, "ckpt-*.index"))
    prefixes = [p[: -len(".index")] for p in found if re.search(r"ckpt-\d+\.index$", p)]
    return sorted(prefixes, key=lambda p: int(p.rsplit("-", 1)[1]))


def listed(directory):
    """The checkpoints to try, oldest first: the state file's list, or, when the state file is
    missing or unreadable although checkpoints are there, the files themselves (saying so)."""
    listing = state_listing(directory)
    if listing is not None:
        return listing
    files = on_disk(directory)
    if files:
        what = "missing" if not os.path.exists(os.path.join(directory, STATE_FILE)) else "unreadable"
        print(
            f"kbatch: the checkpoint state file {os.path.join(directory, STATE_FILE)} is {what}; "
            f"found {len(files)} checkpoint(s) by their files, the newest {os.path.basename(files[-1])}.",
            flush=True,
        )
    return files


def write_state(directory, prefixes):
    """List `prefixes` (oldest first) in the state file, written atomically."""
    names = [os.path.basename(p) for p in prefixes]
    text = "".join(
        [f'model_checkpoint_path: "{names[-1]}"\n', *(f'all_model_checkpoint_paths: "{name}"\n' for name in names)]
    )
    run_dir.write_atomically(os.path.join(directory, STATE_FILE), lambda tmp: _write_text(tmp, text))


def _write_text(path, text):
    with open(path, "w") as f:
        f.write(text)
