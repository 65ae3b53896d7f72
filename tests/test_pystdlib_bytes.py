"""The offline byte-level text data set: the pinned corpus, the split by file, the packing into
next-byte windows (checked against the files' own bytes), and the TFDS builder storing exactly the
NumPy arrays the JAX backend reads."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

import kbatch.data.pystdlib_bytes_builder  # noqa: F401  (registers the builder on either backend)
from kbatch.data import pystdlib_bytes
from kbatch.data.pystdlib_bytes import MODULES, PAD, make_pystdlib_bytes, pack, split_modules

pytestmark = pytest.mark.fast

HERE = pathlib.Path(__file__).resolve().parent


def _text(names):
    folder = pystdlib_bytes.stdlib_folder()
    return b"".join(open(os.path.join(folder, name), "rb").read() for name in names)


def test_windows_are_the_split_files_bytes_shifted_by_one():
    data = make_pystdlib_bytes(64)
    train, evaluation = split_modules()
    assert set(train).isdisjoint(evaluation) and sorted(train + evaluation) == sorted(MODULES)
    assert len(evaluation) == len(MODULES) // 10
    for x, y, names in ((data["x"], data["y"], train), (data["x_test"], data["y_test"], evaluation)):
        text = np.frombuffer(_text(names), np.uint8)
        assert x.shape[1] == y.shape[1] == 64 and x.dtype == y.dtype == np.int32
        np.testing.assert_array_equal(y[:, :-1], x[:, 1:])  # targets are the inputs shifted by one
        np.testing.assert_array_equal(y[:-1, -1], x[1:, 0])  # each window starts where the last one ended
        stream = np.concatenate([x.ravel(), y[-1, -1:]])
        np.testing.assert_array_equal(stream[: len(text)], text)
        assert (stream[len(text) :] == PAD).all() and len(stream) - len(text) < 64


def test_pack_fills_only_the_last_window_with_pad():
    x, y = pack(b"abcdefgh", 3)
    np.testing.assert_array_equal(x, [[97, 98, 99], [100, 101, 102], [103, 104, PAD]])
    np.testing.assert_array_equal(y, [[98, 99, 100], [101, 102, 103], [104, PAD, PAD]])
    x, y = pack(b"abcdefg", 3)  # 7 bytes = two windows of 3 + 1 overlapping by one: no padding
    np.testing.assert_array_equal(x, [[97, 98, 99], [100, 101, 102]])
    np.testing.assert_array_equal(y, [[98, 99, 100], [101, 102, 103]])


def test_generation_is_deterministic():
    first, second = make_pystdlib_bytes(64), make_pystdlib_bytes(64)
    for key in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(first[key], second[key])


def _copy_of_the_corpus(tmp_path):
    for name in MODULES:
        shutil.copy(os.path.join(pystdlib_bytes.stdlib_folder(), name), tmp_path / name)
    return tmp_path


def test_a_different_standard_library_is_refused_in_one_line(tmp_path):
    folder = _copy_of_the_corpus(tmp_path)
    np.testing.assert_array_equal(make_pystdlib_bytes(64, str(folder))["x"], make_pystdlib_bytes(64)["x"])
    with open(folder / "textwrap.py", "ab") as file:
        file.write(b"# changed in a later Python\n")
    with pytest.raises(
        ValueError,
        match=r"^pystdlib_bytes: the standard library in .* has sha256 [0-9a-f]{16}\.\.\., "
        r"not the pinned 4757c2e0b303c0bc\.\.\. of CPython 3\.11: run with Python "
        r"3\.11\.$",
    ) as error:
        make_pystdlib_bytes(64, str(folder))
    assert "\n" not in str(error.value)
    os.remove(folder / "zipapp.py")
    with pytest.raises(ValueError, match=r"zipapp\.py cannot be read; the data set is the text of CPython 3\.11"):
        make_pystdlib_bytes(64, str(folder))


@pytest.mark.parametrize("length", [0, -3, 2.5, True])
def test_a_bad_sequence_length_is_refused(length):
    with pytest.raises(ValueError, match=rf"^sequence_length={length!r}: must be a positive integer\.$"):
        make_pystdlib_bytes(length)


def test_tfds_builder_stores_the_numpy_arrays(tmp_path):
    builder = tfds.builder("pystdlib_bytes/seq128", data_dir=str(tmp_path))
    builder.download_and_prepare()
    assert builder.info.metadata["corpus_sha256"] == pystdlib_bytes.CORPUS_SHA256
    assert builder.info.metadata["vocab_size"] == 257 and builder.info.metadata["pad_id"] == PAD
    arrays = make_pystdlib_bytes(128)
    for split, x_key, y_key in (("train", "x", "y"), ("test", "x_test", "y_test")):
        examples = tfds.load("pystdlib_bytes/seq128", split=split, data_dir=str(tmp_path), as_supervised=True)
        inputs, targets = (np.stack(column) for column in zip(*tfds.as_numpy(examples)))
        assert builder.info.splits[split].num_examples == len(arrays[x_key])
        # TFDS stores examples in its own (key-hashed) order: compare as sorted rows.
        ours, theirs = np.lexsort(inputs.T[::-1]), np.lexsort(arrays[x_key].T[::-1])
        np.testing.assert_array_equal(inputs[ours], arrays[x_key][theirs])
        np.testing.assert_array_equal(targets[ours], arrays[y_key][theirs])


WITHOUT_TENSORFLOW = """
import sys; sys.modules['tensorflow'] = None; sys.modules['tensorflow_datasets'] = None
import numpy as np
from kbatch.data.pystdlib_bytes import make_pystdlib_bytes

np.savez(sys.argv[1], **make_pystdlib_bytes(64))
assert not [m for m in sys.modules if m.startswith('tensorflow') and sys.modules[m] is not None]
"""


def test_the_jax_backend_gets_the_same_arrays_without_tensorflow(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(HERE.parent)}
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, str(tmp_path / "arrays.npz")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    expected = make_pystdlib_bytes(64)
    with np.load(tmp_path / "arrays.npz") as arrays:
        assert sorted(arrays.files) == sorted(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(arrays[key], value)
