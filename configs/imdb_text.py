"""Sentiment classification of IMDB reviews (`imdb_reviews`, 25,000 training and 25,000 test
reviews, two classes) with a small Transformer encoder (`text_classifier`, docs/text.md).

The text is tokenized by the source: a `TextVectorization` adapted on the training reviews,
20,000 words, 256 token ids a review. The recipe language models use: AdamW (Loshchilov & Hutter
2019) with linear warmup then cosine decay, LayerNorm (per token: no batch statistics, so the
batch can grow without changing the model), the learning rate moved with the square root of the
batch (adaptive optimizers: Malladi et al. 2022). TFDS downloads the data on first use (80 MB).

  kbatch-train --config=configs/imdb_text.py
"""

from kbatch.configs import base


def get_config():
    config = base.get_config()
    config.dataset = "tfds:imdb_reviews"
    config.text_vocabulary_size = 20000
    config.text_sequence_length = 256
    config.model = "text_classifier"
    config.norm = "layer"

    config.base_batch_size = 64
    config.base_learning_rate = 5e-4
    config.batch_size = 256
    config.lr_scaling = "sqrt"
    config.warmup_epochs = 0.5
    config.decay = "cosine"
    config.num_epochs = 4
    config.optimizer = "adamw"
    config.weight_decay = 0.01

    config.steps_per_loop = 20
    config.target_accuracy = 0.85
    return config
