"""Time per optimizer update: LARS vs SGD with momentum on a ResNet's variables.

Both update the variables of `kbatch.models.get(--model)` from the same fixed gradients, `--steps`
updates per `tf.function` call (after a warm-up call that traces). The two alternate in
`--repeats` pairs (in A-B, B-A order, so drift in machine load hits both alike), and the ratio is
the median of the per-pair ratios. LARS runs as `kbatch.optimizers.build` makes it: weight decay
in the gradient, biases and BN parameters excluded, a trust ratio per remaining variable. Prints
ms/update of each and the ratio LARS / SGD (goal: under 1.15).

  python benchmarks/bench_lars.py --model=resnet20 --steps=200 --repeats=5 [--context_batch=128]
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

import kbatch  # noqa: E402
import kbatch_cli  # noqa: E402

MODEL = flags.DEFINE_enum("model", "resnet20", ["resnet20", "resnet56", "resnet50"], "Whose variables.")
STEPS = flags.DEFINE_integer("steps", 200, "Timed updates per measurement (one tf.function call).")
REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved measurements of each.")
JIT = flags.DEFINE_bool("jit_compile", False, "XLA-compile the update loop.")
CONTEXT_BATCH = flags.DEFINE_integer(
    "context_batch",
    0,
    "If > 0, also time one forward and backward pass at this batch size, to "
    "put LARS's extra time per update in proportion to a training step.",
)

INPUT_SHAPES = {"resnet20": (32, 32, 3), "resnet56": (32, 32, 3), "resnet50": (224, 224, 3)}


def _model():
    keras.utils.set_random_seed(0)
    return kbatch.models.get(
        MODEL.value, num_classes=10 if MODEL.value != "resnet50" else 1000, input_shape=INPUT_SHAPES[MODEL.value]
    )


def time_gradient(model, batch_size):
    """Median seconds of one forward and backward pass (the rest of a training step)."""
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(batch_size, *INPUT_SHAPES[MODEL.value])).astype("float32"))
    y = tf.constant(rng.integers(0, model.output_shape[-1], size=batch_size))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=JIT.value)
    def gradient():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, model.trainable_variables)])

    gradient().numpy()
    seconds = []
    for _ in range(REPEATS.value):
        start = time.perf_counter()
        gradient().numpy()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


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
    for flag in (STEPS, REPEATS):
        if flag.value <= 0:
            raise ValueError(f"--{flag.name} must be a positive integer, got {flag.value}.")
    if CONTEXT_BATCH.value < 0:
        raise ValueError(f"--context_batch must be 0 (off) or a batch size > 0, got {CONTEXT_BATCH.value}.")
    model = _model()
    variables = model.trainable_variables
    size = sum(int(np.prod(v.shape)) for v in variables)
    timers = {"sgd_momentum": make_timer("momentum", variables), "lars": make_timer("lars", variables)}
    times = {name: [] for name in timers}
    for repeat in range(REPEATS.value):
        order = list(timers) if repeat % 2 == 0 else list(reversed(timers))
        for name in order:
            times[name].append(1e3 * timers[name]() / STEPS.value)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{n} {t[-1]:.3f} ms/update" for n, t in times.items()), flush=True)
    sgd, lars = np.median(times["sgd_momentum"]), np.median(times["lars"])
    ratio = np.median(np.array(times["lars"]) / np.array(times["sgd_momentum"]))
    device = tf.config.list_logical_devices()[-1].device_type
    print(
        f"{MODEL.value} ({len(variables)} variables, {size:,} weights), {device}, "
        f"jit_compile={JIT.value}, {STEPS.value} updates x {REPEATS.value} repeats: "
        f"SGD momentum {sgd:.3f} ms/update, LARS {lars:.3f} ms/update, ratio LARS/SGD "
        f"{ratio:.2f} (medians)"
    )
    if CONTEXT_BATCH.value:
        gradient = 1e3 * time_gradient(model, CONTEXT_BATCH.value)
        step = gradient + sgd  # a training step with SGD momentum: the gradient, then the update
        print(
            f"one forward and backward pass at batch {CONTEXT_BATCH.value}: {gradient:.1f} ms, so a "
            f"training step with SGD momentum takes {step:.1f} ms; LARS adds {lars - sgd:.3f} ms, "
            f"{100 * (lars - sgd) / step:.2f}% of it"
        )


if __name__ == "__main__":
    kbatch_cli.run_tool("bench_lars", main, __doc__)
