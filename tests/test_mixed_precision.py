"""`config.mixed_precision`: "mixed_bfloat16" (TPU) computes in bfloat16 with float32 weights;
"mixed_float16" (GPU) also scales the loss, and the trainer unscales before it logs or clips.
Both run here on the CPU, as the same code does on an accelerator, and learn as float32 does."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kbatch.training import train


def _logged(model_dir, tag):
    train_dir = os.path.join(model_dir, "train")
    values = {}
    for name in os.listdir(train_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(train_dir, name)):
            for value in event.summary.value:
                if value.tag == tag:
                    values.setdefault(event.step, float(tf.make_ndarray(value.tensor)))
    return values


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory):
    from conftest import small_config

    config = small_config(tmp_path_factory.mktemp("float32") / "run", num_epochs=1)
    return config, train(config, verbose=False)


@pytest.mark.parametrize("policy, compute_dtype", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_mixed_precision_learns_as_float32_with_float32_weights(make_config, float32_run, policy, compute_dtype):
    reference_config, reference = float32_run
    config = make_config(num_epochs=1, mixed_precision=policy)
    try:
        result = train(config, verbose=False)
        model = keras.models.load_model(os.path.join(config.model_dir, "model.keras"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv1D)]
    assert convs and all(layer.compute_dtype == compute_dtype for layer in convs)
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    # The same data and steps; the rounding of 8 (bfloat16) or 11 (float16) mantissa bits moves
    # the result a little, not the learning (measured after this one epoch: eval loss 1.54 in
    # float32, 1.43 and 1.42 mixed; ln 10 = 2.30 at the start).
    assert result["steps"] == reference["steps"]
    assert result["final_eval_loss"] == pytest.approx(reference["final_eval_loss"], abs=0.25)
    assert result["final_eval_accuracy"] == pytest.approx(reference["final_eval_accuracy"], abs=0.06)
    # The first update's gradient norm is logged unscaled: float16's loss scale (32768 at the
    # start) is divided out, so it matches float32's to the precision of the compute dtype.
    first = _logged(config.model_dir, "gradient_norm")[1]
    expected = _logged(reference_config.model_dir, "gradient_norm")[1]
    assert first == pytest.approx(expected, rel=0.01)
    assert np.isfinite(first)
