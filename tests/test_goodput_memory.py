"""goodput under a device's memory (`device_memory_gib`, the JAX backend): the largest micro-batch
whose compiled update fits, and the fewest accumulation steps each batch then needs, checked by
hand; a run that starts at 4 accumulation steps re-decides them at each epoch's end by the same
arithmetic, never past what XLA says fits, and a resumed run makes the same decisions, bit for bit."""

import contextlib
import io
import json
import os
import re

import keras
import numpy as np
import pytest
from conftest import small_config
from smooth_model import linear_model
from test_adaptive_batch import GOODPUT, StopAfterEpoch

from kbatch.diagnostics import goodput, step_memory
from kbatch.training import build_run, train

LARGEST = 32  # the micro-batch per device the run's memory budget is set to hold
MEMORY = {**GOODPUT, "accumulation_steps": 4, "update_time_model": (0.01, 1e-4, 1.0)}


@pytest.mark.fast
def test_the_fewest_accumulation_steps_that_fit_by_hand():
    assert [step_memory.accumulation_for(256, 2, m) for m in (1000, 128, 64, 1)] == [1, 1, 2, 128]
    assert step_memory.accumulation_for(256, 2, 0) is None  # not even one example fits
    assert step_memory.accumulation_for(96, 1, 2) is None  # 96 = 3 x 32: micro-batches 96, 48, ..., 3, then uneven
    assert step_memory.accumulation_for(256, 1, None, smallest=4) == 4  # no bound: the fewest allowed
    assert step_memory.accumulation_for(256, 1, 1000, smallest=2) == 2  # batch norm: never one pass of halves
    # One device measuring the noise scale passes over halves without accumulation: k = 1 holds 128 of 256.
    assert [step_memory.accumulation_for(256, 1, m, halves_at_one=True) for m in (128, 127, 64)] == [1, 4, 4]


@pytest.mark.fast
def test_the_largest_micro_batch_that_fits_doubles_up_or_halves_down():
    def measure(m):  # a step of 1 MB and 10 kB an example
        return 1e6 + 1e4 * m

    assert step_memory.largest_micro_batch(measure, 16, 4096, 2e6) == (
        64,
        {16: 1.16e6, 32: 1.32e6, 64: 1.64e6, 128: 2.28e6},
    )
    assert step_memory.largest_micro_batch(measure, 16, 64, 9e9)[0] == 64  # never past the largest batch
    assert step_memory.largest_micro_batch(measure, 256, 4096, 1.1e6) == (
        8,
        {256: 3.56e6, 128: 2.28e6, 64: 1.64e6, 32: 1.32e6, 16: 1.16e6, 8: 1.08e6},
    )
    assert step_memory.largest_micro_batch(measure, 12, 4096, 1e6)[0] == 0  # 12, 6, 3: none fits
    assert step_memory.in_words(57_300) == "56 KiB" and step_memory.in_words(5.5 * 2**30) == "5.5 GiB"


@pytest.mark.fast
def test_goodput_counts_an_accumulated_update_as_its_passes_by_hand():
    curve = goodput.update_time.UpdateTimeFit(0.01, 1e-4, 1.0, residual=0.0)
    assert goodput.update_seconds(curve, 256, 4) == pytest.approx(4 * (0.01 + 1e-4 * 64))
    steps = {32: 1, 64: 1, 128: 2, 256: None}.get  # 256 does not fit

    def by_hand(b_simple):
        rates = {
            b: b / (steps(b) * (0.01 + 1e-4 * b / steps(b))) * (b_simple + 32) / (b_simple + b) for b in (32, 64, 128)
        }
        return max(rates, key=rates.get)

    for b_simple in (10.0, 70.0, 300.0, 1e6):
        assert goodput.best_batch(32, 32, b_simple, 256, curve, steps) == by_hand(b_simple)
    # Noise so large that 256 is best in memory enough; here 128 takes two passes, as slow per example as 64's one.
    assert (goodput.best_batch(32, 32, 1e6, 256, curve), goodput.best_batch(32, 32, 1e6, 256, curve, steps)) == (
        256,
        64,
    )
    assert goodput.best_batch(128, 32, 1e6, 256, None, steps) == 128  # untimed: 256 would double past memory


def _budget(tmp_path, micro_batch):
    """GiB between the compiled update's memory at `micro_batch` per device and at twice it."""
    run = build_run(small_config(tmp_path / "probe", **MEMORY), model_fn=linear_model)
    try:
        low, high = (run.backend.step_memory_bytes(m) for m in (micro_batch, 2 * micro_batch))
    finally:
        run.close()
    assert low < high  # the activations grow with the micro-batch
    return (low + high) / 2 / 2**30


@pytest.fixture(scope="module")
def memory_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("memory")
    config = small_config(tmp_path / "run", **MEMORY, device_memory_gib=_budget(tmp_path, LARGEST))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = train(config, model_fn=linear_model, verbose=True)
    return config, result, printed.getvalue()


@pytest.mark.components
@pytest.mark.jax_only
def test_goodput_re_decides_the_accumulation_under_the_memory_xla_reports(memory_run):
    config, result, printed = memory_run
    with open(os.path.join(config.model_dir, "history.json")) as file:
        state = json.load(file)["actions"]["AdaptBatchSize"]
    measured = {int(m): b for m, b in state["memory"]["measured"].items()}
    budget = config.device_memory_gib * 2**30
    assert state["memory"]["largest_micro_batch"] == LARGEST and measured[LARGEST] <= budget < measured[2 * LARGEST]
    assert f"holds micro-batches of {LARGEST}" in printed
    decisions = state["decisions"]
    assert decisions and result["batch_sizes"] == [32] + [d["batch"] for d in decisions]
    assert decisions[0]["accumulation_steps"] < 4  # the run began at 4: memory allows fewer
    pattern = r"kbatch: goodput: B_simple ([\d.e+]+), .* at epoch (\d+): batch (\d+) -> (\d+) in (\d+) accumulation"
    lines = [m for m in map(re.compile(pattern).match, printed.splitlines()) if m]
    assert [(int(m.group(4)), int(m.group(5))) for m in lines] == [
        (d["batch"], d["accumulation_steps"]) for d in decisions
    ]
    curve = goodput.update_time.UpdateTimeFit(*MEMORY["update_time_model"], residual=0.0)
    for m in lines:  # each by hand: the fewest passes whose micro-batch XLA says fits, then the argmax
        b_simple, before = float(m.group(1)), int(m.group(3))

        def steps(b):
            return next((k for k in (1, 2, 4, 8, 16) if b // (2 if k == 1 else k) <= LARGEST), None)

        rates = {
            b: b / goodput.update_seconds(curve, b, steps(b)) * (b_simple + 32) / (b_simple + b)
            for b in (before * 2**n for n in range(4))
            if b <= 256 and (b == before or steps(b))
        }
        assert (int(m.group(4)), int(m.group(5))) == (max(rates, key=rates.get), steps(max(rates, key=rates.get)))


@pytest.mark.components
@pytest.mark.jax_only
def test_a_resumed_memory_bound_run_makes_the_same_decisions(memory_run, tmp_path):
    whole, reference, _ = memory_run
    stopped = small_config(tmp_path / "stopped", **MEMORY, device_memory_gib=whole.device_memory_gib)
    build_run(stopped, model_fn=linear_model).train(callbacks=[StopAfterEpoch(3)], verbose=False)
    resumed = build_run(stopped, model_fn=linear_model)
    assert resumed.step > 0 and resumed.batch_decisions
    result = resumed.train(verbose=False)
    assert result["batch_sizes"] == reference["batch_sizes"] and result["steps"] == reference["steps"]
    histories = [json.load(open(os.path.join(c.model_dir, "history.json"))) for c in (whole, stopped)]
    assert histories[0]["actions"]["AdaptBatchSize"] == histories[1]["actions"]["AdaptBatchSize"]
    weights = [keras.models.load_model(f"{c.model_dir}/model.keras").get_weights() for c in (whole, stopped)]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.components
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(batch_schedule="adaptive"), r"^config.device_memory_gib=2 bounds the accumulation that batch_schedule="),
        (dict(device_memory_gib=-1.0), r"^config.device_memory_gib=-1"),
    ],
)
def test_bad_memory_configs_are_one_line(make_config, overrides, message):
    config = make_config(**{**MEMORY, "device_memory_gib": 2.0, **overrides})
    with pytest.raises(ValueError, match=message):
        train(config, model_fn=linear_model, verbose=False)
    assert not os.path.exists(config.model_dir)


@pytest.mark.components
@pytest.mark.tensorflow_only
def test_tensorflow_refuses_a_memory_bound_in_one_line(make_config):
    config = make_config(**MEMORY, device_memory_gib=2.0)
    with pytest.raises(ValueError, match=r"^config.device_memory_gib=2 is measured on the compiled JAX step"):
        train(config, model_fn=linear_model, verbose=False)
