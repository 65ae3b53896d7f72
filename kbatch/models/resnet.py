"""ResNets with the normalization layer chosen by name.

`cifar_resnet(depth)` is the CIFAR ResNet of He et al. 2016 (section 4.2: 6n+2 layers, 16/32/64
channels, basic blocks; projection shortcuts where the shape changes). `resnet50` is the
ImageNet bottleneck ResNet-50 (He et al. 2016, table 1), the model of the large-batch
ImageNet results (Goyal et al. 2017; You et al. 2017; MLPerf).
"""

import keras

from kbatch import checks, layers
from kbatch.layers import registry


def _conv(filters, kernel, stride, name):
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def _basic_block(x, filters, stride, norm, norm_kwargs, name):
    shortcut = x
    y = _conv(filters, 3, stride, f"{name}_conv1")(x)
    y = layers.get(norm, name=f"{name}_norm1", **norm_kwargs)(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(filters, 3, 1, f"{name}_conv2")(y)
    y = layers.get(norm, name=f"{name}_norm2", **norm_kwargs)(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, stride, f"{name}_proj")(x)
        shortcut = layers.get(norm, name=f"{name}_proj_norm", **norm_kwargs)(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def cifar_resnet(depth=20, num_classes=10, input_shape=(32, 32, 3), norm="batch", norm_kwargs=None):
    """CIFAR ResNet-`depth` (depth = 6n + 2: 20, 32, 44, 56, 110)."""
    if (depth - 2) % 6:
        checks.fail("depth", depth, "6n + 2 (20, 32, 44, 56, 110)")
    norm_kwargs = dict(norm_kwargs or {})
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape)
    x = _conv(16, 3, 1, "stem_conv")(inputs)
    x = layers.get(norm, name="stem_norm", **norm_kwargs)(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, norm, norm_kwargs, f"stage{stage + 1}_block{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"cifar_resnet{depth}")


def _bottleneck(x, filters, stride, norm, norm_kwargs, name):
    shortcut = x
    y = _conv(filters, 1, 1, f"{name}_conv1")(x)
    y = layers.get(norm, name=f"{name}_norm1", **norm_kwargs)(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(filters, 3, stride, f"{name}_conv2")(y)
    y = layers.get(norm, name=f"{name}_norm2", **norm_kwargs)(y)
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    y = _conv(4 * filters, 1, 1, f"{name}_conv3")(y)
    # Zero-initialized last gamma (Goyal et al. 2017, section 5.1): each block starts as identity.
    last_norm_kwargs = dict(norm_kwargs)
    if registry.facts(norm).gamma:
        last_norm_kwargs["gamma_initializer"] = "zeros"
    y = layers.get(norm, name=f"{name}_norm3", **last_norm_kwargs)(y)
    if stride != 1 or x.shape[-1] != 4 * filters:
        shortcut = _conv(4 * filters, 1, stride, f"{name}_proj")(x)
        shortcut = layers.get(norm, name=f"{name}_proj_norm", **norm_kwargs)(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet50(num_classes=1000, input_shape=(224, 224, 3), norm="batch", norm_kwargs=None):
    """ImageNet ResNet-50 v1.5 (stride in the 3x3 convolution, as in the MLPerf reference)."""
    norm_kwargs = dict(norm_kwargs or {})
    inputs = keras.Input(input_shape)
    x = _conv(64, 7, 2, "stem_conv")(inputs)
    x = layers.get(norm, name="stem_norm", **norm_kwargs)(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, (filters, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _bottleneck(x, filters, stride, norm, norm_kwargs, f"stage{stage + 1}_block{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), name="logits"
    )(x)
    return keras.Model(inputs, outputs, name="resnet50")
