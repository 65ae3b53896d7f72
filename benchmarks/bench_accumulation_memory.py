"""Peak memory of a training step with gradient accumulation: micro-batch 256 x k=16 (a global
batch of 4096) against 256 and 4096 without accumulation, on CIFAR-shaped ResNet-20.

Each case runs in its own process. After the step is traced and has run once, the process's
peak resident set (VmHWM) is reset through /proc/self/clear_refs; the figure is the peak during
the timed steps minus the resident set just before them: the memory the steps themselves need
(activations kept for the backward pass, gradients, the accumulator). Linux only.

  python benchmarks/bench_accumulation_memory.py --steps=3
"""

import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

import kbatch_cli  # noqa: E402

CASES = {  # name: (global batch, accumulation steps)
    "256": (256, 1),
    "256x16": (4096, 16),
    "4096": (4096, 1),
}
CASE = flags.DEFINE_enum("case", None, list(CASES), "Run one case in this process (internal).")
STEPS = flags.DEFINE_integer("steps", 3, "Measured optimizer updates per case.")
MODEL = flags.DEFINE_string("model", "resnet20", "A kbatch.models name (CIFAR-shaped input).")


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(case):
    """(resident MiB before the steps, peak MiB during them) for one case, in this process."""
    import keras
    import tensorflow as tf

    import kbatch
    from kbatch.training import Classification
    from kbatch.training.backends.tf_step import make_train_loop, make_train_step
    from kbatch.training.transforms import Chain, Geometry

    batch, k = CASES[case]
    strategy = kbatch.distribute.resolve_strategy("one_device")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = kbatch.models.get(MODEL.value, num_classes=10, input_shape=(32, 32, 3), norm="batch")
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
        optimizer.build(model.trainable_variables)
    images = tf.random.stateless_normal([batch, 32, 32, 3], seed=[0, 1])
    labels = tf.random.stateless_uniform([batch], seed=[0, 2], maxval=10, dtype=tf.int64)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    step = make_train_step(strategy, model, optimizer, Classification(), Chain(), Geometry(batch, k))
    loop = make_train_loop(strategy, step)
    loop(iterator, tf.constant(1))["loss"].numpy()  # trace, allocate the optimizer's slots, warm up
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = _status_kib("VmRSS")
    loop(iterator, tf.constant(STEPS.value))["loss"].numpy()
    return before / 1024, _status_kib("VmHWM") / 1024


def main(argv):
    del argv
    if CASE.value:
        before, peak = measure(CASE.value)
        print(json.dumps({"before_mib": before, "peak_mib": peak}))
        return
    results = {}
    for case in CASES:
        run = subprocess.run(
            [sys.executable, __file__, f"--case={case}", f"--steps={STEPS.value}", f"--model={MODEL.value}"],
            capture_output=True,
            text=True,
            check=True,
        )
        results[case] = json.loads(run.stdout.strip().splitlines()[-1])
        r = results[case]
        print(
            f"{case:>7}: resident {r['before_mib']:,.0f} MiB before the steps, peak "
            f"{r['peak_mib']:,.0f} MiB, the steps' own {r['peak_mib'] - r['before_mib']:,.0f} MiB",
            flush=True,
        )
    own = {case: r["peak_mib"] - r["before_mib"] for case, r in results.items()}
    print(
        f"{MODEL.value}, {STEPS.value} updates: accumulation 256x16 needs {own['256x16'] / own['256']:.2f}x "
        f"the memory of micro-batch 256 alone (goal <= 1.2x) and {own['256x16'] / own['4096']:.2f}x that of "
        f"batch 4096 without accumulation; peak resident set "
        f"{results['256x16']['peak_mib'] / results['256']['peak_mib']:.2f}x "
        f"and {results['256x16']['peak_mib'] / results['4096']['peak_mib']:.2f}x."
    )


if __name__ == "__main__":
    kbatch_cli.run_tool("bench_accumulation_memory", main, __doc__)
