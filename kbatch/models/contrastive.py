"""SimCLR's model (Chen et al. 2020): an encoder f and a projection head g over two views of each
example. The contrastive loss is computed on z = g(f(x)); the representation kept for downstream
use (the linear probe) is h = f(x), before the head (SimCLR, section 4.2: h is the better one)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kbatch")
class ContrastiveModel(keras.Model):
    """Inputs [n, 2, ...] (two views of each example) to projections [n, 2, dim]. Both views go
    through the encoder as one batch of 2n, so batch statistics are over every view of the batch,
    as in SimCLR; `represent(x)` is the encoder alone, on examples [n, ...]."""

    def __init__(self, encoder, head, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.head = encoder, head
        if not head.built:  # its weights exist before the optimizer is built over the model's
            head.build(encoder.output.shape)
        self.built = True

    def call(self, views, training=False):
        if views.shape[1] != 2:
            raise ValueError(f"ContrastiveModel: inputs must be [n, 2, ...], two views of each example: {views.shape}.")
        both = ops.concatenate([views[:, 0], views[:, 1]], axis=0)  # [2n, ...]: first views, then second
        z = self.head(self.encoder(both, training=training), training=training)
        return ops.transpose(ops.reshape(z, (2, -1, z.shape[-1])), (1, 0, 2))

    def represent(self, x, training=False):
        """h = f(x), the representation of examples [n, ...]."""
        return self.encoder(x, training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "head": keras.saving.serialize_keras_object(self.head),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        head = keras.saving.deserialize_keras_object(config.pop("head"))
        return cls(encoder, head, **config)


def projection_head(dims, name="projection_head"):
    """SimCLR's g: Dense layers of `dims` units, ReLU between them, the last one linear."""
    layers = [keras.layers.Dense(units, activation="relu") for units in dims[:-1]]
    return keras.Sequential([*layers, keras.layers.Dense(dims[-1])], name=name)


def contrastive_model(base, projection_dims=(128, 64)):
    """A `ContrastiveModel` of `base` (a functional classifier: its last layer is dropped, the
    layer before gives the representation) and a projection head of `projection_dims`."""
    encoder = keras.Model(base.input, base.layers[-2].output, name=f"{base.name}_encoder")
    return ContrastiveModel(encoder, projection_head(projection_dims), name=f"{base.name}_contrastive")
