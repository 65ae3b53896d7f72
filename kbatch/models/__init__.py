"""Model builders with a pluggable normalization layer (the config field `norm`).

A user's own model plugs in where these do: the trainer takes any `keras.Model` that maps a
batch of inputs to logits.
"""

from kbatch import checks
from kbatch.models.contrastive import ContrastiveModel, contrastive_model, projection_head
from kbatch.models.mnist1d_cnn import mnist1d_cnn
from kbatch.models.resnet import cifar_resnet, resnet50
from kbatch.models.text_classifier import text_classifier
from kbatch.models.transformer_lm import transformer_lm

NAMES = ("mnist1d_cnn", "resnet20", "resnet32", "resnet56", "resnet50", "transformer_lm", "text_classifier")
# The models whose outputs are a prediction per input position (a language model's next tokens).
SEQUENCE_MODELS = ("transformer_lm",)


def get(name, *, num_classes, input_shape, norm="batch", norm_kwargs=None, vocabulary_size=20000, **sizes):
    """A new model by name (one of `kbatch.models.NAMES`); `norm` is a `kbatch.layers.get` name
    and `norm_kwargs` its arguments (BN momentum, groups, virtual batch size). For
    "transformer_lm", `num_classes` is the vocabulary, `input_shape` (sequence_length,), and
    `sizes` any of its `num_layers`, `width`, `num_heads`; for "text_classifier", `input_shape` is
    (sequence_length,) and `vocabulary_size` its embedding's rows."""
    checks.choice("model", name, NAMES)
    kwargs = dict(num_classes=num_classes, input_shape=tuple(input_shape), norm=norm, norm_kwargs=norm_kwargs)
    if name == "transformer_lm":
        return transformer_lm(**kwargs, **sizes)
    if sizes:
        raise TypeError(f"model {name!r} takes no size arguments ({', '.join(sizes)}): only transformer_lm does.")
    if name == "mnist1d_cnn":
        return mnist1d_cnn(**kwargs)
    if name == "text_classifier":
        return text_classifier(**kwargs, vocabulary_size=vocabulary_size)
    if name in ("resnet20", "resnet32", "resnet56"):
        return cifar_resnet(int(name[len("resnet") :]), **kwargs)
    return resnet50(**kwargs)
