"""kbatch's JAX loop against Keras's own `model.fit` on JAX, and kbatch's TensorFlow loop against
its JAX loop: same model (the MNIST-1D CNN), data (mnist1d/large), batch and optimizer.

Each measurement runs in a fresh process of its backend (Keras picks its backend when it is
imported), the processes alternating across `--repeats` so machine noise hits all alike; the
script prints examples/s of each, the medians and the ratios. kbatch's side is a real run
(`build_run` of the default config): its input stream, compiled steps and the actions every loop
ends with (the finiteness check, the per-update TensorBoard scalars); `model.fit` gets the same
examples as in-memory arrays.

  python benchmarks/bench_backends.py --batch_size=256 --steps=300 --repeats=3
"""

import json
import os
import subprocess
import sys
import time

import run_timing  # benchmarks/, beside this script
import scratch  # benchmarks/, beside this script
from absl import flags

import kbatch_cli

BATCH = flags.DEFINE_integer("batch_size", 256, "Global batch size.")
STEPS = flags.DEFINE_integer("steps", 300, "Timed optimizer steps per measurement.")
REPEATS = flags.DEFINE_integer("repeats", 3, "Alternating measurements of each.")
STEPS_PER_LOOP = flags.DEFINE_integer("steps_per_loop", 100, "kbatch's steps per loop; fit's steps_per_execution.")
WORKER = flags.DEFINE_string("worker", None, "Internal: measure one of kbatch_tensorflow, kbatch_jax, fit_jax.")
KINDS = ("kbatch_tensorflow", "kbatch_jax", "fit_jax")


def _kbatch(backend, model_dir):
    from kbatch.configs import mnist1d_cnn
    from kbatch.training import build_run

    config = mnist1d_cnn.get_config()
    config.update(
        backend=backend,
        batch_size=BATCH.value,
        base_batch_size=BATCH.value,
        base_learning_rate=0.1,
        warmup_epochs=0.0,
        decay="constant",
        weight_decay=0.0,
        strategy="one_device",
        steps_per_loop=STEPS_PER_LOOP.value,
        model_dir=model_dir,
    )
    return run_timing.examples_per_second(build_run(config), STEPS.value)


def _fit():
    import keras
    import numpy as np

    import kbatch
    from kbatch.data import numpy_source

    x, y, _, _ = numpy_source._arrays("mnist1d/large")
    keras.utils.set_random_seed(0)
    model = kbatch.models.get("mnist1d_cnn", num_classes=10, input_shape=x.shape[1:], norm="batch")
    model.compile(
        keras.optimizers.SGD(0.1, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
        steps_per_execution=STEPS_PER_LOOP.value,
    )
    # Exactly --steps updates, as kbatch's side: the training set repeated where it is shorter
    # (mnist1d/large's 60,000 examples are 234 steps at batch 256; until 2026-12-05 fit trained
    # those 234 while the rate counted 300, overstating fit by 1.28x).
    used = STEPS.value * BATCH.value
    repeats = -(-used // len(x))
    x, y = np.concatenate([x] * repeats)[:used], np.concatenate([y] * repeats)[:used]
    model.fit(x, y, batch_size=BATCH.value, epochs=1, verbose=0, shuffle=False)  # compile, warm up
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH.value, epochs=1, verbose=0, shuffle=False)
    return used / (time.perf_counter() - start)


def _measure(kind):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow" if kind == "kbatch_tensorflow" else "jax"}
    command = [
        sys.executable,
        __file__,
        f"--worker={kind}",
        f"--batch_size={BATCH.value}",
        f"--steps={STEPS.value}",
        f"--steps_per_loop={STEPS_PER_LOOP.value}",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if WORKER.value:
        backend = WORKER.value.rpartition("_")[2]
        rate = (
            _fit() if WORKER.value == "fit_jax" else _kbatch(backend, scratch.scratch_folder(prefix="bench_backends-"))
        )
        print(json.dumps(rate))
        return
    rates = {kind: [] for kind in KINDS}
    for repeat in range(REPEATS.value):
        for kind in KINDS:
            rates[kind].append(_measure(kind))
        rates_now = ", ".join(f"{k} {rates[k][-1]:,.0f}" for k in KINDS)
        print(f"repeat {repeat + 1}: {rates_now} examples/s", flush=True)
    median = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    print(
        f"batch {BATCH.value}, steps_per_loop {STEPS_PER_LOOP.value}, median of {REPEATS.value}: "
        + ", ".join(f"{k} {median[k]:,.0f}" for k in KINDS)
        + " examples/s"
    )
    print(
        f"ratio kbatch JAX / Keras fit on JAX: {median['kbatch_jax'] / median['fit_jax']:.2f}; "
        f"kbatch TensorFlow / kbatch JAX: {median['kbatch_tensorflow'] / median['kbatch_jax']:.2f}"
    )


if __name__ == "__main__":
    kbatch_cli.run_tool("bench_backends", main, __doc__)
