"""A small Transformer text classifier (the encoder of Vaswani et al. 2017, pre-LN; BERT's
sequence classification, Devlin et al. 2019, pooled by a masked mean instead of a [CLS] token),
on the token ids a text source gives (0: padding), with the norm chosen by name.
"""

import keras
from keras import ops

from kbatch import layers
from kbatch.models.transformer_lm import EMBEDDING_INIT, PositionEmbedding, token_input, transformer_block


@keras.saving.register_keras_serializable(package="kbatch")
class TokenMask(keras.layers.Layer):
    """Token ids [batch, length] -> [batch, 1, length], True where a token is not padding (`pad_id`)."""

    def __init__(self, pad_id=0, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = pad_id

    def call(self, tokens):
        return ops.expand_dims(ops.not_equal(tokens, self.pad_id), 1)

    def compute_output_spec(self, tokens):
        return keras.KerasTensor((tokens.shape[0], 1, tokens.shape[1]), dtype="bool")

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package="kbatch")
class MaskedMean(keras.layers.Layer):
    """The mean of `x` [batch, length, width] over the positions `keep` [batch, 1, length] holds True (0 for none)."""

    def call(self, x, keep):
        weights = ops.cast(ops.transpose(keep, (0, 2, 1)), x.dtype)
        return ops.sum(x * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1)

    def compute_output_shape(self, x_shape, keep_shape):
        return (x_shape[0], x_shape[2])


def text_classifier(
    num_classes=2,
    input_shape=(256,),
    vocabulary_size=20000,
    norm="layer",
    norm_kwargs=None,
    num_layers=1,
    width=64,
    num_heads=4,
    mlp_ratio=2,
    dropout=0.0,
):
    """Token ids [batch, length] -> class logits [batch, num_classes].

    Token and learned position embeddings, `num_layers` pre-LN encoder blocks (self-attention over
    the tokens that are not padding, a GELU MLP), a final norm, the mean over the tokens, and a
    Dense layer named "logits". `norm` is any `kbatch.layers.get` name.
    """
    tokens = token_input(input_shape, width, num_heads)
    norm_kwargs = dict(norm_kwargs or {})
    mask = TokenMask(name="token_mask")(tokens)
    x = keras.layers.Embedding(vocabulary_size, width, embeddings_initializer=EMBEDDING_INIT, name="token_embedding")(
        tokens
    )
    x = PositionEmbedding(input_shape[0], name="position_embedding")(x)
    for index in range(num_layers):
        x = transformer_block(
            x,
            index,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            dropout=dropout,
            pre_norm=True,
            norm=norm,
            norm_kwargs=norm_kwargs,
            causal=False,
            attention_mask=mask,
        )
    x = layers.get(norm, name="final_norm", **norm_kwargs)(x)
    logits = keras.layers.Dense(num_classes, name="logits")(MaskedMean(name="pool")(x, mask))
    return keras.Model(tokens, logits, name="text_classifier")
