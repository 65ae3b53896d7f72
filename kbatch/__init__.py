"""kbatch: large-batch training for Keras 3 on TPU and GPU.

Importing kbatch registers its Keras serializables (so `keras.models.load_model` can read a
`model.keras` written by the trainer) and its TFDS builders (so `tfds.load("mnist1d/large")`
works offline). It needs Keras, not TensorFlow: without TensorFlow (Keras on JAX) the
`tf.distribute` and TFDS parts are left out, and `kbatch.data.numpy_source` serves the data.
`kbatch.training.train(config)` is the trainer.

`KERAS_BACKEND=auto` is resolved here, before Keras is imported: JAX on a TPU, else TensorFlow
where it is installed (`kbatch.runtime`; `kbatch.runtime.describe()` says what was picked).

Imported before TensorFlow, kbatch hides TensorFlow's C++ INFO lines and warnings (XLA service
start-up, dataset buffer sizes, tf.data graph rewrites skipped, asserts XLA drops) by setting
`TF_CPP_MIN_LOG_LEVEL=2` unless you set it yourself, and the lines TensorFlow prints while it is
imported (`kbatch.frameworks.import_tensorflow`); C++ errors still show. `TF_CPP_MIN_LOG_LEVEL=0`
brings everything back. Where Keras runs on JAX, kbatch imports none of its TensorFlow parts
(Keras imports TensorFlow to seed it where it is installed, when a run starts: kbatch does it
first, as quietly).
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kbatch import runtime  # noqa: E402  (no Keras inside)

runtime.resolve_keras_backend()

from kbatch import frameworks  # noqa: E402

if frameworks.uses_tensorflow():
    frameworks.import_tensorflow()  # its start-up lines out of stderr
    from kbatch import distribute  # noqa: F401
from kbatch import data, jax_job, layers, models, optimizers, scaling, schedules, training  # noqa: E402

__version__ = "0.1.0"
