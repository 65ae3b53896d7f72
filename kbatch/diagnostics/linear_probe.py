"""The linear probe of a learned representation (Kolesnikov et al. 2019; SimCLR's evaluation,
Chen et al. 2020, section 4.2): a multinomial logistic regression trained on the frozen features
h of labelled training examples, its accuracy read on the evaluation examples' features.

The features are standardized with the training features' mean and deviation, and the regression
is fitted by full-batch gradient descent on the mean cross-entropy plus a small L2 term: a convex
problem, so the result depends on the data only, not on an initialization or batch order.
"""

import numpy as np


def fit_linear_probe(h_train, y_train, num_classes, steps=500, learning_rate=0.5, l2=1e-4):
    """(weights [features + 1, classes], mean, scale): the probe fitted on `h_train` [n, features]
    and integer labels `y_train` [n]."""
    mean, scale = h_train.mean(axis=0), h_train.std(axis=0) + 1e-6
    features = _with_bias((h_train - mean) / scale)
    targets = np.eye(num_classes)[np.asarray(y_train, int)]
    weights = np.zeros((features.shape[1], num_classes))
    for _ in range(steps):
        probabilities = _softmax(features @ weights)
        gradient = features.T @ (probabilities - targets) / len(features) + l2 * weights
        weights -= learning_rate * gradient
    return weights, mean, scale


def probe_accuracy(h_train, y_train, h_eval, y_eval, num_classes, **fit_options):
    """The fraction of `h_eval` whose class the probe fitted on (`h_train`, `y_train`) gets right."""
    weights, mean, scale = fit_linear_probe(h_train, y_train, num_classes, **fit_options)
    predicted = np.argmax(_with_bias((h_eval - mean) / scale) @ weights, axis=1)
    return float(np.mean(predicted == np.asarray(y_eval)))


def _with_bias(features):
    return np.concatenate([features, np.ones((len(features), 1))], axis=1)


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
