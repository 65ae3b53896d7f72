"""The actions as parts: `standard(settings)` builds the ones a config turns on, with their
parameters; an action named in another's `after` must come first (checked once, before training);
each action's resumable state goes through JSON and back and the action goes on exactly."""

import dataclasses
import json
import types

import numpy as np
import pytest

from kbatch.diagnostics import noise_scale
from kbatch.training import actions
from kbatch.training.actions.action import Action, check_order
from kbatch.training.config import schema
from kbatch.training.run_files import history
from kbatch.training.runner import LoopOutput
from tests.conftest import small_config

pytestmark = pytest.mark.fast

ALWAYS = [
    "CheckFinite",
    "LogSteps",
    "AverageMovingStatistics",
    "Evaluate",
    "Progress",
    "Checkpoint",
    "WatchPreemption",
    "WatchInterrupt",
]


def settings(tmp_path, **overrides):
    return schema.resolve(small_config(tmp_path, **overrides))


def names(built):
    return [a.name for a in built]


def test_the_default_config_takes_only_the_actions_every_run_needs(tmp_path):
    assert names(actions.standard(settings(tmp_path))) == ALWAYS
    assert names(actions.standard(settings(tmp_path), verbose=False)) == [n for n in ALWAYS if n != "Progress"]


def test_each_diagnostic_is_built_with_its_config_fields_and_in_its_place(tmp_path):
    s = settings(
        tmp_path,
        optimizer="momentum",
        noise_scale_every=5,
        noise_scale_decay=0.9,
        sharpness_every=2,
        loss_spike_guard=4.0,
        batch_schedule="adaptive",
        max_batch_size=512,
    )
    built = actions.standard(s, verbose=False)
    assert names(built) == [
        "CheckFinite",
        "LogSteps",
        "ReportLossSpikes",
        "MeasureNoiseScale",
        "AdaptBatchSize",
        "AverageMovingStatistics",
        "Evaluate",
        "MeasureSharpness",
        "Checkpoint",
        "WatchPreemption",
        "WatchInterrupt",
    ]
    by_name = {a.name: a for a in built}
    assert (by_name["MeasureNoiseScale"].every, by_name["MeasureNoiseScale"].estimate.decay) == (5, 0.9)
    assert by_name["MeasureSharpness"].every == 2 and not by_name["MeasureSharpness"].verbose
    assert by_name["AdaptBatchSize"].max_batch_size == 512 and not by_name["ReportLossSpikes"].verbose
    check_order(built)


def test_parameter_servers_add_the_staleness_record(tmp_path):
    s = dataclasses.replace(settings(tmp_path), strategy="parameter_server")
    assert "RecordStaleness" in names(actions.standard(s))


class NeedsEvaluation(Action):
    after = ("Evaluate",)


def test_an_action_before_one_it_reads_is_refused_naming_both(tmp_path):
    standard = actions.standard(settings(tmp_path))
    check_order([*standard, NeedsEvaluation()])  # a user's action comes after the standard ones
    with pytest.raises(ValueError, match=r"^Action MeasureSharpness must run after Evaluate, which comes after it"):
        check_order([actions.CheckFinite(), actions.MeasureSharpness(1), actions.Evaluate()])
    with pytest.raises(ValueError, match=r"^Action AdaptBatchSize must run after MeasureNoiseScale, which is not in "):
        check_order([actions.AdaptBatchSize(512), actions.Evaluate()])


def fake_run(**fields):
    """What the actions read of a run: its backend's summaries and the values they publish."""
    published = {}
    run = types.SimpleNamespace(
        backend=types.SimpleNamespace(
            noise_parts=lambda accumulation_steps: (2, True),
            is_chief=True,
            summaries=types.SimpleNamespace(scalars=lambda *a: None, histogram=lambda *a: None),
        ),
        history=history.History("."),
        accumulation_at=lambda phase: 1,
        published=published,
        publish=published.__setitem__,
        **fields,
    )
    return run


def noise_loop(first_step, seed):
    rng = np.random.default_rng(seed)
    records = {
        noise_scale.RECORD: rng.uniform(1.5, 1.8, 5),
        "grad_norm": rng.uniform(1, 1.1, 5),
        "learning_rate": np.full(5, 0.1),
    }
    return LoopOutput(first_step, 5, types.SimpleNamespace(batch_size=64), records, 1.0)


def round_trip(action, fresh):
    """`fresh` restored from `action`'s state, through JSON as history.json keeps it."""
    fresh.restore_state(json.loads(json.dumps(action.state())))
    return fresh


def test_the_noise_scale_resumed_from_its_state_goes_on_bit_for_bit():
    run, resumed_run = fake_run(), fake_run()
    kept = actions.MeasureNoiseScale(every=5, decay=0.9)
    kept.begin(run)
    kept.after_loop(run, noise_loop(0, 1))
    resumed = round_trip(kept, actions.MeasureNoiseScale(every=5, decay=0.9))
    resumed.begin(resumed_run)
    kept.after_loop(run, noise_loop(5, 2))
    resumed.after_loop(resumed_run, noise_loop(5, 2))
    assert resumed.state() == kept.state()
    assert resumed_run.published["noise_scale"] == run.published["noise_scale"] > 0
    assert resumed_run.history.noise_scale == run.history.noise_scale[1:]


def staleness_loop(first, values):
    return LoopOutput(first, len(values), None, {"staleness": np.array(values)}, 1.0)


def test_the_staleness_counts_resumed_from_their_state_add_up():
    run, resumed_run = fake_run(), fake_run()
    kept = actions.RecordStaleness()
    kept.begin(run)
    kept.after_loop(run, staleness_loop(0, [0, 1, 1]))
    resumed = round_trip(kept, actions.RecordStaleness())
    resumed.begin(resumed_run)
    assert resumed_run.published["staleness_counts"] == [1, 2]
    resumed.after_loop(resumed_run, staleness_loop(3, [2, 0]))
    assert resumed.state() == {"counts": [2, 2, 1]}


def test_the_adaptive_batch_state_is_its_decisions(tmp_path):
    decided = []
    run = fake_run(
        plan=types.SimpleNamespace(epoch_starts=[0, 10, 20]),
        step=10,
        noise_scale=300.0,
        batch_decisions=[],
        info=types.SimpleNamespace(num_train_examples=4000),
        settings=settings(tmp_path),
        adapt=lambda d: decided.append(list(d)),
    )
    action = actions.AdaptBatchSize(max_batch_size=512, verbose=False)
    action.begin(run)
    loop = LoopOutput(0, 10, types.SimpleNamespace(batch_size=128), {"learning_rate": np.full(10, 0.1)}, 1.0)
    action.after_loop(run, loop)
    assert decided == [[{"epoch": 1, "batch": 256, "step": 10}]]
    assert json.loads(json.dumps(action.state())) == {"decisions": decided[0]}


def test_a_history_written_before_the_actions_kept_their_own_state_still_resumes(tmp_path):
    old = {
        "evals": [],
        "wall_seconds": 3.0,
        "state": {
            "noise_scale": [1.0, 2.0, 0.5],
            "staleness_counts": [4, 1],
            "adaptive_batch": [{"epoch": 1, "batch": 256, "step": 10}],
        },
    }
    (tmp_path / history.HISTORY_FILE).write_text(json.dumps(old))
    loaded = history.History(str(tmp_path))
    loaded.load(10, str(tmp_path))
    assert loaded.actions == {
        "MeasureNoiseScale": {"averages": [1.0, 2.0, 0.5]},
        "RecordStaleness": {"counts": [4, 1]},
        "AdaptBatchSize": {"decisions": [{"epoch": 1, "batch": 256, "step": 10}]},
    }
    loaded.save(3.0)
    again = history.History(str(tmp_path))
    again.load(10, str(tmp_path))
    assert again.actions == loaded.actions and "state" not in json.loads((tmp_path / history.HISTORY_FILE).read_text())
