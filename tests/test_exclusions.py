"""Weight-decay exclusions select the same variables before and after `keras.models.load_model`,
which drops model names from variable paths (`sequential/head/kernel` loads as `head/kernel`), for
Sequential, functional, subclassed and nested models; and LARS's trust ratios are never stale."""

import keras
import numpy as np
import pytest

import kbatch
from kbatch.optimizers import DEFAULT_EXCLUDE, LARS

pytestmark = [pytest.mark.components, pytest.mark.fast]  # components: CI runs them again on JAX

PATTERNS = DEFAULT_EXCLUDE + ("^head/kernel$",)  # a layer's variable named by its layer path


def layers():
    return [
        keras.layers.Dense(4, name="body"),
        keras.layers.BatchNormalization(name="norm"),
        keras.layers.Dense(2, name="head"),
    ]


@keras.saving.register_keras_serializable(package="kbatch_tests")
class Net(keras.Model):
    """A subclassed model: its variables are `net/body/kernel`, ... until it is saved and loaded."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body, self.norm, self.head = layers()

    def call(self, x, training=False):
        return self.head(self.norm(self.body(x), training=training))


def sequential():
    return keras.Sequential([keras.Input((3,)), *layers()], name="seq")


def functional():
    inputs = keras.Input((3,))
    x = inputs
    for layer in layers():
        x = layer(x)
    return keras.Model(inputs, x)


def subclassed():
    model = Net()
    model(np.zeros((1, 3), "float32"))
    return model


def nested():
    """A Sequential inside a functional model: `trunk/head/kernel` loads as `head/kernel`."""
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.Sequential(layers(), name="trunk")(inputs))


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")


def excluded(model):
    """[(decay excluded, adaptation excluded)] of each trainable variable, in order."""
    optimizer = model.optimizer
    return [
        (optimizer.weight_decay_excluded(v), optimizer.layer_adaptation_excluded(v)) for v in model.trainable_variables
    ]


@pytest.mark.parametrize("make_model", [sequential, functional, subclassed, nested])
def test_the_same_variables_are_excluded_after_a_save_and_load(make_model, tmp_path):
    x, y = data()
    keras.utils.set_random_seed(0)
    model = make_model()
    model.compile(LARS(0.5, weight_decay=0.05, trust_coefficient=0.1, exclude_from_weight_decay=PATTERNS), "mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    # Only the body's kernel is decayed and adapted: by layer, whatever the model's paths are.
    only_body_kernel = [(not want, not want) for want in (True, False, False, False, False, False)]
    assert excluded(model) == excluded(loaded) == only_body_kernel
    # One more step from the same state gives the same weights and trust ratios.
    for m in (model, loaded):
        m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    ratios = list(model.optimizer.trust_ratios().values()), list(loaded.optimizer.trust_ratios().values())
    np.testing.assert_allclose(ratios[1], ratios[0], rtol=1e-6)
    assert ratios[0][0] != 1.0 and set(ratios[0][1:]) == {1.0}


def test_a_keras_optimizer_gets_its_exclusions_again_after_a_load(tmp_path):
    """Keras's own optimizers do not save their exclusions: apply_exclusions after the load."""
    x, y = data()
    keras.utils.set_random_seed(0)
    model = sequential()
    model.compile(kbatch.optimizers.build("adamw", 0.1, weight_decay=0.5, exclude_from_weight_decay=PATTERNS), "mse")
    assert kbatch.optimizers.apply_exclusions(model.optimizer, model) == [v.path for v in model.trainable_variables[1:]]
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "model.keras")
    forgot, loaded = (keras.models.load_model(tmp_path / "model.keras") for _ in range(2))
    assert kbatch.optimizers.apply_exclusions(loaded.optimizer, loaded, PATTERNS) == [
        v.path for v in loaded.trainable_variables[1:]
    ]
    for m in (model, forgot, loaded):
        m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    assert not np.allclose(forgot.layers[-1].kernel.numpy(), model.layers[-1].kernel.numpy())  # decayed


def test_a_suffix_of_the_path_matches_an_anchored_pattern_and_a_model_name_only_its_path():
    keras.utils.set_random_seed(0)
    model = sequential()
    paths = [v.path for v in model.trainable_variables]
    assert paths[-2] == "seq/head/kernel"
    optimizer = LARS(exclude_from_weight_decay=["^head/kernel$", "^seq/body/"])
    assert [optimizer.weight_decay_excluded(v) for v in model.trainable_variables] == [
        True,  # seq/body/kernel: through the model's name, which a load drops
        True,  # seq/body/bias
        False,
        False,
        True,  # seq/head/kernel: its suffix head/kernel
        False,
    ]


def test_trust_ratios_report_one_where_adaptation_is_off_now():
    """A checkpoint written under other exclusions restores ratios of variables no longer adapted."""
    rng = np.random.default_rng(1)
    variables = [
        keras.Variable(rng.normal(size=s).astype("float32"), name=n) for s, n in (((3, 2), "kernel"), (2, "bias"))
    ]
    gradients = [keras.ops.convert_to_tensor(rng.normal(size=v.shape).astype("float32")) for v in variables]
    everything = LARS(0.1, weight_decay=0.01, exclude_from_weight_decay=())
    everything.apply(gradients, variables)
    old = everything.trust_ratios()
    assert 0 < old["bias"] < 1 and 0 < old["kernel"] < 1
    restored = LARS(0.1, weight_decay=0.01)  # biases excluded (the default)
    restored.build(variables)
    for source, target in zip(everything.variables, restored.variables):
        target.assign(source)  # what a checkpoint restore does
    assert restored.trust_ratios() == {"kernel": old["kernel"], "bias": 1.0}
    assert restored.trust_ratio_stats() == {"min": old["kernel"], "median": old["kernel"], "max": old["kernel"]}
