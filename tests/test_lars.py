"""LARS (You et al. 2017) against a NumPy transcription of its four steps, against Keras's SGD when
adaptation is off, in `model.fit`, under a 2-replica MirroredStrategy (a custom loop and
kbatch's trainer), and through a `.keras` file."""

import re

import keras
import numpy as np
import pytest
from backend_ops import COMPILE_MODES, apply_gradients

import kbatch
from kbatch.optimizers import DEFAULT_EXCLUDE, LARS
from kbatch.training import train

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX

SHAPES = {  # path -> shape: a conv kernel, a dense kernel, a bias, norm parameters, a scalar
    "conv/kernel": (3, 3, 4, 8),
    "dense_1/kernel": (6, 5),
    "dense_1/bias": (5,),
    "norm/gamma": (8,),
    "norm/beta": (8,),
    "scale/s": (),
    "zeros/kernel": (4, 3),  # w = 0: trust 1 until it moves
    "frozen/kernel": (2, 3),  # g = 0 at every step
}


def make_variables(rng):
    variables = []
    for path, shape in SHAPES.items():
        scope, name = path.split("/")
        value = np.zeros(shape) if scope == "zeros" else rng.normal(size=shape)
        with keras.name_scope(scope):
            variables.append(keras.Variable(value.astype("float32"), name=name))
    return variables


def make_gradients(rng, steps):
    return [
        [
            np.zeros(s, "float32") if p.startswith("frozen") else rng.normal(size=s).astype("float32")
            for p, s in SHAPES.items()
        ]
        for _ in range(steps)
    ]


def excluded(patterns, path):
    """The documented rule: a pattern occurs in, or `re.search` finds it in, the path or a '/'-suffix."""
    parts = path.split("/")
    keys = ["/".join(parts[i:]) for i in range(len(parts))]
    return any(p in key or re.search(p, key) for p in patterns for key in keys)


def reference(
    weights,
    gradients,
    *,
    lr,
    momentum=0.9,
    nesterov=False,
    weight_decay=0.0,
    trust_coefficient=0.001,
    epsilon=0.0,
    decay_exclude=DEFAULT_EXCLUDE,
    adapt_exclude=None,
):
    """The four steps of the issue, in float64, one variable at a time (LARS's default exclusions
    unless told otherwise)."""
    adapt_exclude = decay_exclude if adapt_exclude is None else adapt_exclude
    w = [np.array(x, np.float64) for x in weights]
    v = [np.zeros_like(x) for x in w]
    trust = {}
    for grads in gradients:
        for i, path in enumerate(SHAPES):
            g = np.array(grads[i], np.float64)
            if not excluded(decay_exclude, path):
                g = g + weight_decay * w[i]
            t = 1.0
            w_norm, g_norm = np.linalg.norm(w[i]), np.linalg.norm(g)
            if not excluded(adapt_exclude, path) and w_norm > 0 and g_norm > 0:
                t = trust_coefficient * w_norm / (g_norm + epsilon)
            trust[path] = t
            v[i] = momentum * v[i] + lr * t * g
            w[i] = w[i] - (momentum * v[i] + lr * t * g if nesterov else v[i])
    return w, trust


CASES = {
    "plain": dict(),
    "weight_decay": dict(weight_decay=0.05),
    "no_exclusions": dict(weight_decay=0.05, decay_exclude=()),
    "nesterov": dict(weight_decay=0.05, nesterov=True),
    "exclusions": dict(weight_decay=0.05, decay_exclude=("bias", "^norm/")),
    "separate_adaptation": dict(weight_decay=0.05, decay_exclude=("bias",), adapt_exclude=("gamma", r"dense_\d+/")),
    "epsilon_no_momentum": dict(weight_decay=0.05, epsilon=0.5, momentum=0.0),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", COMPILE_MODES)
def test_lars_follows_the_four_steps(case, mode):
    rng = np.random.default_rng(0)
    variables = make_variables(rng)
    initial = [v.numpy() for v in variables]
    gradients = make_gradients(rng, steps=4)
    settings = dict(lr=2.0, trust_coefficient=0.02, **CASES[case])
    optimizer = LARS(
        learning_rate=settings["lr"],
        momentum=settings.get("momentum", 0.9),
        nesterov=settings.get("nesterov", False),
        weight_decay=settings.get("weight_decay", 0.0),
        trust_coefficient=settings["trust_coefficient"],
        epsilon=settings.get("epsilon", 0.0),
        exclude_from_weight_decay=settings.get("decay_exclude"),
        exclude_from_layer_adaptation=settings.get("adapt_exclude"),
    )
    apply_gradients(optimizer, variables, gradients, mode)

    expected, trust = reference(initial, gradients, **settings)
    for variable, want in zip(variables, expected):
        np.testing.assert_allclose(variable.numpy(), want, rtol=1e-6, atol=1e-6, err_msg=variable.path)
    got = optimizer.trust_ratios()
    assert got.keys() == trust.keys()
    for path in trust:
        np.testing.assert_allclose(got[path], trust[path], rtol=1e-6, err_msg=path)
    # The zero-norm rule: g = 0 at every step gives trust 1, and weights that do not move.
    if not settings.get("weight_decay"):
        assert got["frozen/kernel"] == 1.0
        np.testing.assert_array_equal(variables[-1].numpy(), initial[-1])


def test_zero_weights_take_a_plain_momentum_step_first():
    variable = keras.Variable(np.zeros((3, 2), "float32"), name="kernel")
    gradient = np.arange(6, dtype="float32").reshape(3, 2)
    optimizer = LARS(learning_rate=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.001)
    optimizer.apply([keras.ops.convert_to_tensor(gradient)], [variable])
    # ||w|| = 0: trust 1, so the first step is lr * g; the second is scaled by the trust ratio.
    np.testing.assert_allclose(variable.numpy(), -0.5 * gradient, rtol=1e-7)
    assert optimizer.trust_ratios() == {"kernel": 1.0}
    optimizer.apply([keras.ops.convert_to_tensor(gradient)], [variable])
    assert optimizer.trust_ratios()["kernel"] < 1.0


@pytest.mark.parametrize("nesterov", [False, True])
def test_without_adaptation_lars_is_keras_sgd_with_l2_in_the_gradient(nesterov):
    rng = np.random.default_rng(1)
    lars_vars = make_variables(rng)
    sgd_vars = [keras.Variable(v.numpy(), name=v.name) for v in lars_vars]
    lars = LARS(
        0.3,
        momentum=0.8,
        nesterov=nesterov,
        weight_decay=0.01,
        trust_coefficient=0.02,
        exclude_from_weight_decay=(),
        exclude_from_layer_adaptation=[".*"],
    )
    sgd = keras.optimizers.SGD(0.3, momentum=0.8, nesterov=nesterov)
    for grads in make_gradients(rng, steps=5):
        lars.apply([keras.ops.convert_to_tensor(g) for g in grads], lars_vars)
        sgd.apply([g + 0.01 * v.numpy() for g, v in zip(grads, sgd_vars)], sgd_vars)
    for a, b in zip(lars_vars, sgd_vars):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
    assert set(lars.trust_ratios().values()) == {1.0}


def linear_problem(seed=2, n=32, d=5, k=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = (x @ rng.normal(size=(d, k)) + 0.1 * rng.normal(size=(n, k))).astype("float32")
    return x, y


def test_lars_in_model_fit_matches_the_reference_and_lowers_the_loss():
    x, y = linear_problem()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="dense_1")])
    model.layers[0].bias.assign(np.full(3, 0.5, "float32"))  # nonzero, so adaptation would show
    kernel, bias = model.layers[0].kernel.numpy(), model.layers[0].bias.numpy()
    optimizer = kbatch.optimizers.build("lars", 0.5, weight_decay=0.01, trust_coefficient=0.1)
    model.compile(optimizer=optimizer, loss="mse")
    history = model.fit(x, y, batch_size=len(x), epochs=8, shuffle=False, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]

    # The NumPy reference, fed the closed-form gradients of the mean squared error.
    w, b, v_w, v_b = kernel.astype(np.float64), bias.astype(np.float64), 0.0, 0.0
    for _ in range(8):
        residual = x @ w + b - y
        g_w = 2 * x.T @ residual / residual.size + 0.01 * w  # the kernel: decayed and adapted
        g_b = 2 * residual.sum(0) / residual.size  # the bias: excluded from both by default
        trust = 0.1 * np.linalg.norm(w) / np.linalg.norm(g_w)
        v_w = 0.9 * v_w + 0.5 * trust * g_w
        v_b = 0.9 * v_b + 0.5 * g_b
        w, b = w - v_w, b - v_b
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.layers[0].bias.numpy(), b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(optimizer.trust_ratios()[model.layers[0].kernel.path], trust, rtol=1e-5)


def _train_on(strategy, x, y, steps):
    """A custom loop: each replica's gradient of sum(loss) / global batch, summed by the optimizer."""
    import tensorflow as tf

    with strategy.scope():
        keras.utils.set_random_seed(3)
        model = keras.Sequential(
            [
                keras.Input((5,)),
                keras.layers.Dense(4, activation="tanh", name="hidden"),
                keras.layers.Dense(3, name="out"),
            ],
            name="net",
        )
        optimizer = kbatch.optimizers.build("lars", 0.5, weight_decay=0.01, trust_coefficient=0.05)
        optimizer.build(model.trainable_variables)
    data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x)).repeat())

    def replica_step(batch):
        features, labels = batch
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(features) - labels)) / len(x)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)

    @tf.function
    def step(iterator):
        strategy.run(replica_step, args=(next(iterator),))

    iterator = iter(data)
    for _ in range(steps):
        step(iterator)
    return [v.numpy() for v in model.trainable_variables], optimizer.trust_ratios()


@pytest.mark.tensorflow_only  # a tf.distribute custom loop; the trainer test below runs on both
def test_two_replicas_give_the_one_device_update_at_the_same_global_batch():
    x, y = linear_problem(seed=4, n=16)
    one, one_trust = _train_on(kbatch.distribute.resolve_strategy("one_device"), x, y, steps=4)
    two, two_trust = _train_on(kbatch.distribute.resolve_strategy("cpu:2"), x, y, steps=4)
    for a, b in zip(one, two):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert one_trust.keys() == two_trust.keys()
    for path in one_trust:
        np.testing.assert_allclose(two_trust[path], one_trust[path], rtol=1e-5)
    assert one_trust["net/hidden/kernel"] != 1.0 and one_trust["net/hidden/bias"] == 1.0


def smooth_model(info):
    """Layer norm and tanh: replicas sum in another order (rounding, 1e-7), and without ReLU kinks
    such differences stay at rounding level, so equality can be asserted."""
    inputs = keras.Input(info.input_shape)
    x = keras.layers.Conv1D(16, 5, strides=2, padding="same", name="conv")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.Activation("tanh")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(info.num_classes, name="head")(x))


def test_in_the_trainer_two_replicas_end_with_the_one_device_weights(make_config, monkeypatch):
    built = []  # the optimizer of each run, as the trainer builds it
    build = kbatch.optimizers.build
    monkeypatch.setattr(kbatch.optimizers, "build", lambda *a, **k: built.append(build(*a, **k)) or built[-1])
    runs = [
        make_config(
            num_epochs=1,
            optimizer="lars",
            base_learning_rate=2.0,
            trust_coefficient=0.01,
            weight_decay=1e-3,
            strategy=strategy,
        )
        for strategy in ("one_device", "cpu:2")
    ]
    for config in runs:
        assert train(config, model_fn=smooth_model, verbose=False)["steps"] >= 20
    one, two = (keras.models.load_model(f"{c.model_dir}/model.keras") for c in runs)
    for a, b in zip(one.get_weights(), two.get_weights()):
        np.testing.assert_allclose(b, a, atol=1e-5)
    # The trust ratios come from the all-reduced gradient: the same on one device and two.
    assert [type(o) for o in built] == [LARS, LARS]
    one_trust, two_trust = built[0].trust_ratios(), built[1].trust_ratios()
    assert one_trust.keys() == two_trust.keys()
    for path in one_trust:
        np.testing.assert_allclose(two_trust[path], one_trust[path], rtol=1e-4, err_msg=path)
    assert one_trust["conv/kernel"] != 1.0 and one_trust["head/kernel"] != 1.0
    assert one_trust["norm/gamma"] == one_trust["head/bias"] == 1.0


def test_saved_model_keeps_the_lars_config_and_slots(tmp_path):
    x, y = linear_problem()
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    optimizer = LARS(
        0.2,
        momentum=0.8,
        nesterov=True,
        weight_decay=1e-3,
        trust_coefficient=0.01,
        epsilon=1e-9,
        exclude_from_weight_decay=["bias"],
        exclude_from_layer_adaptation=["bias", "gamma"],
        global_clipnorm=5.0,
    )
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "lars.keras")
    loaded = keras.models.load_model(tmp_path / "lars.keras")
    assert isinstance(loaded.optimizer, LARS)
    assert loaded.optimizer.get_config() == optimizer.get_config()
    assert optimizer.get_config()["exclude_from_layer_adaptation"] == ["bias", "gamma"]
    assert optimizer.get_config()["weight_decay"] == 1e-3
    saved, restored = optimizer.variables, loaded.optimizer.variables
    assert len(restored) == len(saved) == 2 + 2 * 2  # iteration, lr; momentum and trust per variable
    for a, b in zip(saved, restored):
        np.testing.assert_array_equal(b.numpy(), a.numpy())
    assert int(loaded.optimizer.iterations.numpy()) == 4
    # It trains on after loading exactly as the original does (on the same batches: fit's own
    # shuffle is not seeded on JAX).
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-6)


def test_a_subclass_can_change_the_trust_ratio():
    class ClippedLARS(LARS):
        def _trust_ratio(self, variable, gradient):
            return keras.ops.minimum(super()._trust_ratio(variable, gradient), 0.5)

    variable = keras.Variable(np.ones(4, "float32"), name="kernel")
    optimizer = ClippedLARS(1.0, momentum=0.0, trust_coefficient=10.0)
    optimizer.apply([keras.ops.ones(4)], [variable])
    # Unclipped, trust = 10 * 2 / 2 = 10; the subclass caps it at 0.5.
    np.testing.assert_allclose(variable.numpy(), np.full(4, 0.5))
    assert ClippedLARS.from_config(optimizer.get_config()).trust_coefficient == 10.0


@pytest.mark.parametrize(
    "argument, value, message",
    [
        ("learning_rate", -0.1, "learning_rate=-0.1: must be a finite number >= 0"),
        ("learning_rate", float("nan"), "learning_rate=nan: must be a finite number >= 0"),
        ("learning_rate", float("inf"), "learning_rate=inf: must be a finite number >= 0"),
        ("momentum", 1.0, r"momentum=1.0: must be a finite number in \[0, 1\)"),
        ("momentum", -0.1, r"momentum=-0.1: must be a finite number in \[0, 1\)"),
        ("momentum", float("nan"), r"momentum=nan: must be a finite number in \[0, 1\)"),
        ("trust_coefficient", -1e-3, "trust_coefficient=-0.001: must be a finite number >= 0"),
        ("weight_decay", -1e-4, "weight_decay=-0.0001: must be a finite number >= 0"),
        ("epsilon", -1.0, "epsilon=-1.0: must be a finite number >= 0"),
        ("nesterov", "yes", "nesterov='yes': must be True or False"),
        (
            "exclude_from_weight_decay",
            ["bias", "norm(["],
            r"exclude_from_weight_decay=\['bias', 'norm\(\['\]: must be valid regular expressions; 'norm\(\[' is not",
        ),
        ("exclude_from_layer_adaptation", ["[gamma"], r"exclude_from_layer_adaptation=\['\[gamma'\]: must be valid"),
        ("exclude_from_weight_decay", [3], r"exclude_from_weight_decay=\[3\]: must be a list of .*3 \(int\) is not"),
    ],
)
def test_bad_arguments_are_refused_with_the_argument_named(argument, value, message):
    with pytest.raises(ValueError, match=message):
        LARS(**{argument: value})


@pytest.mark.parametrize("learning_rate", [0.0, 3, keras.optimizers.schedules.CosineDecay(0.1, 100), lambda: 0.1])
def test_a_finite_rate_a_schedule_or_a_callable_is_accepted(learning_rate):
    optimizer = LARS(learning_rate)
    variable = keras.Variable(np.ones(2, "float32"), name="kernel")
    optimizer.apply([keras.ops.ones(2)], [variable])
    assert np.isfinite(variable.numpy()).all()


def test_trust_ratio_stats_summarize_the_adapted_variables_only():
    rng = np.random.default_rng(5)
    variables = make_variables(rng)
    optimizer = LARS(1.0, weight_decay=0.05, trust_coefficient=0.02, exclude_from_weight_decay=["bias", "^norm/"])
    apply_gradients(optimizer, variables, make_gradients(rng, steps=2), "eager")
    ratios = optimizer.trust_ratios()
    adapted = [ratios[p] for p in SHAPES if not excluded(["bias", "^norm/"], p)]
    assert len(adapted) == len(SHAPES) - 3
    assert optimizer.trust_ratio_stats() == pytest.approx(
        {"min": np.min(adapted), "median": np.median(adapted), "max": np.max(adapted)}, rel=1e-7
    )
    nothing = LARS(1.0, exclude_from_layer_adaptation=[".*"])
    apply_gradients(nothing, variables, make_gradients(rng, steps=1), "eager")
    assert nothing.trust_ratio_stats() == {}
