"""kbatch: large-batch training for Keras 3 on TPU and GPU.

Importing kbatch registers its Keras serializables (so `keras.models.load_model` can read a
`model.keras` written by the trainer) and its TFDS builders (so `tfds.load("mnist1d/large")`
works offline).
"""

from kbatch import data
from kbatch import distribute
from kbatch import layers
from kbatch import models
from kbatch import optimizers
from kbatch import scaling
from kbatch import schedules

__version__ = "0.1.0"
