"""#32.6 in the trainer: norms of a `model_fn` that `kbatch.scaling.rescale_model` already moved
are moved from the batch they record, so they end with the momenta of the norms the trainer moved
(not moved twice); the norm fields a `model_fn` run does not read are named when set."""

import warnings

import keras
import pytest
import user_data

import kbatch
from kbatch import scaling

RUN = {**user_data.CONFIG, "batch_size": 256, "num_epochs": 1, "steps_per_loop": 2}  # base batch 64


def _norms(momentum):
    return [
        keras.layers.BatchNormalization(momentum=momentum),
        kbatch.layers.GhostBatchNormalization(32, momentum=momentum),
    ]


def test_norms_moved_by_rescale_model_are_not_moved_twice(tmp_path):
    """One model, two blocks of norms: one moved to the run's batch by rescale_model before the
    model is given (a fit user's), one left to the trainer; both end at rescale's momenta."""
    blocks = {}

    def model_fn(info):
        blocks["user"] = keras.Sequential([keras.Input((16,)), *_norms(0.9)])
        scaling.rescale_model(blocks["user"], RUN["base_batch_size"], RUN["batch_size"])
        blocks["trainer"] = keras.Sequential([keras.Input((16,)), *_norms(0.9)])
        inputs = keras.Input(info.input_shape)
        x = blocks["trainer"](blocks["user"](keras.layers.Dense(16)(inputs)))
        return keras.Model(inputs, keras.layers.Dense(info.num_classes)(x))

    run = kbatch.training.build_run({**RUN, "model_dir": str(tmp_path)}, data=user_data.source(), model_fn=model_fn)
    run.run_loop()  # the run's one phase: its recipe applied, two updates
    run.close()
    recipe = scaling.Recipe(batch_size=RUN["base_batch_size"], learning_rate=0.05, num_epochs=1, bn_momentum=0.9)
    want = scaling.rescale(recipe, RUN["batch_size"]).bn_momentum
    for name, block in blocks.items():
        assert [layer.momentum for layer in block.layers] == pytest.approx([want, want], rel=1e-12), name


def test_norm_fields_a_model_fn_does_not_read_are_named(tmp_path):
    config = {**user_data.CONFIG, "model_dir": str(tmp_path / "set"), "norm": "group", "norm_groups": 4}
    with pytest.warns(UserWarning, match=r"^config.norm='group', config.norm_groups=4: unused with a model_fn"):
        kbatch.training.build_run(config, data=user_data.source(), model_fn=user_data.seeded_mlp).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        default = {**user_data.CONFIG, "model_dir": str(tmp_path / "default")}
        kbatch.training.build_run(default, data=user_data.source(), model_fn=user_data.seeded_mlp).close()
