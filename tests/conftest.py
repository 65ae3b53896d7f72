"""Test setup: the MNIST-1D data sets generated once, before the test workers start (the suite
runs in 2 pytest-xdist workers, scheduled as `_schedule_for_two_workers` says; `-n 0` runs it in
one process); 4 logical CPU devices (so `cpu:2` and `cpu:4` run in one process) and small, fast
configs on the locally generated MNIST-1D.

Markers: `components` (the component test files, which CI runs a second time with
`KERAS_BACKEND=jax python -m pytest -m components`; there the 4 devices are JAX host devices) and
`fast` (the pre-commit tier, `python -m pytest -m fast`). Tests marked `tensorflow_only` or
`jax_only` state what only that backend does (tf.distribute's per-replica BN, JAX's global-batch
BN, ...): each backend's run deselects the other's, so each runs exactly where it means something.
A skipped test fails the run: every test here runs on the backend that collects it.
"""

import functools
import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One intra-op thread per TensorFlow process (this one and every process a test starts, which
# inherit it): the suite runs two workers on two cores, and TensorFlow's intra-op pool, one
# spinning thread per core, starves the replicas of an in-process cpu:4 step whenever the other
# worker is busy. test_training's cpu:4 comparison took 204 s beside two busy processes, 21 s
# with this, and the same 27 s alone either way.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
if os.environ.get("KERAS_BACKEND") == "jax":
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

import keras  # noqa: E402
import pytest  # noqa: E402
from xdist.scheduler import LoadScopeScheduling  # noqa: E402

import kbatch  # noqa: E402

if keras.backend.backend() == "tensorflow":
    kbatch.distribute.configure_logical_cpus(4)


BACKEND_MARKERS = {"tensorflow_only": "tensorflow", "jax_only": "jax"}
TIER_MARKERS = {
    "components": "a component test file; CI runs these again under KERAS_BACKEND=jax",
    "fast": "the pre-commit tier (whole files): every module's unit tests, in minutes (README, Development)",
}


def pytest_configure(config):
    for marker, backend in BACKEND_MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: states what Keras on {backend} does; runs only there")
    for marker, meaning in TIER_MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: {meaning}")
    if not hasattr(config, "workerinput") and kbatch.frameworks.HAS_TENSORFLOW:
        _prepare_mnist1d()


def _prepare_mnist1d():
    """Generate both MNIST-1D configs once, before pytest-xdist starts its workers (`-n 2` in
    pyproject's addopts): two workers preparing the same TFDS folder at once would collide."""
    import tensorflow_datasets as tfds

    for name in ("mnist1d/original", "mnist1d/large"):
        tfds.builder(name).download_and_prepare()


def pytest_sessionfinish(session):
    """A skipped test is a failure (the project runs every test it has); pytest-xdist's workers
    report theirs to the controller, which decides."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.stats.get("skipped") and session.exitstatus == pytest.ExitCode.OK:
        reporter.write_line("a skipped test fails the run: every test here runs on the backend that collects it")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config, items):
    backend = keras.backend.backend()
    other = [
        item for item in items if any(item.get_closest_marker(m) and b != backend for m, b in BACKEND_MARKERS.items())
    ]
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = [item for item in items if item not in other]
    _schedule_for_two_workers(items)


def _schedule_for_two_workers(items):
    """The tests outside the fast tier run first, so the run ends on short tests and both workers
    finish together instead of one idling while the other runs a two-minute test (the order in
    which `SharedFixtureScheduling` hands them out)."""
    items.sort(key=lambda item: item.get_closest_marker("fast") is not None)


MODULE_FIXTURE = re.compile(r"""scope=["']module["']""")


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` (pyproject's addopts), done here: pytest-xdist 3.8 groups the tests of an
    `xdist_group` mark by renaming their node ids, which pytest 9 no longer lets it do (each test
    went to whichever worker was free, and a module-scoped fixture was built on both)."""
    return SharedFixtureScheduling(config, log) if config.getvalue("dist") == "loadgroup" else None


class SharedFixtureScheduling(LoadScopeScheduling):
    """One test at a time to whichever worker is free, except that a test file defining a
    module-scoped fixture goes whole to one worker, so the fixture is built once."""

    def _split_scope(self, nodeid):
        path = nodeid.split("::", 1)[0]
        return path if _defines_a_module_fixture(self.config.rootpath / path) else nodeid


@functools.cache
def _defines_a_module_fixture(path):
    return path.suffix == ".py" and bool(MODULE_FIXTURE.search(path.read_text()))


def small_config(model_dir, **overrides):
    """The default config, shrunk to seconds: mnist1d/original, a narrow run, one device."""
    from kbatch.configs import mnist1d_cnn

    config = mnist1d_cnn.get_config()
    config.dataset = "mnist1d/original"
    config.batch_size = 128
    config.base_batch_size = 128
    config.num_epochs = 2
    config.warmup_epochs = 0.5
    config.steps_per_loop = 10
    config.strategy = "one_device"
    config.model_dir = str(model_dir)
    config.deterministic = True
    config.backend = "jax" if keras.backend.backend() == "jax" else "tensorflow"
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture
def make_config(tmp_path):
    counter = iter(range(1000))
    return lambda **overrides: small_config(tmp_path / f"run{next(counter)}", **overrides)
