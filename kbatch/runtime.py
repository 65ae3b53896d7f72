"""The machine's accelerator and the Keras backend that fits it, found without importing Keras,
TensorFlow or JAX: what `KERAS_BACKEND=auto` and `config.backend="auto"` pick.

  a TPU (a TPU VM, a Colab TPU runtime)  ->  jax         TensorFlow's TPU support ended with 2.19;
                                                         Keras on JAX is the live TPU path
  a GPU, or only the CPU                 ->  tensorflow  where it is installed, else jax

`KERAS_BACKEND` must be set before Keras is imported, so `import kbatch` resolves
`KERAS_BACKEND=auto` before it imports Keras:

    import os; os.environ["KERAS_BACKEND"] = "auto"
    import kbatch                          # Keras now runs on the backend picked here
    print(kbatch.runtime.describe())       # "JAX on 8 TPU cores", "TensorFlow on 1 GPU", ...

The devices themselves are then counted by the backend (`describe`); the strategy that uses
them is the config's `strategy="auto"`: every TPU core or GPU, else the CPU.
"""

import glob
import os

from kbatch.frameworks import import_tensorflow, installed

AUTO = "auto"
BACKENDS = ("tensorflow", "jax")


def tpu_attached():
    """Whether a TPU is attached (the signs TPU VMs and Colab TPU runtimes give)."""
    return bool(
        os.environ.get("TPU_NAME")
        or os.environ.get("COLAB_TPU_ADDR")
        or glob.glob("/dev/accel[0-9]*")
        or glob.glob("/dev/vfio/[0-9]*")
    )


def gpu_attached():
    """Whether an NVIDIA GPU's device node is present."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def accelerator():
    """ "tpu", "gpu" or "cpu": what this machine trains on."""
    if tpu_attached():
        return "tpu"
    return "gpu" if gpu_attached() else "cpu"


def backend_for(kind, has_tensorflow=None):
    """The Keras backend for accelerator `kind` (see the module docstring)."""
    if has_tensorflow is None:
        has_tensorflow = installed("tensorflow")
    if kind == "tpu" or not has_tensorflow:
        return "jax"
    return "tensorflow"


def resolve_keras_backend(environ=None):
    """Replace `KERAS_BACKEND=auto` in `environ` (default `os.environ`) by `backend_for(accelerator())`
    before Keras is imported; returns the variable's value. Child processes inherit the choice."""
    environ = os.environ if environ is None else environ
    if environ.get("KERAS_BACKEND", "").strip().lower() == AUTO:
        environ["KERAS_BACKEND"] = backend_for(accelerator())
    return environ.get("KERAS_BACKEND")


def keras_backend():
    """The backend Keras runs on, if kbatch can train on it; a one-line ValueError otherwise."""
    import keras

    name = keras.backend.backend()
    if name not in BACKENDS:
        raise ValueError(
            f"Keras runs on {name!r}; kbatch trains on {' or '.join(BACKENDS)}: "
            "set KERAS_BACKEND=jax, tensorflow or auto before Python starts."
        )
    return name


def check_backend(backend):
    """A one-line ValueError where the config's `backend` is not the one Keras runs on (a run on
    the other backend fails deep inside, with TensorFlow asking for a bug report)."""
    keras_on = keras_backend()
    if backend != keras_on:
        variable = os.environ.get("KERAS_BACKEND")
        source = f"KERAS_BACKEND={variable}" if variable else "KERAS_BACKEND is not set"
        raise ValueError(
            f"config.backend={backend!r} but Keras runs on {keras_on} ({source}): set "
            f"--config.backend={keras_on} (or auto) or KERAS_BACKEND={backend}"
        )


def set_random_seed(seed):
    """`keras.utils.set_random_seed(seed)`. It seeds TensorFlow too where it is installed, on any
    backend, importing it (Keras on JAX as well, where kbatch does not): TensorFlow is imported
    here first, without its start-up lines (`kbatch.frameworks.import_tensorflow`)."""
    import keras

    if installed("tensorflow"):
        import_tensorflow()
    keras.utils.set_random_seed(seed)


def _devices(backend):
    if backend == "jax":
        import jax

        devices = jax.devices()
        return devices[0].platform, len(devices)
    import tensorflow as tf

    for kind in ("TPU", "GPU", "CPU"):
        devices = tf.config.list_logical_devices(kind)
        if devices or kind == "CPU":
            return kind.lower(), len(devices)


def describe():
    """One line: the backend Keras runs on and the devices it sees, e.g. "JAX on 8 TPU cores"."""
    backend = keras_backend()
    platform, count = _devices(backend)
    unit = {"tpu": "TPU core", "gpu": "GPU", "cpu": "CPU device"}.get(platform, f"{platform} device")
    name = {"jax": "JAX", "tensorflow": "TensorFlow"}[backend]
    return f"{name} on {count} {unit}{'s' if count != 1 else ''} (accelerator found: {accelerator()})"
