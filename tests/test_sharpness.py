"""kbatch.diagnostics.sharpness: the top Hessian eigenvalue by power iteration on Hessian-vector
products, against closed forms: a least-squares quadratic (H = 2 X^T X / n) to 1%, and a small
MLP's Hessian formed densely (a Jacobian of the gradient, or jax.hessian) to 5%. Runs under both
Keras backends (`components`: CI runs it on JAX too)."""

import keras
import numpy as np
import pytest
from backend_ops import dense_hessian

from kbatch.diagnostics import sharpness

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX


def test_a_least_squares_quadratic():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(64, 6)) * np.array([3.0, 2.0, 1.0, 0.5, 0.3, 0.1])).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, use_bias=False)])
    exact = np.linalg.eigvalsh(2.0 * x.T.astype(np.float64) @ x / len(x)).max()
    got = sharpness(model, keras.losses.MeanSquaredError(), (x, y), iterations=200, tolerance=1e-7)
    assert got == pytest.approx(exact, rel=0.01)


def test_a_small_mlp_against_its_dense_hessian():
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.integers(0, 3, 32).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(3)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    eigenvalues = np.linalg.eigvalsh(dense_hessian(model, loss, x, y))
    exact = eigenvalues[np.argmax(np.abs(eigenvalues))]
    weights = [w.copy() for w in model.get_weights()]
    got = sharpness(model, loss, (x, y), iterations=300, tolerance=1e-7)
    assert got == pytest.approx(exact, rel=0.05)
    for before, after in zip(weights, model.get_weights()):  # measuring leaves the model as it was
        np.testing.assert_array_equal(before, after)


def test_moving_statistics_are_left_alone_and_bad_arguments_are_one_line():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
    )
    x, y = np.random.default_rng(2).normal(size=(2, 16, 3)).astype("float32")
    moving = [v.numpy() if hasattr(v, "numpy") else np.asarray(v) for v in model.non_trainable_variables]
    sharpness(model, keras.losses.MeanSquaredError(), (x, y[:, :1]), iterations=3)
    for before, variable in zip(moving, model.non_trainable_variables):
        np.testing.assert_array_equal(before, np.asarray(variable.value))
    with pytest.raises(ValueError, match=r"^iterations=0: must be a positive integer\.$"):
        sharpness(model, keras.losses.MeanSquaredError(), (x, y[:, :1]), iterations=0)


def test_the_trainer_measures_at_every_second_evaluation_on_the_evaluation_split(make_config):
    from smooth_model import linear_model

    from kbatch.data import numpy_source
    from kbatch.training import train

    config = make_config(sharpness_every=2, num_epochs=4)
    result = train(config, model_fn=linear_model, verbose=False)
    points = result["sharpness"]
    assert [p["step"] for p in points] == [e["step"] for e in result["history"]][1::2]
    # The last one is at the end: the saved model's sharpness on the test split's first 1,000 examples.
    _, _, x_test, y_test = numpy_source._arrays("mnist1d/original")
    model = keras.models.load_model(f"{config.model_dir}/model.keras")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert points[-1]["sharpness"] == pytest.approx(sharpness(model, loss, (x_test[:1024], y_test[:1024])), rel=1e-3)
    last_lr = result["history"][-1]["learning_rate"]
    assert points[-1]["lr_times_sharpness"] == pytest.approx(last_lr * points[-1]["sharpness"], rel=1e-9)
    assert points[-1]["stability_bound"] == pytest.approx(2 + 2 * config.momentum)


def test_a_warning_line_when_lr_times_sharpness_crosses_the_bound(make_config, monkeypatch, capsys):
    from smooth_model import linear_model

    from kbatch.diagnostics import hessian
    from kbatch.training import train

    config = make_config(sharpness_every=1, num_epochs=3, base_learning_rate=0.1, momentum=0.9)
    values = iter([1.0, 1000.0, 2000.0])  # lr x lambda: below the bound 3.8, then past it (one warning)
    monkeypatch.setattr(hessian, "top_eigenvalue", lambda *args, **kwargs: next(values))
    result = train(config, model_fn=linear_model, verbose=True)
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("kbatch: warning")]
    step = result["sharpness"][1]["step"]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"kbatch: warning: lr x sharpness = {result['sharpness'][1]['lr_times_sharpness']:.3g} at step {step} "
        "is past the stability bound 3.8 (2 + 2 x momentum; Cohen et al. 2021)"
    )
