"""Fine-tuning (`config.init_from`, `init_exclude`, `freeze`): a run starts from a finished run's
weights (all but the excluded ones, which keep the model's own start), its frozen weights stay
bitwise what they were on TensorFlow and JAX, a resumed fine-tune starts from its own checkpoint,
weights are named the same before and after a save, and each wrong input is one line before
anything is written."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import user_data

from kbatch.training import build_run, train
from kbatch.training.config import fine_tuning

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = {**user_data.CONFIG, "strategy": "one_device"}


def named_model(info, hidden=16, seed=2):
    """body (Dense) -> norm (BatchNormalization) -> tanh -> logits, its start drawn by NumPy."""
    rng = np.random.default_rng(seed)

    def constant(*shape):
        return keras.initializers.Constant(rng.normal(scale=0.5 / np.sqrt(shape[0]), size=shape).astype(np.float32))

    inputs = keras.Input(info.input_shape)
    x = keras.layers.Dense(hidden, kernel_initializer=constant(info.input_shape[0], hidden), name="body")(inputs)
    x = keras.layers.Activation("tanh")(keras.layers.BatchNormalization(name="norm")(x))
    return keras.Model(
        inputs,
        keras.layers.Dense(info.num_classes, kernel_initializer=constant(hidden, info.num_classes), name="logits")(x),
    )


def _named(weights_of, model):
    return dict(zip(fine_tuning.weight_keys(model), weights_of(model)))


def _values(model):
    return [np.array(v) for v in model.weights]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A finished run of `named_model` (its folder) and its model."""
    model_dir = tmp_path_factory.mktemp("pre") / "run"
    train(
        {**CONFIG, "model_dir": str(model_dir), "num_epochs": 3, "warmup_epochs": 0.5},
        data=user_data.source(),
        model_fn=named_model,
        verbose=False,
    )
    return model_dir, keras.models.load_model(model_dir / "model.keras")


def test_weight_keys_are_the_same_before_and_after_a_save(tmp_path):
    inputs = keras.Input((4,))
    body = keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(3)], name="body")
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(body(keras.layers.Dense(3, name="stem")(inputs))))
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    for built in (model, sequential):
        built.save(tmp_path / "m.keras")
        loaded = keras.models.load_model(tmp_path / "m.keras")
        assert [v.path for v in loaded.weights] != [v.path for v in built.weights]  # Keras's paths lose a prefix
        assert fine_tuning.weight_keys(loaded) == fine_tuning.weight_keys(built)
    dense = [layer.name for layer in body.layers]
    assert fine_tuning.weight_keys(model) == [
        "stem/kernel",
        "stem/bias",
        f"body/{dense[0]}/kernel",
        f"body/{dense[0]}/bias",
        f"body/{dense[1]}/kernel",
        f"body/{dense[1]}/bias",
        "head/kernel",
        "head/bias",
    ]


def test_a_fine_tune_starts_from_the_source_but_the_excluded_head(pretrained, tmp_path):
    source_dir, source = pretrained
    run = build_run(
        {**CONFIG, "model_dir": str(tmp_path / "ft"), "init_from": str(source_dir), "init_exclude": "^logits/"},
        data=user_data.source(),
        model_fn=named_model,
    )
    try:
        start = _named(_values, named_model(user_data.source().describe()))
        got, want = _named(_values, run.model), _named(_values, source)
        assert run.step == 0 and set(got) == set(want) == set(start)
        for key in got:
            reference = start[key] if key.startswith("logits/") else want[key]
            np.testing.assert_array_equal(got[key], reference, err_msg=key)
        assert not np.array_equal(want["logits/kernel"], start["logits/kernel"])  # the two starts differ
        assert not np.array_equal(want["norm/moving_mean"], start["norm/moving_mean"])  # BN statistics come too
    finally:
        run.close()


@pytest.mark.parametrize("strategy", ["one_device", "cpu:2"])
def test_frozen_weights_stay_bitwise_and_the_rest_trains(pretrained, tmp_path, strategy):
    source_dir, source = pretrained
    model_dir = tmp_path / "ft"
    train(
        {
            **CONFIG,
            "strategy": strategy,
            "model_dir": str(model_dir),
            "init_from": str(source_dir / "model.keras"),
            "freeze": "^(body|norm)/",
            "base_learning_rate": 0.2,
        },
        data=user_data.source(),
        model_fn=named_model,
        verbose=False,
    )
    tuned = _named(_values, keras.models.load_model(model_dir / "model.keras"))
    want = _named(_values, source)
    for key in ("body/kernel", "body/bias", "norm/gamma", "norm/beta", "norm/moving_mean", "norm/moving_variance"):
        np.testing.assert_array_equal(tuned[key], want[key], err_msg=key)
    assert not np.allclose(tuned["logits/kernel"], want["logits/kernel"])


def test_a_layer_named_by_keras_is_matched_by_its_name_in_the_saved_model(tmp_path):
    pre = tmp_path / "pre"
    train({**CONFIG, "model_dir": str(pre)}, data=user_data.source(), model_fn=user_data.seeded_mlp, verbose=False)
    source = keras.models.load_model(pre / "model.keras")
    saved_head = source.layers[-1].name  # dense_N: Keras numbered it in this process
    run = build_run(
        {**CONFIG, "model_dir": str(tmp_path / "ft"), "init_from": str(pre), "init_exclude": f"^{saved_head}/"},
        data=user_data.source(),
        model_fn=user_data.seeded_mlp,
    )
    try:
        assert run.model.layers[-1].name != saved_head  # a fresh model in the same process: another number
        start = user_data.seeded_mlp(user_data.source().describe())
        for i, (got, theirs, mine) in enumerate(zip(_values(run.model), _values(source), _values(start))):
            np.testing.assert_array_equal(got, theirs if i < 2 else mine)  # the hidden layer loaded, the head not
    finally:
        run.close()


def test_a_resumed_fine_tune_starts_from_its_checkpoint_not_init_from(pretrained, tmp_path, monkeypatch):
    source_dir, _ = pretrained
    config = {**CONFIG, "model_dir": str(tmp_path / "ft"), "init_from": str(source_dir), "freeze": "^body/"}
    run = build_run(config, data=user_data.source(), model_fn=named_model)
    run.run_loop()
    run.save(run.step)
    saved, step = _values(run.model), run.step
    run.close()

    def copied(*args, **kwargs):
        raise AssertionError("init_from was loaded again into a resumed run")

    monkeypatch.setattr(fine_tuning, "copy_weights", copied)
    resumed = build_run(config, data=user_data.source(), model_fn=named_model)
    try:
        assert resumed.step == step > 0
        for got, want in zip(_values(resumed.model), saved):
            np.testing.assert_array_equal(got, want)
        assert [v.trainable for v in resumed.model.weights][:2] == [False, False]  # frozen again
    finally:
        resumed.close()


def test_on_jax_the_source_is_loaded_and_frozen_weights_stay_bitwise(tmp_path):
    pre, tuned = tmp_path / "pre", tmp_path / "jax"
    train({**CONFIG, "model_dir": str(pre)}, data=user_data.source(), model_fn=user_data.seeded_mlp, verbose=False)
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}"}
    overrides = {"backend": "jax", "strategy": "one_device", "init_from": str(pre), "freeze": "^dense/"}
    done = subprocess.run(
        [sys.executable, str(HERE / "user_data.py"), str(tuned), json.dumps(overrides)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    source, start = (
        _values(keras.models.load_model(pre / "model.keras")),
        user_data.seeded_mlp(user_data.source().describe()).get_weights(),
    )
    got = _values(keras.models.load_model(tuned / "model.keras"))
    for frozen in (0, 1):  # the first layer (fresh in the JAX process: `dense`): the source's, bitwise
        np.testing.assert_array_equal(got[frozen], source[frozen])
        assert not np.array_equal(source[frozen], start[frozen])
    assert not np.allclose(got[2], source[2])  # the head trained on


def test_frozen_layers_are_skipped_by_the_optimizer(pretrained, tmp_path):
    run = build_run(
        {**CONFIG, "model_dir": str(tmp_path / "ft"), "init_from": str(pretrained[0]), "freeze": "^norm/"},
        data=user_data.source(),
        model_fn=named_model,
    )
    try:
        norm = run.model.get_layer("norm")
        assert not norm.trainable  # the whole layer: BN then normalizes with its moving statistics
        assert {fine_tuning.weight_keys(run.model)[i] for i, v in enumerate(run.model.weights) if v.trainable} == {
            "body/kernel",
            "body/bias",
            "logits/kernel",
            "logits/bias",
        }
        assert len(run.model.trainable_variables) == 4
    finally:
        run.close()


def _with_extra_layer(model):
    return keras.Model(model.inputs, keras.layers.Dense(model.outputs[0].shape[-1], name="extra")(model.outputs[0]))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"init_from": "nowhere/model.keras"}, r"^config.init_from='nowhere/model.keras': no such file or folder; "),
        ({"init_from": "EMPTY"}, r"^config.init_from='.*': the folder holds no model.keras "),
        ({"init_from": "CONFIG_JSON"}, r"^config.init_from='.*config.json': not a Keras model file; "),
        (
            {"init_from": "PRE", "hidden": 8},
            r"^config.init_from: weight body/kernel has shape \[12, 8\] here and "
            r"\[12, 16\] as body/kernel there: leave it out with config.init_exclude",
        ),
        (
            {"init_from": "PRE", "extra": True},
            r"^config.init_from: holds 8 weights, and this model's weight 9, "
            r"extra/kernel, has none to start from: leave it out",
        ),
        (
            {"init_from": "PRE", "init_exclude": "^head/"},
            r"^config.init_exclude='\^head/': matches none of the model's "
            r"weights \(a typo\?\); they are body/kernel, ",
        ),
        ({"init_from": "PRE", "freeze": "^bdoy"}, r"^config.freeze='\^bdoy': matches none of the model's weights"),
        ({"init_from": "PRE", "freeze": "."}, r"^config.freeze='.': freezes every trainable weight of the model"),
        (
            {"init_exclude": "^logits/"},
            r"^config.init_exclude='\^logits/': leaves weights out of config.init_from, "
            r"which is not set\.$",
        ),
        ({"freeze": "body("}, r"^config.freeze='body\(': must be a regular expression \(missing \), "),
    ],
)
def test_bad_fine_tuning_input_is_one_line_before_anything_is_written(pretrained, tmp_path, overrides, message):
    places = {"PRE": str(pretrained[0]), "EMPTY": str(tmp_path), "CONFIG_JSON": str(pretrained[0] / "config.json")}
    overrides = dict(overrides)
    hidden, extra = overrides.pop("hidden", 16), overrides.pop("extra", False)
    if "init_from" in overrides:
        overrides["init_from"] = places.get(overrides["init_from"], overrides["init_from"])
    model_dir = tmp_path / "ft"
    with pytest.raises(ValueError, match=message) as raised:
        train(
            {**CONFIG, "model_dir": str(model_dir), **overrides},
            data=user_data.source(),
            model_fn=lambda info: (_with_extra_layer if extra else lambda m: m)(named_model(info, hidden)),
            verbose=False,
        )
    assert "\n" not in str(raised.value)
    assert not model_dir.exists()


def test_the_studys_subset_is_distinct_training_examples_evaluated_on_the_test_split():
    from kbatch.data.numpy_source import cached_mnist1d
    from kbatch.study import fine_tuning as study

    data, source = cached_mnist1d("original"), study.subset(64)
    info = source.describe()
    assert (info.num_train_examples, info.num_eval_examples, info.input_shape) == (64, 1000, (40, 1))
    x, _ = next(iter(source.train_batches(64, seed=0, start_example=0)))
    rows = {bytes(np.asarray(r, np.float32)) for r in np.asarray(data["x"], np.float32)}
    assert len({bytes(r) for r in x[..., 0]}) == 64 and all(bytes(r) in rows for r in x[..., 0])


def test_the_studys_fine_tuning_config_starts_from_the_pretrained_run_less_its_head(pretrained, tmp_path):
    from kbatch.study import fine_tuning as study
    from kbatch.training.config import schema

    settings = schema.resolve(study.fine_tune_config(str(tmp_path / "ft"), 32, 4, str(pretrained[0])))
    assert (settings.init_from, settings.init_exclude, settings.batch_size) == (str(pretrained[0]), "^logits/", 32)
    assert schema.resolve(study.fine_tune_config(str(tmp_path / "s"), 32, 4)).init_from is None
