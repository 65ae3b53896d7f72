"""The component tests (LARS, Warmup and the schedules, BatchSizeSchedule, ghost BN, switchable
norm, the factories, their `.keras` round trips, staleness, the gradient transforms, and their
trainer runs) pass under Keras on JAX too: they run again here in a pytest subprocess with
KERAS_BACKEND=jax and 4 host devices, where `tests/backend_ops.py` compiles with `jax.jit` and the
trainer tests use the JAX backend."""

import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

HERE = pathlib.Path(__file__).resolve().parent
COMPONENT_TESTS = ("test_lars.py", "test_schedules.py", "test_batch_schedules.py", "test_ghost_batch_norm.py",
                   "test_switchable_norm.py", "test_norm_factory.py", "test_optimizer_factory.py", "test_sharpness.py",
                   "test_spike_guard.py", "test_adaptive_batch.py", "test_staleness.py", "test_transforms.py")


def test_the_component_tests_pass_under_keras_on_jax(tmp_path):
    report = tmp_path / "jax.xml"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(HERE.parent)}
    env.pop("XLA_FLAGS", None)  # conftest asks for the 4 host devices
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
         *(str(HERE / name) for name in COMPONENT_TESTS)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    suite = ElementTree.parse(report).getroot().find("testsuite")
    counts = {key: int(suite.get(key)) for key in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] > 300 and counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts
    names = {case.get("name") for case in suite.iter("testcase")}
    # What only JAX does ran there (and is deselected on TensorFlow, where this test runs).
    assert {"test_sync_batch_on_jax_reduces_over_all_devices",
            "test_on_jax_data_parallel_batch_norm_is_one_device_batch_norm"} <= names
    assert "test_lars_follows_the_four_steps[jit-plain]" in names
