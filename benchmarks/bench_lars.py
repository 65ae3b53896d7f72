"""Time per optimizer update: LARS vs SGD with momentum on a ResNet's variables.

Both update the variables of `kbatch.models.get(--model)` from the same fixed gradients, `--steps`
updates per `tf.function` call (after a warm-up call that traces). The two alternate in
`--repeats` pairs (in A-B, B-A order, so drift in machine load hits both alike), and the ratio is
the median of the per-pair ratios. LARS runs as `kbatch.optimizers.build` makes it: weight decay
in the gradient, biases and BN parameters excluded, a trust ratio per remaining variable. Prints
ms/update of each and the ratio LARS / SGD (goal: under 1.15).

  python benchmarks/bench_lars.py --model=resnet20 --steps=200 --repeats=5
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kbatch  # noqa: E402

MODEL = flags.DEFINE_enum("model", "resnet20", ["resnet20", "resnet56", "resnet50"], "Whose variables.")
STEPS = flags.DEFINE_integer("steps", 200, "Timed updates per measurement (one tf.function call).")
REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved measurements of each.")
JIT = flags.DEFINE_bool("jit_compile", False, "XLA-compile the update loop.")

INPUT_SHAPES = {"resnet20": (32, 32, 3), "resnet56": (32, 32, 3), "resnet50": (224, 224, 3)}


def _variables():
    keras.utils.set_random_seed(0)
    model = kbatch.models.get(MODEL.value, num_classes=10 if MODEL.value != "resnet50" else 1000,
                              input_shape=INPUT_SHAPES[MODEL.value])
    return model.trainable_variables


def make_timer(name, variables):
    """A function that returns the seconds one call of `STEPS` updates takes."""
    optimizer = kbatch.optimizers.build(name, 0.1, momentum=0.9, weight_decay=1e-4)
    optimizer.build(variables)
    kbatch.optimizers.apply_exclusions(optimizer, variables)
    rng = np.random.default_rng(1)
    grads = [tf.constant(rng.normal(scale=1e-2, size=v.shape).astype("float32")) for v in variables]

    @tf.function(jit_compile=JIT.value)
    def updates(n):
        for _ in tf.range(n):
            optimizer.apply(grads, variables)
        return optimizer.iterations

    updates(tf.constant(STEPS.value)).numpy()  # trace and warm up

    def timed():
        start = time.perf_counter()
        updates(tf.constant(STEPS.value)).numpy()
        return time.perf_counter() - start

    return timed


def main(argv):
    del argv
    variables = _variables()
    size = sum(int(np.prod(v.shape)) for v in variables)
    timers = {"sgd_momentum": make_timer("momentum", variables), "lars": make_timer("lars", variables)}
    times = {name: [] for name in timers}
    for repeat in range(REPEATS.value):
        order = list(timers) if repeat % 2 == 0 else list(reversed(timers))
        for name in order:
            times[name].append(1e3 * timers[name]() / STEPS.value)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{n} {t[-1]:.3f} ms/update" for n, t in times.items()),
              flush=True)
    sgd, lars = np.median(times["sgd_momentum"]), np.median(times["lars"])
    ratio = np.median(np.array(times["lars"]) / np.array(times["sgd_momentum"]))
    device = tf.config.list_logical_devices()[-1].device_type
    print(f"{MODEL.value} ({len(variables)} variables, {size:,} weights), {device}, "
          f"jit_compile={JIT.value}, {STEPS.value} updates x {REPEATS.value} repeats: "
          f"SGD momentum {sgd:.3f} ms/update, LARS {lars:.3f} ms/update, ratio LARS/SGD "
          f"{ratio:.2f} (medians)")


if __name__ == "__main__":
    app.run(main)
