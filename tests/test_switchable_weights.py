"""tools/switchable_weights.py and kbatch.study.switchable: the importance weights of a sweep's
finished switchable runs, read from their saved models, are the softmax of the logits set in them
(NumPy), averaged over the layers; other runs are left out, and a sweep without any is one line."""

import json

import keras
import numpy as np
import pytest
from run_tool import run_tool

from kbatch.configs import mnist1d_cnn
from kbatch.layers import SwitchableNormalization
from kbatch.study import sweep, switchable

LOGITS = {  # (mean logits, variance logits) of the model's two layers, over (batch, layer, instance)
    "first": ([0.0, 1.0, 2.0], [3.0, 0.0, 0.0]),
    "second": ([2.0, 1.0, 0.0], [0.0, 0.0, 1.0]),
}


def _softmax(x):
    e = np.exp(np.asarray(x) - np.max(x))
    return e / e.sum()


def _saved_model(path):
    inputs = keras.Input((8, 4))
    x = inputs
    for name, (mean, variance) in LOGITS.items():
        layer = SwitchableNormalization(name=name)
        x = layer(x)
        layer.mean_logits.assign(mean)
        layer.variance_logits.assign(variance)
    keras.Model(inputs, x).save(path)


def _sweep(tmp_path, norms):
    made = sweep.Sweep(tmp_path / "sweep", mnist1d_cnn.get_config(), [{"norm": n, "batch_size": 8} for n in norms])
    made.write_manifest()
    for point in made.points:  # a finished run: its result.json, and a model with known logits
        run = tmp_path / "sweep" / "runs" / point.name
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({"steps": 1}))
        _saved_model(run / "model.keras")
    return made


def test_the_weights_are_the_softmax_of_the_logits_averaged_over_the_layers(tmp_path):
    _sweep(tmp_path, ["switchable", "batch"])
    run = run_tool("switchable_weights.py", [f"--sweep_dir={tmp_path / 'sweep'}", f"--markdown={tmp_path / 'w.md'}"])
    assert run.returncode == 0, run.stderr[-2000:]
    header, _, *rows = (tmp_path / "w.md").read_text().splitlines()
    assert len(rows) == 1 and "| norm=switchable |" in rows[0].replace("batch_size=8,", "")
    expected = {
        stat: np.mean([_softmax(logits[i]) for logits in LOGITS.values()], axis=0)
        for i, stat in enumerate(("mean", "variance"))
    }
    cells = [float(c) for c in rows[0].strip("|").split("|")[2:]]
    np.testing.assert_allclose(cells, np.concatenate([expected["mean"], expected["variance"]]), atol=5e-4)
    assert header.split("|")[3].strip() == "mean batch" and header.split("|")[-2].strip() == "variance instance"


def test_a_sweep_without_a_switchable_run_is_one_line_and_writes_nothing(tmp_path):
    _sweep(tmp_path, ["batch"])
    run = run_tool("switchable_weights.py", [f"--sweep_dir={tmp_path / 'sweep'}", f"--markdown={tmp_path / 'w.md'}"])
    assert run.returncode != 0 and "no finished run with config.norm='switchable'" in run.stderr
    assert not (tmp_path / "w.md").exists()


def test_the_library_reads_the_same_weights_without_the_tool(tmp_path):
    """kbatch.study.switchable, as a notebook calls it: mean_importance per model, one row per
    finished switchable run (the batch run left out), and a ValueError for a sweep without one."""
    made = _sweep(tmp_path, ["switchable", "batch"])
    rows = switchable.switchable_runs(made)
    assert [(batch, name) for batch, name, _ in rows] == [(8, made.points[0].name)]
    expected = np.mean([_softmax(mean) for mean, _ in LOGITS.values()], axis=0)
    np.testing.assert_allclose(
        [rows[0][2]["mean", mode] for mode in ("batch", "layer", "instance")], expected, rtol=1e-5
    )
    assert switchable.weights_table(tmp_path / "sweep") == switchable.table(rows)
    assert switchable.table(rows).splitlines()[0].startswith("| batch | run | mean batch |")
    with pytest.raises(ValueError, match="no SwitchableNormalization layer"):
        switchable.mean_importance(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_the_library_refuses_a_sweep_without_a_switchable_run(tmp_path):
    _sweep(tmp_path, ["batch"])
    with pytest.raises(ValueError, match="no finished run with config.norm='switchable'"):
        switchable.weights_table(tmp_path / "sweep")
