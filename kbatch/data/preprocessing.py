"""Per-example preprocessing of the built-in data sets, by the name `kbatch.data.facts` gives each:
scaling, and augmentation for training.

Training augmentation uses stateless random ops seeded by (run seed, example number), so the
same example gets the same augmentation under every strategy and after a resume.
"""

import tensorflow as tf

from kbatch.data.facts import FACTS
from kbatch.data.names import CIFAR_MEAN, CIFAR_STD

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_SIZE = 224


def input_shape(family):
    """One example of data set `family` as the model reads it (ImageNet's: the crop, `IMAGENET_SIZE`;
    None: as stored, as for token sequences)."""
    if FACTS[family].preprocessing == "imagenet":
        return (IMAGENET_SIZE, IMAGENET_SIZE, 3)
    return FACTS[family].input_shape


def _standardize(image, mean, std):
    return (tf.cast(image, tf.float32) / 255.0 - mean) / std


def _imagenet_eval(image):
    image = tf.image.resize(image, (256, 256))
    image = tf.image.central_crop(image, IMAGENET_SIZE / 256)
    return (image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def eval_fn(family):
    """`(x, label) -> (x, label)` for evaluation: scaling only ("none": as stored)."""

    kind = FACTS[family].preprocessing

    def preprocess(x, label):
        if kind == "none":
            return x, label
        if kind == "channel":
            x = tf.expand_dims(x, -1)
        elif kind == "unit":
            x = tf.cast(x, tf.float32) / 255.0
        elif kind == "cifar":
            x = _standardize(x, CIFAR_MEAN, CIFAR_STD)
        else:
            x = _imagenet_eval(x)
        return x, label

    return preprocess


def train_fn(family, seed):
    """`(index, (x, label)) -> (x, label)` for training: CIFAR gets pad-4 crop and flip
    (He et al. 2016), ImageNet a random crop and flip, the others no augmentation."""
    plain, kind = eval_fn(family), FACTS[family].preprocessing

    def preprocess(index, example):
        x, label = example
        example_seed = tf.stack([tf.cast(seed, tf.int64), index])
        if kind == "cifar":
            x = tf.image.resize_with_crop_or_pad(x, 40, 40)
            x = tf.image.stateless_random_crop(x, (32, 32, 3), seed=example_seed)
            x = tf.image.stateless_random_flip_left_right(x, seed=example_seed + 1)
            return _standardize(x, CIFAR_MEAN, CIFAR_STD), label
        if kind == "imagenet":
            x = tf.image.resize(x, (256, 256))
            x = tf.image.stateless_random_crop(x, (IMAGENET_SIZE, IMAGENET_SIZE, 3), seed=example_seed)
            x = tf.image.stateless_random_flip_left_right(x, seed=example_seed + 1)
            return (x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD, label
        return plain(x, label)

    return preprocess
