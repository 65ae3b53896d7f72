"""The linear probe: logistic regression on frozen features, read on held-out features."""

import numpy as np
import pytest

from kbatch.diagnostics import linear_probe

pytestmark = pytest.mark.fast


def _blobs(n, classes=4, features=8, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(size=(classes, features)) * 2
    y = rng.integers(0, classes, n)
    return centers[y] + spread * rng.normal(size=(n, features)), y


def test_separable_classes_are_all_found_and_random_labels_are_not():
    h, y = _blobs(400)
    h_eval, y_eval = _blobs(200, seed=1)
    assert linear_probe.probe_accuracy(h, y, h_eval, y_eval, 4) == 1.0
    shuffled = np.random.default_rng(2).permutation(y)  # labels that say nothing about the features
    assert linear_probe.probe_accuracy(h, shuffled, h_eval, y_eval, 4) < 0.45  # chance: 0.25


def test_the_fit_is_the_regularized_cross_entropys_minimum():
    h, y = _blobs(300, spread=2.0)  # overlapping classes: a finite optimum
    weights, mean, scale = linear_probe.fit_linear_probe(h, y, 4, steps=3000, l2=1e-2)
    features = np.concatenate([(h - mean) / scale, np.ones((len(h), 1))], axis=1)

    def objective(w):
        logits = features @ w
        log_normalizer = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        return np.mean(log_normalizer - logits[np.arange(len(y)), y]) + 0.5e-2 * np.sum(w * w)

    rng = np.random.default_rng(3)
    best = objective(weights)
    assert all(objective(weights + 1e-2 * rng.normal(size=weights.shape)) > best for _ in range(20))
