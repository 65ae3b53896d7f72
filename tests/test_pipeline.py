"""Input pipelines: per-replica batches under cpu:2, the same global batches on every strategy,
and the CIFAR-10 path on TFDS mock data."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import kbatch
from kbatch import data

pytestmark = pytest.mark.fast


def _global_batches(strategy, global_batch, steps, seed=7):
    dataset = data.distribute(strategy, data.train_dataset_fn("mnist1d/original", global_batch, seed))
    iterator = iter(dataset)
    batches = []
    for _ in range(steps):
        x, y = next(iterator)
        xs = [t.numpy() for t in strategy.experimental_local_results(x)]
        ys = [t.numpy() for t in strategy.experimental_local_results(y)]
        batches.append((xs, ys))
    return batches


def test_per_replica_batch_under_cpu2_is_half_the_global_batch_with_static_shape():
    strategy = kbatch.distribute.resolve_strategy("cpu:2")
    for xs, ys in _global_batches(strategy, 64, 3):
        assert [x.shape for x in xs] == [(32, 40, 1), (32, 40, 1)]
        assert [y.shape for y in ys] == [(32,), (32,)]
    dataset = data.distribute(strategy, data.train_dataset_fn("mnist1d/original", 64, 7))
    # drop_remainder: every replica's batch has a static shape, as TPUs need.
    assert [spec.shape.as_list() for spec in dataset.element_spec[0]._value_specs] == [[32, 40, 1]] * 2


def test_global_batch_t_holds_the_same_examples_under_one_device_and_cpu2():
    one = _global_batches(kbatch.distribute.resolve_strategy("one_device"), 64, 70)  # past one epoch
    two = _global_batches(kbatch.distribute.resolve_strategy("cpu:2"), 64, 70)
    for (x1, y1), (x2, y2) in zip(one, two):
        np.testing.assert_array_equal(x1[0], np.concatenate(x2))
        np.testing.assert_array_equal(y1[0], np.concatenate(y2))


def test_every_training_example_is_seen_once_per_epoch():
    strategy = kbatch.distribute.resolve_strategy("one_device")
    steps = 4000 // 100
    labels = np.concatenate([ys[0] for _, ys in _global_batches(strategy, 100, steps)])
    split = tfds.load("mnist1d/original", split="train", as_supervised=True)
    reference = np.array([y for _, y in tfds.as_numpy(split)])
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.bincount(reference, minlength=10))


def test_eval_pipeline_passes_every_test_example_exactly_once_under_cpu2():
    strategy = kbatch.distribute.resolve_strategy("cpu:2")
    dataset = data.distribute(strategy, data.eval_dataset_fn("mnist1d/original", 96))  # 1000 % 96 != 0
    labels, weights = [], []
    for _, y, w in dataset:
        labels.extend(np.concatenate([t.numpy() for t in strategy.experimental_local_results(y)]))
        weights.extend(np.concatenate([t.numpy() for t in strategy.experimental_local_results(w)]))
    reference = [y for _, y in tfds.as_numpy(tfds.load("mnist1d/original", split="test", as_supervised=True))]
    # Padded with weight-0 examples to 11 full global batches; the weighted labels are the split's.
    assert len(labels) == 11 * 96 and sorted(set(weights)) == [0.0, 1.0] and sum(weights) == 1000
    counted = np.bincount(labels, weights=weights, minlength=10)
    np.testing.assert_array_equal(counted, np.bincount(reference, minlength=10))


def test_cifar10_pipeline_augments_with_pad_crop_flip_on_mock_data():
    strategy = kbatch.distribute.resolve_strategy("cpu:2")
    with tfds.testing.mock_data(num_examples=64):
        info = data.describe("cifar10")
        assert info.input_shape == (32, 32, 3) and info.num_classes == 10
        dataset = data.distribute(strategy, data.train_dataset_fn("cifar10", 32, seed=1))
        x, y = next(iter(dataset))
        local = strategy.experimental_local_results(x)
        assert [t.shape.as_list() for t in local] == [[16, 32, 32, 3]] * 2
        assert all(t.dtype == tf.float32 for t in local)
        # The crop takes a 32x32 window of the zero-padded 40x40 image: standardized zeros appear
        # at the borders of shifted images, which the un-augmented eval images never have.
        eval_x, _, _ = next(iter(data.distribute(strategy, data.eval_dataset_fn("cifar10", 32))))
        padded_value = (0.0 - np.array(kbatch.data.preprocessing.CIFAR_MEAN)) / kbatch.data.preprocessing.CIFAR_STD
        train = np.concatenate([t.numpy() for t in local])
        plain = np.concatenate([t.numpy() for t in strategy.experimental_local_results(eval_x)])

        def has_padding(images):
            return np.isclose(images, padded_value, atol=1e-5).all(-1).any()

        assert has_padding(train) and not has_padding(plain)


def _table_batches(name, global_batch, steps, seed):
    table = next(iter(data.train_table_fn(name)()))
    return [
        [
            t.numpy()
            for t in data.train_examples_at(
                name, table, tf.range(t * global_batch, (t + 1) * global_batch, dtype=tf.int64), seed
            )
        ]
        for t in range(steps)
    ]


def _stream_batches(name, global_batch, steps, seed):
    strategy = kbatch.distribute.resolve_strategy("one_device")
    iterator = iter(data.distribute(strategy, data.train_dataset_fn(name, global_batch, seed)))
    return [[t.numpy() for t in next(iterator)] for _ in range(steps)]


def test_batches_read_by_position_from_the_table_are_the_streams_batches():
    # 4000 training examples: batch 24 of 96 is split across the first two epochs.
    table = _table_batches("mnist1d/original", 96, 45, seed=3)
    stream = _stream_batches("mnist1d/original", 96, 45, seed=3)
    for (x1, y1), (x2, y2) in zip(table, stream):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_table_batches_carry_the_streams_cifar_augmentation_on_mock_data():
    with tfds.testing.mock_data(num_examples=40):
        table, stream = _table_batches("cifar10", 16, 4, seed=5), _stream_batches("cifar10", 16, 4, seed=5)
    for (x1, y1), (x2, y2) in zip(table, stream):
        np.testing.assert_allclose(x1, x2, atol=1e-6)
        np.testing.assert_array_equal(y1, y2)


def test_unknown_dataset_names_the_field_and_the_choices():
    with pytest.raises(ValueError, match="Unknown dataset 'svhn'.*mnist1d"):
        data.dataset_family("svhn")
