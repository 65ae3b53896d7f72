"""A byte-level language-model data set that needs no download: Python's own standard library.

The corpus is 71 modules of the CPython 3.11 standard library (`MODULES`, 1.5 MB of text), read
from the running interpreter's `Lib` folder. They are the top-level modules whose text is the
same in CPython 3.11.2 and 3.11.7 (the 3.11 bug-fix releases differ in others), none of them
removed in 3.13. The text is pinned by its SHA-256 (`CORPUS_SHA256`, over each file's name,
length and bytes): an interpreter whose files differ (3.12 rewrote several) is refused in one
line, since a different corpus would silently make results incomparable.

Split by file: every tenth module of the sorted list is for evaluation, the rest for training.
Each split's files are concatenated in order and cut into windows of `sequence_length + 1`
bytes that overlap by one, so each byte is a target once: inputs = window[:-1], targets =
window[1:]. The last window of a split is filled with `PAD` (256): token ids are bytes 0-255
plus the pad (`VOCAB_SIZE` 257), and the next-token task masks targets equal to `PAD`.

`make_pystdlib_bytes` gives the arrays that the TFDS builder (`kbatch.data.pystdlib_bytes_builder`)
stores and the JAX backend reads as NumPy, so the two are the same.
"""

import hashlib
import os
import sysconfig

import numpy as np

MODULES = tuple(
    f"{name}.py"
    for name in (
        "_collections_abc",
        "_strptime",
        "bisect",
        "bz2",
        "cmd",
        "code",
        "compileall",
        "copy",
        "copyreg",
        "csv",
        "difflib",
        "filecmp",
        "fnmatch",
        "fractions",
        "ftplib",
        "functools",
        "genericpath",
        "getopt",
        "getpass",
        "glob",
        "graphlib",
        "gzip",
        "hashlib",
        "heapq",
        "hmac",
        "imaplib",
        "linecache",
        "lzma",
        "mailbox",
        "mimetypes",
        "modulefinder",
        "netrc",
        "numbers",
        "opcode",
        "operator",
        "optparse",
        "os",
        "pickle",
        "pickletools",
        "poplib",
        "posixpath",
        "pprint",
        "pstats",
        "pyclbr",
        "queue",
        "random",
        "reprlib",
        "rlcompleter",
        "runpy",
        "sched",
        "secrets",
        "shelve",
        "shlex",
        "smtplib",
        "socketserver",
        "stat",
        "statistics",
        "string",
        "stringprep",
        "symtable",
        "tabnanny",
        "textwrap",
        "tokenize",
        "tracemalloc",
        "types",
        "uuid",
        "warnings",
        "weakref",
        "webbrowser",
        "zipapp",
        "zipimport",
    )
)
CORPUS_SHA256 = "4757c2e0b303c0bc140406cdc577c2ada4894835837bdf5931dfab6ba46cc1a6"
PAD = 256
VOCAB_SIZE = 257
# name -> sequence length (inputs and targets each): the TFDS builder's configs.
CONFIGS = {"seq128": 128, "seq256": 256}


def stdlib_folder():
    """The running interpreter's standard-library folder (where `os.py` is)."""
    return sysconfig.get_paths()["stdlib"]


def read_corpus(folder=None):
    """{module file name: bytes} of `MODULES` in `folder` (the running interpreter's by default);
    ValueError in one line when a file is missing or the text is not the pinned one."""
    folder = folder or stdlib_folder()
    digest, texts = hashlib.sha256(), {}
    for name in MODULES:
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as file:
                texts[name] = file.read()
        except OSError:
            raise ValueError(
                f"pystdlib_bytes: {path} cannot be read; the data set is the text of CPython 3.11's "
                "standard library, which this interpreter does not have."
            ) from None
        digest.update(f"{name}\0{len(texts[name])}\0".encode() + texts[name])
    if digest.hexdigest() != CORPUS_SHA256:
        raise ValueError(
            f"pystdlib_bytes: the standard library in {folder} has sha256 {digest.hexdigest()[:16]}..., "
            f"not the pinned {CORPUS_SHA256[:16]}... of CPython 3.11: run with Python 3.11."
        )
    return texts


def split_modules():
    """(training modules, evaluation modules): every tenth of the sorted `MODULES` is for evaluation."""
    train = tuple(name for index, name in enumerate(MODULES) if index % 10 != 9)
    return train, tuple(name for index, name in enumerate(MODULES) if index % 10 == 9)


def pack(text, sequence_length):
    """(inputs, targets), int32 [windows, sequence_length]: `text` cut into windows of
    sequence_length + 1 bytes overlapping by one, the last one filled with `PAD`."""
    tokens = np.frombuffer(text, np.uint8).astype(np.int32)
    windows = -(-(len(tokens) - 1) // sequence_length)
    filled = np.full(windows * sequence_length + 1, PAD, np.int32)
    filled[: len(tokens)] = tokens
    starts = np.arange(windows)[:, None] * sequence_length + np.arange(sequence_length + 1)
    packed = filled[starts]
    return packed[:, :-1], packed[:, 1:]


def make_pystdlib_bytes(sequence_length, folder=None):
    """{"x", "y", "x_test", "y_test"}: the training and evaluation windows' inputs and targets."""
    if not isinstance(sequence_length, int) or isinstance(sequence_length, bool) or sequence_length < 1:
        raise ValueError(f"sequence_length={sequence_length!r}: must be a positive integer.")
    texts = read_corpus(folder)
    train, evaluation = split_modules()
    x, y = pack(b"".join(texts[name] for name in train), sequence_length)
    x_test, y_test = pack(b"".join(texts[name] for name in evaluation), sequence_length)
    return {"x": x, "y": y, "x_test": x_test, "y_test": y_test}
