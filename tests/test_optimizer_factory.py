"""The optimizer factory: every name, config fields and overrides, the default exclusions (biases
and every normalization layer's parameters keep their values under weight decay), path-aware
exclusions where Keras's own name matching silently decays, and clear errors."""

import keras
import ml_collections
import numpy as np
import pytest

import kbatch
from kbatch import optimizers

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX

LR, WD, TC = 0.1, 0.05, 0.01


def test_each_name_builds_its_optimizer_with_the_settings():
    expected = {
        "sgd": (keras.optimizers.SGD, dict(momentum=0.0, nesterov=False)),
        "momentum": (keras.optimizers.SGD, dict(momentum=0.8, nesterov=False)),
        "nesterov": (keras.optimizers.SGD, dict(momentum=0.8, nesterov=True)),
        "lars": (optimizers.LARS, dict(momentum=0.8, nesterov=False, trust_coefficient=0.002)),
        "lamb": (keras.optimizers.Lamb, dict(beta_1=0.85, beta_2=0.99)),
        "adamw": (keras.optimizers.AdamW, dict(beta_1=0.85, beta_2=0.99)),
        "adam": (keras.optimizers.Adam, dict(beta_1=0.85, beta_2=0.99)),
    }
    assert set(expected) == set(optimizers.NAMES)
    for name, (cls, settings) in expected.items():
        optimizer = optimizers.build(
            name, 0.3, momentum=0.8, weight_decay=1e-4, trust_coefficient=0.002, beta_1=0.85, beta_2=0.99
        )
        assert type(optimizer) is cls, name
        config = optimizer.get_config()
        assert config["learning_rate"] == pytest.approx(0.3)
        assert config["weight_decay"] == pytest.approx(1e-4)
        for key, value in settings.items():
            assert config[key] == pytest.approx(value), (name, key)


def test_resolve_checks_a_config_without_building_anything():
    config = ml_collections.ConfigDict(
        dict(optimizer="lars", momentum=0.8, weight_decay=None, exclude_from_weight_decay=["bias", "stage3_"])
    )
    name, settings = optimizers.resolve(config, trust_coefficient=0.01)
    assert name == "lars"
    assert settings == dict(
        optimizers.DEFAULTS, momentum=0.8, trust_coefficient=0.01, exclude_from_weight_decay=("bias", "stage3_")
    )


def test_a_config_supplies_the_fields_and_keywords_win():
    config = ml_collections.ConfigDict(
        dict(
            optimizer="lars",
            momentum=0.5,
            weight_decay=2e-4,
            nesterov=True,
            trust_coefficient=0.02,
            epsilon=1e-6,
            exclude_from_weight_decay=("bias",),
            exclude_from_layer_adaptation=("gamma",),
        )
    )
    config = optimizers.build(config, 0.2).get_config()
    assert (config["momentum"], config["weight_decay"], config["nesterov"]) == (0.5, 2e-4, True)
    assert (config["trust_coefficient"], config["epsilon"]) == (0.02, 1e-6)
    assert config["exclude_from_weight_decay"] == ["bias"]
    assert config["exclude_from_layer_adaptation"] == ["gamma"]

    partial = ml_collections.ConfigDict(dict(optimizer="momentum", momentum=0.5, weight_decay=None))
    sgd = optimizers.build(partial, 0.1, momentum=0.7)
    assert sgd.momentum == pytest.approx(0.7) and sgd.weight_decay is None  # None: the default 0
    lars = optimizers.build(dict(optimizer="lars"), 0.1)
    assert lars.get_config()["exclude_from_weight_decay"] == list(optimizers.DEFAULT_EXCLUDE)
    assert (lars.momentum, lars.trust_coefficient, lars.epsilon) == (0.9, 0.001, 0.0)


def all_layers_model():
    """A conv, a dense layer and every normalization layer of `kbatch.layers` in one model."""
    inputs = keras.Input((4, 4, 8))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    for norm in kbatch.layers.NAMES:
        extra = {"virtual_batch_size": 2} if norm == "ghost_batch" else {}
        x = kbatch.layers.get(norm, name=f"norm_{norm}", **extra)(x)
    x = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    return nonzero(keras.Model(inputs, x))


def nonzero(model):
    """Every trainable variable drawn from U(0.5, 1.5): decay must show on each one."""
    rng = np.random.default_rng(0)
    for variable in model.trainable_variables:
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    return model


def decay_step(optimizer, model):
    """One update with zero gradients: only weight decay moves a variable."""
    before = {v.path: v.numpy() for v in model.trainable_variables}
    optimizer.apply([np.zeros(v.shape, "float32") for v in model.trainable_variables], model.trainable_variables)
    return {v.path: (before[v.path], v.numpy()) for v in model.trainable_variables}


@pytest.mark.parametrize("name", optimizers.NAMES)
def test_biases_and_every_norm_parameter_are_excluded_by_default(name):
    model = all_layers_model()
    optimizer = optimizers.build(name, LR, weight_decay=WD, trust_coefficient=TC)
    excluded = optimizers.apply_exclusions(optimizer, model)
    norm_paths = {v.path for layer in model.layers if layer.name.startswith("norm_") for v in layer.trainable_variables}
    assert norm_paths and norm_paths <= set(excluded)
    assert set(excluded) == norm_paths | {"conv/bias", "head/bias"}
    # Keras: w <- w - lr * wd * w; LARS: g = wd * w, trust = tc / wd, so w <- w - lr * tc * w.
    factor = 1 - LR * (TC if name == "lars" else WD)
    for path, (before, after) in decay_step(optimizer, model).items():
        want = before if path in excluded else before * factor
        np.testing.assert_allclose(after, want, rtol=1e-6, err_msg=f"{name} {path}")


@pytest.mark.parametrize("patterns", ["the default", ()])
def test_lars_built_directly_excludes_what_the_factory_excludes_and_no_patterns_decay_all(patterns):
    model = all_layers_model()
    given = {} if patterns == "the default" else {"exclude_from_weight_decay": patterns}
    optimizer = optimizers.LARS(LR, weight_decay=WD, trust_coefficient=TC, **given)
    kernels = {"conv/kernel", "head/kernel"}
    kept = set() if given else {v.path for v in model.trainable_variables} - kernels  # biases, norms
    assert {v.path for v in model.trainable_variables if optimizer.weight_decay_excluded(v)} == kept
    if not given:  # what the factory (and so the trainer) excludes
        factory = optimizers.build("lars", LR)
        assert {v.path for v in model.trainable_variables if factory.weight_decay_excluded(v)} == kept
    # LARS on a zero gradient: g = wd * w, trust = tc / wd, so w <- w - lr * tc * w where decayed.
    for path, (before, after) in decay_step(optimizer, model).items():
        want = before if path in kept else before * (1 - LR * TC)
        np.testing.assert_allclose(after, want, rtol=1e-6, err_msg=path)


def test_lars_default_exclusions_serialize_and_an_old_config_loads_as_it_was():
    new = optimizers.LARS(LR)
    assert new.get_config()["exclude_from_weight_decay"] == list(optimizers.DEFAULT_EXCLUDE)
    assert optimizers.LARS.from_config(new.get_config()).get_config() == new.get_config()
    model = small_model()
    # Before the default changed, LARS() saved `[]` (decay everything); an explicit list kept itself.
    for saved, decayed in (
        ([], ["body/kernel", "body/bias", "head/kernel", "head/bias"]),
        (["bias"], ["body/kernel", "head/kernel"]),
    ):
        old = optimizers.LARS.from_config(dict(new.get_config(), exclude_from_weight_decay=saved))
        assert [v.path for v in model.trainable_variables if not old.weight_decay_excluded(v)] == decayed


def test_the_defaults_need_no_model_for_keras_optimizers_in_fit():
    # Without apply_exclusions, the short-name patterns given to Keras at build time still hold.
    model = all_layers_model()
    optimizer = optimizers.build("momentum", LR, weight_decay=WD)
    for path, (before, after) in decay_step(optimizer, model).items():
        decayed = not (path.startswith("norm_") or path.endswith("/bias"))
        np.testing.assert_allclose(after, before * (1 - LR * WD) if decayed else before, rtol=1e-6)


def small_model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4, name="body")(inputs)
    return nonzero(keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden)))


def test_a_path_pattern_excludes_where_keras_own_matching_silently_decays():
    pattern = ["^head/kernel$"]  # one variable, named by its full path
    keras_own, ours = small_model(), small_model()
    plain = keras.optimizers.SGD(LR, weight_decay=WD)
    plain.exclude_from_weight_decay(var_names=pattern)
    # Keras searches the name of the tf.Variable it is handed on TensorFlow: "head/kernel:0".
    moved = decay_step(plain, keras_own)
    np.testing.assert_allclose(moved["head/kernel"][1], moved["head/kernel"][0] * (1 - LR * WD), rtol=1e-6)

    optimizer = optimizers.build("momentum", LR, weight_decay=WD, exclude_from_weight_decay=pattern)
    assert optimizers.apply_exclusions(optimizer, ours) == ["head/kernel"]
    moved = decay_step(optimizer, ours)
    np.testing.assert_array_equal(moved["head/kernel"][1], moved["head/kernel"][0])
    for path in ("body/kernel", "body/bias", "head/bias"):  # the user's list replaces the defaults
        np.testing.assert_allclose(moved[path][1], moved[path][0] * (1 - LR * WD), rtol=1e-6)


def test_a_layer_name_excludes_all_its_variables_for_lars_and_adamw():
    for name in ("lars", "adamw"):
        model = small_model()
        optimizer = optimizers.build(name, LR, weight_decay=WD, exclude_from_weight_decay=["body"])
        assert sorted(optimizers.apply_exclusions(optimizer, model)) == ["body/bias", "body/kernel"]
        moved = decay_step(optimizer, model)
        for path, (before, after) in moved.items():
            if path.startswith("body/"):
                np.testing.assert_array_equal(after, before)
            else:
                assert not np.allclose(after, before), (name, path)


def test_apply_exclusions_unwraps_loss_scaling_and_takes_explicit_patterns():
    model = small_model()
    inner = optimizers.build("adam", LR, weight_decay=WD)
    wrapped = keras.optimizers.LossScaleOptimizer(inner)
    assert optimizers.apply_exclusions(wrapped, model, exclude_from_weight_decay=["head"]) == [
        "head/kernel",
        "head/bias",
    ]
    moved = decay_step(inner, model)
    np.testing.assert_array_equal(moved["head/kernel"][1], moved["head/kernel"][0])
    np.testing.assert_allclose(moved["body/bias"][1], moved["body/bias"][0] * (1 - LR * WD), rtol=1e-6)


def test_unwrap_returns_the_optimizer_that_updates():
    inner = optimizers.build("lars", LR)
    assert optimizers.unwrap(inner) is inner
    twice = keras.optimizers.LossScaleOptimizer(keras.optimizers.LossScaleOptimizer(inner))
    assert optimizers.unwrap(twice) is inner
    assert optimizers.unwrap(keras.optimizers.LossScaleOptimizer(inner)) is inner


def test_patterns_given_to_apply_exclusions_add_to_lars_own():
    model = small_model()
    optimizer = optimizers.build("lars", LR, weight_decay=WD, trust_coefficient=TC)
    assert optimizers.apply_exclusions(optimizer, model) == ["body/bias", "head/bias"]
    excluded = optimizers.apply_exclusions(optimizer, model, exclude_from_weight_decay=["^body/"])
    assert excluded == ["body/kernel", "body/bias", "head/bias"]
    optimizer.apply([np.ones(v.shape, "float32") for v in model.trainable_variables], model.trainable_variables)
    ratios = optimizer.trust_ratios()  # adaptation follows the decay exclusions
    assert ratios["body/kernel"] == 1.0 and 0 < ratios["head/kernel"] < 1.0


def test_lars_config_can_keep_adaptation_on_norm_parameters():
    model = all_layers_model()
    optimizer = optimizers.build(
        dict(optimizer="lars", weight_decay=WD, trust_coefficient=TC, exclude_from_layer_adaptation=["bias"]), LR
    )
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=v.shape).astype("float32") for v in model.trainable_variables]
    before = {v.path: v.numpy() for v in model.trainable_variables}
    optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], model.trainable_variables)
    ratios = optimizer.trust_ratios()
    assert ratios["conv/bias"] == ratios["head/bias"] == 1.0
    for path, g in zip(before, grads):
        if path.endswith("/bias"):
            continue
        # Norm parameters: adapted but still not decayed (g alone); kernels: g + wd * w.
        decayed = not path.startswith("norm_")
        g = g + WD * before[path] if decayed else g
        trust = TC * np.linalg.norm(before[path]) / np.linalg.norm(g)
        np.testing.assert_allclose(ratios[path], trust, rtol=1e-5, err_msg=path)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: optimizers.build("rmsprop", 0.1),
            r"optimizer='rmsprop': must be one of 'sgd', 'momentum', 'nesterov', 'lars', 'lamb', 'adamw', 'adam'\.",
        ),
        (
            lambda: optimizers.build(ml_collections.ConfigDict(dict(optimizer="Lars")), 0.1),
            "optimizer='Lars': must be one of",
        ),
        (
            lambda: optimizers.build("momentum", 0.1, weight_decay=-1.0),
            "weight_decay=-1.0: must be a finite number >= 0",
        ),
        (lambda: optimizers.build("momentum", 0.1, weight_decay=float("inf")), "weight_decay=inf: must be a finite"),
        (lambda: optimizers.build("momentum", 0.1, momentum=1.0), r"momentum=1.0: must be a finite number in \[0, 1\)"),
        (
            lambda: optimizers.build("momentum", 0.1, momentum=float("nan")),
            r"momentum=nan: must be a finite number in \[0, 1\)",
        ),
        (lambda: optimizers.build("adam", 0.1, beta_2=1.5), r"beta_2=1.5: must be a finite number in \[0, 1\)"),
        (lambda: optimizers.resolve(dict(optimizer="lars", nesterov="yes")), "nesterov='yes': must be True or False"),
        (
            lambda: optimizers.resolve(dict(optimizer="lars", trust_coefficient=-1)),
            "trust_coefficient=-1: must be a finite number >= 0",
        ),
        (lambda: optimizers.resolve("adamw", epsilon=-1e-8), "epsilon=-1e-08: must be a finite number >= 0, or None"),
        (
            lambda: optimizers.build("adamw", 0.1, exclude_from_weight_decay=["bias("]),
            r"exclude_from_weight_decay=\['bias\('\]: must be valid regular expressions; 'bias\(' is not",
        ),
        (lambda: optimizers.build("lars", -0.1), "learning_rate=-0.1: must be a finite number >= 0"),
        (lambda: optimizers.build("lars", 0.1, momentum=1.5), r"momentum=1.5: must be a finite number in \[0, 1\)"),
        (
            lambda: optimizers.build(dict(optimizer="lars", exclude_from_layer_adaptation=["(gamma"]), 0.1),
            "exclude_from_layer_adaptation",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field(call, message):
    with pytest.raises(ValueError, match=message):
        call()
