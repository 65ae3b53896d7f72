"""Which optional frameworks this Python has, found without importing them: kbatch runs on
Keras with JAX and no TensorFlow (a TPU VM, a GPU machine), and imports its TensorFlow parts
(`tf.distribute`, TFDS input) only where TensorFlow is installed and Keras does not run on JAX
(`uses_tensorflow`): a JAX run reads MNIST-1D through `kbatch.data.numpy_source` and imports no
TensorFlow (the TFDS data sets still import it when they are read).

`import_tensorflow()` imports TensorFlow with the C++ lines it prints while it starts (before
its logging is set up, so no setting hides them) taken out of stderr.
"""

import importlib.util
import json
import os
import re
import sys
import tempfile


def installed(name):
    """Whether `import name` can find the package (False also where it is blocked)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[name] is None (blocked)
        return False


HAS_TENSORFLOW = installed("tensorflow") and installed("tensorflow_datasets")


def keras_backend_setting(environ=None):
    """The backend Keras runs on, or will when it is imported, read as Keras reads it:
    `KERAS_BACKEND`, else the "backend" of `$KERAS_HOME/keras.json` (default `~/.keras`), else
    tensorflow. (`KERAS_BACKEND=auto` is resolved by `import kbatch` before this is asked.)"""
    if "keras" in sys.modules and hasattr(sys.modules["keras"], "backend"):
        return sys.modules["keras"].backend.backend()
    environ = os.environ if environ is None else environ
    if environ.get("KERAS_BACKEND"):
        return environ["KERAS_BACKEND"]
    home = environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as file:
            return str(json.load(file).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def uses_tensorflow():
    """Whether kbatch imports its TensorFlow parts: TensorFlow and TFDS are installed and Keras
    does not run on JAX."""
    return HAS_TENSORFLOW and keras_backend_setting() != "jax"


# What TensorFlow prints in C++ while it is imported (twice in 2.21: two libraries each start
# their own logging), before any setting is read.
STARTUP_LINES = re.compile(
    r"WARNING: All log messages before absl::InitializeLog|"
    r"[IW]\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard)\.cc:\d+\]|"
    r"To enable the following instructions:"
)
# What it prints when it looks for a GPU on a machine that has none.
NO_GPU_LINE = re.compile(r"E\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit")


def _noise(line, gpu_attached):
    return bool(STARTUP_LINES.match(line) or (not gpu_attached and NO_GPU_LINE.match(line)))


def import_tensorflow():
    """`import tensorflow` and list its physical devices (the first CUDA call), with what
    TensorFlow's C++ code prints meanwhile written to stderr but for its start-up lines
    (`STARTUP_LINES`) and, on a machine without a GPU, its failed search for one (`NO_GPU_LINE`).
    With `TF_CPP_MIN_LOG_LEVEL=0` (everything asked for), or where stderr cannot be redirected,
    it is a plain import. Returns the module (at once where it is imported already)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    try:
        stderr = None if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0" else os.dup(2)
    except OSError:
        stderr = None
    if stderr is None:
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(stderr, 2)
            os.close(stderr)
            _write_back(captured)
    return tf


def _write_back(captured):
    """Write the lines in file `captured` to stderr, but for TensorFlow's start-up noise."""
    from kbatch import runtime

    gpu_attached = runtime.gpu_attached()
    captured.seek(0)
    lines = captured.read().decode(errors="replace").splitlines(keepends=True)
    sys.stderr.write("".join(line for line in lines if not _noise(line, gpu_attached)))
    sys.stderr.flush()
