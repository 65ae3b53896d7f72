"""Which optional frameworks this Python has, found without importing them: kbatch runs on
Keras with JAX and no TensorFlow (a TPU VM, a GPU machine), and imports its TensorFlow parts
(`tf.distribute`, TFDS input) only where TensorFlow is installed."""

import importlib.util


def installed(name):
    """Whether `import name` can find the package (False also where it is blocked)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[name] is None (blocked)
        return False


HAS_TENSORFLOW = installed("tensorflow") and installed("tensorflow_datasets")
