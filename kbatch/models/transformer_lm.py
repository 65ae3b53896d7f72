"""A decoder-only Transformer language model (Vaswani et al. 2017; GPT-2's pre-LN blocks,
Radford et al. 2019), with the normalization layer chosen by name.

`norm` is any `kbatch.layers.get` name, so LayerNorm ("layer"), RMSNorm ("rms", Zhang & Sennrich
2019) and BatchNorm ("batch") can be compared in one model. BatchNorm's statistics are taken over
the batch *and the positions*, later positions included: in training, a position's output then
depends a little on the tokens after it, which the causal mask is meant to hide (one reason
language models normalize per token; Shen et al. 2020, "PowerNorm").
"""

import keras
from keras import ops

from kbatch import checks, layers

EMBEDDING_INIT = keras.initializers.RandomNormal(stddev=0.02)


@keras.saving.register_keras_serializable(package="kbatch")
class TiedEmbedding(keras.layers.Embedding):
    """`keras.layers.Embedding` that also maps vectors back to logits over its vocabulary with
    the transposed table (`reverse=True`): the input and output embeddings tied (Press & Wolf 2017)."""

    def call(self, inputs, reverse=False):
        if not reverse:
            return super().call(inputs)
        return ops.matmul(inputs, ops.transpose(ops.cast(self.embeddings, inputs.dtype)))

    def compute_output_spec(self, inputs, reverse=False):
        if reverse:
            return keras.KerasTensor((*inputs.shape[:-1], self.input_dim), dtype=self.compute_dtype)
        return super().compute_output_spec(inputs)


@keras.saving.register_keras_serializable(package="kbatch")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned vector per position to a [batch, length, width] input (length <= `sequence_length`)."""

    def __init__(self, sequence_length, initializer=EMBEDDING_INIT, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = sequence_length
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.sequence_length, input_shape[-1]), initializer=self.initializer
        )

    def call(self, inputs):
        length = ops.shape(inputs)[1]
        return inputs + ops.cast(self.embeddings[:length], inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "sequence_length": self.sequence_length,
            "initializer": keras.initializers.serialize(self.initializer),
        }


def token_input(input_shape, width, num_heads):
    """The model's input of token ids, `keras.Input((sequence_length,), "int32")`; a one-line
    ValueError for an `input_shape` of more than one axis or `num_heads` that does not divide `width`."""
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 1:
        checks.fail("input_shape", input_shape, "(sequence_length,): one axis of token ids")
    if width % num_heads:
        checks.fail("num_heads", num_heads, f"a divisor of width={width}")
    return keras.Input(tuple(input_shape), dtype="int32", name="tokens")


def transformer_block(
    x, index, *, num_heads, mlp_ratio, dropout, pre_norm, norm, norm_kwargs, causal=True, attention_mask=None
):
    """One block: self-attention (causal, or over the keys `attention_mask` [batch, 1, length]
    allows) then an MLP, each in a residual branch, the norm before the branch (pre-LN) or after
    the sum (post-LN, the original Transformer)."""
    width, name = x.shape[-1], f"block{index + 1}"
    attention = keras.layers.MultiHeadAttention(
        num_heads, width // num_heads, dropout=dropout, name=f"{name}_attention"
    )
    mlp = [
        keras.layers.Dense(mlp_ratio * width, activation="gelu", name=f"{name}_mlp_in"),
        keras.layers.Dense(width, name=f"{name}_mlp_out"),
        keras.layers.Dropout(dropout, name=f"{name}_dropout"),
    ]
    for part, branch in (
        ("1", lambda h: attention(h, h, attention_mask=attention_mask, use_causal_mask=causal)),
        ("2", lambda h: mlp[2](mlp[1](mlp[0](h)))),
    ):
        norm_layer = layers.get(norm, name=f"{name}_norm{part}", **norm_kwargs)
        if pre_norm:
            x = keras.layers.Add(name=f"{name}_add{part}")([x, branch(norm_layer(x))])
        else:
            x = norm_layer(keras.layers.Add(name=f"{name}_add{part}")([x, branch(x)]))
    return x


def transformer_lm(
    num_classes=257,
    input_shape=(128,),
    norm="layer",
    norm_kwargs=None,
    num_layers=4,
    width=128,
    num_heads=4,
    mlp_ratio=4,
    pre_norm=True,
    tie_embeddings=True,
    dropout=0.0,
):
    """Token ids [batch, length] -> next-token logits [batch, length, num_classes] (the vocabulary).

    Token and learned position embeddings, `num_layers` blocks of causal self-attention and a
    GELU MLP (`mlp_ratio` x width), a final norm (pre-LN), and a head that is the token
    embedding transposed (`tie_embeddings`) or a Dense layer named "logits".
    """
    inputs = token_input(input_shape, width, num_heads)
    norm_kwargs = dict(norm_kwargs or {})
    embedding = TiedEmbedding(num_classes, width, embeddings_initializer=EMBEDDING_INIT, name="token_embedding")
    x = PositionEmbedding(input_shape[0], name="position_embedding")(embedding(inputs))
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    for index in range(num_layers):
        x = transformer_block(
            x,
            index,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            dropout=dropout,
            pre_norm=pre_norm,
            norm=norm,
            norm_kwargs=norm_kwargs,
        )
    if pre_norm:
        x = layers.get(norm, name="final_norm", **norm_kwargs)(x)
    outputs = embedding(x, reverse=True) if tie_embeddings else keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="transformer_lm")
