"""benchmarks/bench_accelerator.py (the script for a lent GPU or TPU) runs on 2 host CPU devices
under Keras on JAX: a row per model and batch size, FLOPs of an update that match the closed form
of a dense layer's (2 FLOPs per multiply-add, forward and for the kernel's gradient), MFU from
them, and a CSV it never overwrites."""

import csv
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_accelerator.py"
ENV = {
    **os.environ,
    "KERAS_BACKEND": "jax",
    "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
}


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_a_sweep_prints_and_writes_a_row_per_model_and_batch_size(tmp_path):
    out = tmp_path / "rows.csv"
    run = _run(
        str(SCRIPT),
        "--models=mnist1d_cnn,resnet20",
        "--batch_sizes=8,16",
        "--steps=2",
        "--precision=float32",
        "--peak_tflops=0.5",
        f"--csv={out}",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = list(csv.DictReader(open(out)))
    assert [(r["model"], int(r["batch_size"])) for r in rows] == [
        ("mnist1d_cnn", 8),
        ("mnist1d_cnn", 16),
        ("resnet20", 8),
        ("resnet20", 16),
    ]
    for row in rows:
        assert row["devices"] == "2" and row["precision"] == "float32" and not row["error"]
        ms, flops = float(row["ms_per_update"]), float(row["tflop_per_update"]) * 1e12
        assert float(row["examples_per_s"]) == pytest.approx(int(row["batch_size"]) / ms * 1e3, rel=1e-6)
        assert float(row["mfu"]) == pytest.approx(flops / (ms / 1e3) / (0.5e12 * 2), rel=1e-6)
    resnet, cnn = (float(rows[i]["tflop_per_update"]) for i in (3, 1))
    assert resnet > 10 * cnn  # ResNet-20 on 32x32x3 (41 MFLOPs an example forward) dwarfs the 1-D CNN
    assert "resnet20" in run.stdout and "MFU" in run.stdout


def test_update_flops_are_the_closed_form_of_a_dense_layer():
    """A Dense(1024 -> 512) update at batch 256 as the only layer: forward 2*B*n*m FLOPs, backward
    the kernel's gradient, 2*B*n*m more (its input is data: no input gradient), so 4*B*n*m, within
    5% (the bias, softmax and SGD add a little)."""
    script = (
        "import sys, keras, jax\n"
        "sys.argv = ['bench']\n"
        "import bench_accelerator as bench\n"
        "from kbatch.training import Classification\n"
        "from kbatch.training.backends import jax_step\n"
        "import numpy as np\n"
        "distribution = keras.distribution.DataParallel(devices=jax.devices())\n"
        "with distribution.scope():\n"
        "    model = keras.Sequential([keras.Input((1024,)), keras.layers.Dense(512)])\n"
        "    optimizer = keras.optimizers.SGD(0.1)\n"
        "    optimizer.build(model.trainable_variables)\n"
        "from kbatch.training.transforms import Chain, Geometry, GlobalNorm\n"
        "step = jax_step.make_train_step(model, optimizer, Classification(), Chain([GlobalNorm()]), Geometry(256))\n"
        "state = ([v.value for v in model.trainable_variables], [], [v.value for v in optimizer.variables])\n"
        "batch = [np.ones((256, 1024), 'float32'), np.zeros(256, 'int32')]\n"
        "print(bench.update_flops(step, state, batch))\n"
    )
    run = _run("-c", script)
    assert run.returncode == 0, run.stderr[-3000:]
    assert float(run.stdout.strip().splitlines()[-1]) == pytest.approx(4 * 256 * 1024 * 512, rel=0.05)


def test_an_existing_csv_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "rows.csv"
    out.write_text("mine\n")
    run = _run(str(SCRIPT), "--models=mnist1d_cnn", "--batch_sizes=8", "--steps=1", f"--csv={out}")
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1] == f"--csv={out}: exists; give a new file (nothing is overwritten)"
    assert out.read_text() == "mine\n"
