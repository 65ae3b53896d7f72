"""Data parallelism on one host: examples/s of kbatch's loop under `one_device` (one logical
CPU) vs `cpu:2` (MirroredStrategy over 2 logical CPU devices) at the same global batch.

Each measurement runs in its own process (logical devices must be configured before
TensorFlow initializes), the strategies interleaved in repeats so machine noise hits both
alike. The data is one synthetic in-memory batch repeated, so the figures are the step's own
cost, not the input pipeline's. Besides examples/s (wall clock) it reports examples per
CPU-second of the process (all threads), steadier on a machine shared with other jobs, and the
CPU cores the process may use and TensorFlow's thread-pool settings: the logical devices of
`cpu:N` share the process's one intra-op thread pool, sized to the cores, which the one-device
run already uses. So `cpu:2` adds no hardware: it measures the cost of splitting the batch
across replicas and summing their gradients, and how much idle core time two replicas side by
side fill in (docs/distributed.md has the figures and the reading).

  python benchmarks/bench_data_parallel.py --batch_sizes=256,1024,4096 --repeats=3
  python benchmarks/bench_data_parallel.py --model=resnet20 --batch_sizes=256 --examples=8192
"""

import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

import kbatch_cli  # noqa: E402

SHAPES = {"mnist1d_cnn": (40, 1), "resnet20": (32, 32, 3)}
MODEL = flags.DEFINE_enum("model", "mnist1d_cnn", list(SHAPES), "Model (MNIST-1D or CIFAR-shaped input).")
NORM = flags.DEFINE_string("norm", "batch", "Norm layer of the model (a kbatch.layers name).")
STRATEGIES = flags.DEFINE_list(
    "strategies", ["one_device", "cpu:1", "cpu:2"], "Strategies compared; the first is the baseline."
)
BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["256", "1024", "4096"], "Global batch sizes.")
EXAMPLES = flags.DEFINE_integer("examples", 131072, "Timed examples per measurement (rounded up to whole steps).")
STEPS_PER_LOOP = flags.DEFINE_integer("steps_per_loop", 16, "Optimizer updates per tf.function call.")
REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved measurements of each strategy and batch.")
JIT = flags.DEFINE_bool(
    "jit_compile",
    True,
    "As the trainer's default: XLA for the whole update on one replica, for the gradient only on several.",
)
CASE = flags.DEFINE_string("case", None, "STRATEGY@BATCH: measure one case in this process (internal).")


def environment():
    """What the process may use: cores and TensorFlow's thread pools (0 = TF picks, all cores)."""
    import tensorflow as tf

    return {
        "cores_allowed": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "tf_version": tf.__version__,
    }


def measure(strategy_name, batch_size):
    """Examples/s of kbatch's train loop for one strategy and global batch, in this process."""
    import keras
    import tensorflow as tf

    import kbatch
    from kbatch.training import Classification
    from kbatch.training.backends.tf_step import make_train_loop, make_train_step
    from kbatch.training.transforms import Chain, Geometry

    strategy = kbatch.distribute.resolve_strategy(strategy_name)
    shape = SHAPES[MODEL.value]
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = kbatch.models.get(MODEL.value, num_classes=10, input_shape=shape, norm=NORM.value)
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
        optimizer.build(model.trainable_variables)
    x = tf.random.stateless_normal([batch_size, *shape], seed=[0, 1])
    y = tf.random.stateless_uniform([batch_size], seed=[0, 2], maxval=10, dtype=tf.int64)
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(2)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    step = make_train_step(
        strategy, model, optimizer, Classification(), Chain(), Geometry(batch_size), jit_compile=JIT.value
    )
    loop = make_train_loop(strategy, step)
    per_call = STEPS_PER_LOOP.value
    calls = max(1, -(-EXAMPLES.value // (batch_size * per_call)))
    loop(iterator, tf.constant(per_call))["loss"].numpy()  # trace, compile, warm up
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(calls):
        loop(iterator, tf.constant(per_call))["loss"].numpy()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    examples = calls * per_call * batch_size
    return {
        "examples_per_s": examples / seconds,
        "examples_per_cpu_s": examples / cpu_seconds,
        "seconds": seconds,
        "steps": calls * per_call,
        "replicas": strategy.num_replicas_in_sync,
        **environment(),
    }


def _run_case(strategy_name, batch_size):
    flags_out = [
        f"--case={strategy_name}@{batch_size}",
        f"--model={MODEL.value}",
        f"--norm={NORM.value}",
        f"--examples={EXAMPLES.value}",
        f"--steps_per_loop={STEPS_PER_LOOP.value}",
        f"--jit_compile={JIT.value}",
    ]
    run = subprocess.run([sys.executable, __file__, *flags_out], capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"case {strategy_name}@{batch_size} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if CASE.value:
        strategy_name, _, batch = CASE.value.partition("@")
        print(json.dumps(measure(strategy_name, int(batch))))
        return
    batches = [int(b) for b in BATCH_SIZES.value]
    rates = {(s, b): [] for s in STRATEGIES.value for b in batches}
    work = {(s, b): [] for s in STRATEGIES.value for b in batches}
    env = None
    for repeat in range(REPEATS.value):
        for b in batches:
            for s in STRATEGIES.value:
                r = _run_case(s, b)
                env = env or r
                rates[s, b].append(r["examples_per_s"])
                work[s, b].append(r["examples_per_cpu_s"])
                print(
                    f"repeat {repeat + 1} batch {b:>5} {s:>10} ({r['replicas']} replica(s)): "
                    f"{r['examples_per_s']:,.0f} examples/s, {r['examples_per_cpu_s']:,.0f} examples per "
                    f"CPU-second, over {r['steps']} steps",
                    flush=True,
                )
    print(
        f"\n{MODEL.value} norm={NORM.value}, jit_compile={JIT.value}, steps_per_loop={STEPS_PER_LOOP.value}, "
        f"TF {env['tf_version']}; cores this process may use: {env['cores_allowed']} (os.cpu_count "
        f"{env['cpu_count']}); TF intra-op threads {env['intra_op_threads']}, inter-op threads "
        f"{env['inter_op_threads']} (0 = TensorFlow's default, one per core)"
    )
    for title, table in (
        ("examples/s (wall clock)", rates),
        ("examples per CPU-second (all threads, less sensitive to other jobs)", work),
    ):
        _print_table(title, table, batches)


def _print_table(title, table, batches):
    base = STRATEGIES.value[0]
    print(f"\n{title}, median of {REPEATS.value}")
    print(
        f"{'batch':>6} "
        + " ".join(f"{s:>12}" for s in STRATEGIES.value)
        + "".join(f" {s + ' / ' + base:>20}" for s in STRATEGIES.value[1:])
    )
    for b in batches:
        med = {s: float(np.median(table[s, b])) for s in STRATEGIES.value}
        print(
            f"{b:>6} "
            + " ".join(f"{med[s]:>12,.0f}" for s in STRATEGIES.value)
            + "".join(f" {med[s] / med[base]:>20.2f}" for s in STRATEGIES.value[1:])
        )


if __name__ == "__main__":
    kbatch_cli.run_tool("bench_data_parallel", main, __doc__)
