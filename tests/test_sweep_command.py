"""kbatch.study.sweep_command and lr_search_command called directly (tests/test_sweep.py,
test_lr_search.py and test_tools_cli.py run the tools): the options read into a sweep, and every
bad one refused naming its flag before anything is written."""

import types

import pytest
from conftest import small_config

from kbatch.study import lr_search_command, sweep_command


def _options(sweep_dir, **given):
    options = dict(
        sweep_dir=str(sweep_dir),
        grid=[],
        spec=None,
        targets=[],
        processes=1,
        report_only=False,
        retry_failed=False,
        output_prefix=None,
        overwrite=False,
    )
    return types.SimpleNamespace(**{**options, **given})


def test_grid_flags_naming_one_field_add_up_and_a_repeated_value_is_refused():
    assert sweep_command.command_line_axes(["batch_size=64,128", "optimizer=lars", "batch_size=256"]) == {
        "batch_size": [64, 128, 256],
        "optimizer": ["lars"],
    }
    with pytest.raises(ValueError, match="a value of batch_size is given twice"):
        sweep_command.command_line_axes(["batch_size=64", "batch_size=32,64"])


def test_targets_default_and_are_accuracies():
    assert sweep_command.parse_targets([], [0.9]) == [0.9]
    assert sweep_command.parse_targets(["0.5", "1"], [0.9]) == [0.5, 1.0]
    with pytest.raises(ValueError, match=r"--targets=0,1.5: give test accuracies in \(0, 1\]"):
        sweep_command.parse_targets(["0", "1.5"], [0.9])


def test_the_spec_and_the_grid_combine_into_the_points(tmp_path):
    (tmp_path / "spec.py").write_text("SWEEP = {'grid': {'batch_size': [64, 128]}, 'targets': [0.8]}\n")
    built, targets = sweep_command.build_sweep(
        small_config(tmp_path / "unused"), _options(tmp_path / "s", spec=str(tmp_path / "spec.py"), grid=["seed=1,2"])
    )
    assert sorted(p.name for p in built.points) == sorted(f"batch_size={b},seed={s}" for b in (64, 128) for s in (1, 2))
    assert targets == [0.8] and not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="--sweep_dir is required"):
        sweep_command.build_sweep(small_config(tmp_path / "unused"), _options(""))


def test_report_only_on_a_folder_with_no_sweep_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no sweep has run there yet"):
        sweep_command.run(
            small_config(tmp_path / "unused"), _options(tmp_path / "s", report_only=True, grid=["batch_size=64"])
        )


def test_the_search_refuses_bad_rates_batches_and_a_rule_other_than_linear(tmp_path):
    assert lr_search_command.parse_rates(["sgd:0.1,0.2", "lars:1"]) == {"sgd": [0.1, 0.2], "lars": [1.0]}
    assert lr_search_command.parse_batches(["256", "64"]) == [256, 64]
    for entries in (["sgd:0.1", "sgd:0.2"], ["sgd:-1"], ["0.1"], []):
        with pytest.raises(ValueError, match="--lrs"):
            lr_search_command.parse_rates(entries)
    with pytest.raises(ValueError, match="--batch_sizes=64,64: give distinct positive batch sizes"):
        lr_search_command.parse_batches(["64", "64"])
    config = small_config(tmp_path / "unused")
    config.lr_scaling = "sqrt"
    with pytest.raises(ValueError, match="config.lr_scaling='sqrt': the search walks the lines lr = cB"):
        lr_search_command.run(config, _options(tmp_path / "s"), ["sgd:0.1"], ["64"], 0, 0, None)
    with pytest.raises(ValueError, match="--theory_run=.*no result.json there"):
        lr_search_command.theory_result(str(tmp_path / "none"), 0.9)
    assert not (tmp_path / "s").exists()
