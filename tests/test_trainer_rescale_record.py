"""#32.6 in the trainer: a `model_fn` whose norms `kbatch.scaling.rescale_model` already moved is
moved from the batch it records, so it ends with the momenta of one the trainer moved (not
moved twice); the norm fields a `model_fn` run does not read are named when set."""

import warnings

import keras
import pytest
import user_data

import kbatch
from kbatch import scaling

RUN = {**user_data.CONFIG, "batch_size": 256, "num_epochs": 1, "steps_per_loop": 2}


def _norm_model(info):
    inputs = keras.Input(info.input_shape)
    x = keras.layers.BatchNormalization(momentum=0.9)(keras.layers.Dense(16)(inputs))
    x = kbatch.layers.GhostBatchNormalization(32, momentum=0.99)(keras.layers.Activation("tanh")(x))
    return keras.Model(inputs, keras.layers.Dense(info.num_classes)(x))


def _momenta(model_dir, moved_by_user):
    built = []

    def model_fn(info):
        model = _norm_model(info)
        if moved_by_user:  # a fit user's model, moved to the run's batch before it is given
            scaling.rescale_model(model, RUN["base_batch_size"], RUN["batch_size"])
        built.append(model)
        return model

    run = kbatch.training.build_run({**RUN, "model_dir": str(model_dir)}, data=user_data.source(), model_fn=model_fn)
    run.run_loop()  # the run's one phase: its recipe applied, two updates
    run.close()
    return [layer.momentum for layer in built[0].layers if hasattr(layer, "moving_mean")]


def test_a_model_fn_moved_by_rescale_model_is_not_moved_twice(tmp_path):
    by_user, by_trainer = (_momenta(tmp_path / name, moved) for name, moved in (("user", True), ("trainer", False)))
    want = [
        scaling.rescale(scaling.Recipe(batch_size=64, learning_rate=0.05, num_epochs=1, bn_momentum=m), 256).bn_momentum
        for m in (0.9, 0.99)
    ]
    assert by_trainer == pytest.approx(want, rel=1e-12)
    assert by_user == pytest.approx(want, rel=1e-12)


def test_norm_fields_a_model_fn_does_not_read_are_named(tmp_path):
    config = {**user_data.CONFIG, "model_dir": str(tmp_path / "set"), "norm": "group", "norm_groups": 4}
    with pytest.warns(UserWarning, match=r"^config.norm='group', config.norm_groups=4: unused with a model_fn"):
        kbatch.training.build_run(config, data=user_data.source(), model_fn=user_data.seeded_mlp).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        default = {**user_data.CONFIG, "model_dir": str(tmp_path / "default")}
        kbatch.training.build_run(default, data=user_data.source(), model_fn=user_data.seeded_mlp).close()
