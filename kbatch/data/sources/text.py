"""Text served as token ids: a `keras.layers.TextVectorization` adapted on the training texts
(lower-cased, punctuation stripped, split on whitespace; the `vocabulary_size` most frequent
words, id 0 the padding and 1 out-of-vocabulary), each text cut or padded with 0 to
`sequence_length` ids. The ids are computed once, here, by TensorFlow: the same on every backend
(a model on JAX cannot run the string ops itself)."""

import numpy as np

CHUNK = 4096  # texts tokenized per call


def is_text(array):
    """Whether a NumPy feature holds strings (TFDS stores text as byte strings)."""
    return array.dtype.kind in "OSU"


def vectorizer(train_texts, vocabulary_size, sequence_length):
    """A `TextVectorization` adapted on `train_texts` (a 1-D array of strings)."""
    import keras

    layer = keras.layers.TextVectorization(max_tokens=vocabulary_size, output_sequence_length=sequence_length)
    layer.adapt(train_texts, batch_size=CHUNK)
    return layer


def token_ids(layer, texts):
    """int32 [len(texts), sequence_length]: `texts` through `layer`, a chunk at a time."""
    import keras

    chunks = [keras.ops.convert_to_numpy(layer(texts[i : i + CHUNK])) for i in range(0, len(texts), CHUNK)]
    return np.concatenate(chunks).astype(np.int32)
