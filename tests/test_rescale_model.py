"""#32.6: `kbatch.scaling.rescale_model` moves a compiled model's recipe to another batch, as
`kbatch.scaling.rescale` computes it from the recipe written by hand; a second call moves
nothing twice; the next `fit` runs with the new values, as Keras's own optimizer and
BatchNormalization built with them do."""

import keras
import numpy as np
import pytest

from kbatch import layers, scaling

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX

BASE, BIG = 128, 1024


def _model(momentum=0.99, norm=None):
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, kernel_initializer=keras.initializers.Constant(np.linspace(-1, 1, 48).reshape(6, 8))),
            norm or keras.layers.BatchNormalization(momentum=momentum),
            keras.layers.Dense(3, kernel_initializer="ones"),
        ]
    )


def _adamw(**kwargs):
    return keras.optimizers.AdamW(1e-3, weight_decay=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs)


ADAM_RECIPE = scaling.Recipe(
    batch_size=BASE,
    learning_rate=1e-3,
    num_epochs=1,
    weight_decay=0.01,
    adaptive=True,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-7,
    ema_momentum=0.99,
    bn_momentum=0.99,
)


def test_an_adam_recipe_moves_as_rescale_computes_it():
    model = _model()
    model.compile(_adamw(use_ema=True, ema_momentum=0.99), "mse")
    report = scaling.rescale_model(model, BASE, BIG)
    want = scaling.rescale(ADAM_RECIPE, BIG)  # the square-root rule, Adam's default
    got = model.optimizer
    for name in ("beta_1", "beta_2", "epsilon", "weight_decay", "ema_momentum"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-9), name
    assert float(got.learning_rate) == pytest.approx(want.learning_rate, rel=1e-6)
    assert model.layers[1].momentum == pytest.approx(want.bn_momentum, rel=1e-12)
    assert round(got.beta_1, 2) == 0.43  # 0.9**8: what docs/keras_fit.md shows
    assert "beta_1: 0.9 -> 0.4305" in str(report).splitlines()
    assert report.after.learning_rate == pytest.approx(want.learning_rate, rel=1e-6)


@pytest.mark.parametrize("rule", ["linear", "sqrt"])
def test_sgd_keeps_its_momentum_and_moves_its_rate_by_the_rule(rule):
    model = _model(momentum=0.9, norm=layers.SwitchableNormalization(momentum=0.9, modes=("batch", "layer")))
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=5e-4), "mse")
    scaling.rescale_model(model, BASE, BIG, rule=rule)
    want = scaling.rescale(
        scaling.Recipe(
            batch_size=BASE, learning_rate=0.05, num_epochs=1, momentum=0.9, weight_decay=5e-4, bn_momentum=0.9
        ),
        BIG,
        rule=rule,
    )
    assert model.optimizer.momentum == 0.9
    assert float(model.optimizer.learning_rate) == pytest.approx(want.learning_rate, rel=1e-6)
    assert model.optimizer.weight_decay == pytest.approx(want.weight_decay, rel=1e-9)
    assert model.layers[1].momentum == pytest.approx(0.9**8, rel=1e-12)


def test_a_second_call_moves_nothing_twice():
    model = _model(norm=layers.GhostBatchNormalization(4, momentum=0.99))
    model.compile(_adamw(), "mse")
    scaling.rescale_model(model, BASE, BIG)
    once = (model.optimizer.beta_1, model.layers[1].momentum)
    assert str(scaling.rescale_model(model, BASE, BIG)).startswith("nothing to change")
    assert (model.optimizer.beta_1, model.layers[1].momentum) == once
    scaling.rescale_model(model, BASE, 2 * BIG)  # from the batch it records, 1024, not from 128 again
    want = scaling.rescale(ADAM_RECIPE, 2 * BIG)
    assert model.optimizer.beta_1 == pytest.approx(want.beta_1, rel=1e-9)
    assert model.layers[1].momentum == pytest.approx(want.bn_momentum, rel=1e-9)


def _batch(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(16, 6)).astype("float32"), rng.normal(size=(16, 3)).astype("float32")


def test_a_fit_after_rescale_model_runs_the_new_recipe():
    """A fit, rescale_model, a fit: the second step equals Keras's own AdamW and
    BatchNormalization built at the rescaled values, from the same weights and optimizer state."""
    moved = _model()
    moved.compile(_adamw(), "mse")
    moved.fit(*_batch(0), batch_size=16, epochs=1, verbose=0, shuffle=False)  # traced at the base recipe
    want = scaling.rescale(ADAM_RECIPE, BIG)
    scaling.rescale_model(moved, BASE, BIG)
    reference = _model(momentum=want.bn_momentum)
    reference.compile(
        keras.optimizers.AdamW(
            want.learning_rate,
            weight_decay=want.weight_decay,
            beta_1=want.beta_1,
            beta_2=want.beta_2,
            epsilon=want.epsilon,
        ),
        "mse",
    )
    reference.set_weights(moved.get_weights())
    reference.optimizer.build(reference.trainable_variables)
    for mine, theirs in zip(moved.optimizer.variables, reference.optimizer.variables):
        if "learning_rate" not in mine.path:
            theirs.assign(keras.ops.convert_to_numpy(mine))  # a copy: JAX donates the buffers it steps
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in moved.layers[0].weights)
    moving_mean = keras.ops.convert_to_numpy(moved.layers[1].moving_mean)
    for model in (moved, reference):
        model.fit(*_batch(1), batch_size=16, epochs=1, verbose=0, shuffle=False)
    for mine, theirs in zip(moved.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-7)
    batch_mean = (_batch(1)[0] @ kernel + bias).mean(axis=0)  # BN's moving mean, by its formula
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(moved.layers[1].moving_mean),
        want.bn_momentum * moving_mean + (1 - want.bn_momentum) * batch_mean,
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "optimizer, message",
    [
        (
            keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.1, 100)),
            r"^optimizer.learning_rate is a CosineDecay: a schedule counts steps, and an epoch at batch 1024 is "
            r"another number of steps, so rescale_model moves a float rate only: .*after.learning_rate\)\.$",
        ),
        (
            keras.optimizers.RMSprop(),
            r"^optimizer='RMSprop': must be SGD, LARS, Adam, AdamW or Lamb \(the optimizers whose recipe "
            r"kbatch.scaling.rescale moves\)\.$",
        ),
    ],
)
def test_what_it_cannot_move_is_one_line_and_nothing_moves(optimizer, message):
    model = _model()
    model.compile(optimizer, "mse")
    with pytest.raises(ValueError, match=message):
        scaling.rescale_model(model, BASE, BIG)
    assert model.layers[1].momentum == 0.99
