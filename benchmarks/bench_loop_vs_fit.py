"""kbatch's training loop vs plain `model.fit`: same model, data, batch size and optimizer.

Both train the MNIST-1D CNN on mnist1d/large, interleaved in repeats so machine noise hits both
alike, and the script prints examples/s of each and the ratio. kbatch's side is a real run
(`build_run` of the default config on one device): its input stream, its compiled loops, and the
actions every loop ends with (the finiteness check and the per-update TensorBoard scalars; no
evaluation or checkpoint, which `model.fit` does not do either). `model.fit` reads the same
input pipeline (kbatch's stateless stream), so only the loops differ.

  python benchmarks/bench_loop_vs_fit.py --batch_size=256 --steps=300 --repeats=3
"""

import os
import time

import scratch  # benchmarks/, beside this script

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

import kbatch  # noqa: E402
import kbatch_cli  # noqa: E402
from kbatch.configs import mnist1d_cnn  # noqa: E402
from kbatch.training import actions, build_run

FLAGS = flags.DEFINE_integer("batch_size", 256, "Global batch size.")
STEPS = flags.DEFINE_integer("steps", 300, "Timed optimizer steps per measurement.")
REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved measurements of each.")
STEPS_PER_LOOP = flags.DEFINE_integer("steps_per_loop", 100, "kbatch: steps per tf.function call.")
JIT = flags.DEFINE_bool("jit_compile", True, "XLA-compile both (kbatch: the micro-batch gradient).")


def _model():
    keras.utils.set_random_seed(0)
    return kbatch.models.get("mnist1d_cnn", num_classes=10, input_shape=(40, 1), norm="batch")


def _data(batch_size):
    """The run's own input stream (the same tf.data pipeline `build_run` uses), for `model.fit`."""
    return kbatch.data.train_dataset_fn("mnist1d/large", batch_size, seed=0)(tf.distribute.InputContext())


def time_fit(batch_size, steps, jit):
    model = _model()
    model.compile(
        keras.optimizers.SGD(0.1, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
        steps_per_execution=STEPS_PER_LOOP.value,
    )
    dataset = _data(batch_size)
    model.fit(dataset, steps_per_epoch=STEPS_PER_LOOP.value, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def time_kbatch(batch_size, steps, jit, model_dir):
    config = mnist1d_cnn.get_config()
    config.update(
        batch_size=batch_size,
        base_batch_size=batch_size,
        base_learning_rate=0.1,
        warmup_epochs=0.0,
        decay="constant",
        weight_decay=0.0,
        strategy="one_device",
        jit_compile=jit,
        steps_per_loop=STEPS_PER_LOOP.value,
        model_dir=model_dir,
    )
    run = build_run(config)
    every_loop = [actions.CheckFinite(), actions.LogSteps()]
    run.run_loop()  # trace and warm up
    start = time.perf_counter()
    done = 0
    while done < steps:
        loop = run.run_loop()
        for action in every_loop:
            action.after_loop(run, loop)
        done += loop.num_steps
    return done * batch_size / (time.perf_counter() - start)


def main(argv):
    del argv
    fit, ours = [], []
    folder = scratch.scratch_folder(prefix="bench_loop_vs_fit-")
    for repeat in range(REPEATS.value):
        fit.append(time_fit(FLAGS.value, STEPS.value, JIT.value))
        ours.append(time_kbatch(FLAGS.value, STEPS.value, JIT.value, os.path.join(folder, f"run{repeat}")))
        print(
            f"repeat {repeat + 1}: model.fit {fit[-1]:,.0f} examples/s, kbatch {ours[-1]:,.0f} examples/s", flush=True
        )
    f, k = np.median(fit), np.median(ours)
    print(
        f"batch {FLAGS.value}, jit_compile={JIT.value}, steps_per_loop={STEPS_PER_LOOP.value}: "
        f"model.fit {f:,.0f} examples/s, kbatch {k:,.0f} examples/s, ratio kbatch/fit {k / f:.2f} "
        f"(median of {REPEATS.value})"
    )


if __name__ == "__main__":
    kbatch_cli.run_tool("bench_loop_vs_fit", main, __doc__)
