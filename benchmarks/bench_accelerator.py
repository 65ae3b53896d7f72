"""Throughput of kbatch's JAX step on an accelerator (a GPU or TPU; the CPU too, slowly): time per
update, examples/s and model FLOP utilization against the batch size, for the MNIST-1D CNN and
ResNet-20 on CIFAR-shaped random data; and, with --default_experiment, the default config
trained on the JAX backend (accuracy and time). The one script to run when a GPU is lent.

MFU = (FLOPs of one compiled update, from XLA's cost analysis) / (time per update) / peak FLOP/s.
The peak is --peak_tflops, else looked up by `jax.devices()[0].device_kind` (dense bf16 peaks from
the vendors' data sheets; for float32 the dense float32 peak); unknown devices print no MFU.
A batch that does not fit prints "out of memory" and the sweep goes on.

  KERAS_BACKEND=jax python benchmarks/bench_accelerator.py --default_experiment
  KERAS_BACKEND=jax python benchmarks/bench_accelerator.py --models=resnet20 --batch_sizes=256,1024 --steps=5
"""

import csv
import os
import time

from absl import flags

import kbatch_cli

MODELS = flags.DEFINE_list("models", ["mnist1d_cnn", "resnet20"], "kbatch.models names.")
BATCH_SIZES = flags.DEFINE_list("batch_sizes", [str(256 * 4**i) for i in range(5)], "Global batch sizes.")
STEPS = flags.DEFINE_integer("steps", 20, "Timed updates per batch size (after one to compile).")
PRECISION = flags.DEFINE_enum("precision", "mixed_bfloat16", ["mixed_bfloat16", "float32"], "Keras dtype policy.")
PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s of one device (None: by device kind).")
DEFAULT_EXPERIMENT = flags.DEFINE_bool("default_experiment", False, "Also train the default config on JAX.")
CSV = flags.DEFINE_string("csv", None, "Also write the rows to this CSV file (refuses to overwrite).")

INPUT_SHAPES = {"mnist1d_cnn": (40, 1), "resnet20": (32, 32, 3), "resnet32": (32, 32, 3), "resnet56": (32, 32, 3)}
# Dense peak TFLOP/s per device: (bfloat16, float32), from the vendors' data sheets.
PEAKS = {
    "H200": (989.0, 67.0),
    "H100": (989.0, 67.0),
    "A100": (312.0, 19.5),
    "TPU v4": (275.0, 275.0 / 4),
    "TPU v5 lite": (197.0, 197.0 / 4),
    "TPU v5e": (197.0, 197.0 / 4),
    "TPU v5p": (459.0, 459.0 / 4),
    "TPU v6 lite": (918.0, 918.0 / 4),
}
FIELDS = (
    "device",
    "devices",
    "model",
    "precision",
    "batch_size",
    "ms_per_update",
    "examples_per_s",
    "tflop_per_update",
    "tflop_per_s",
    "mfu",
    "error",
)


def peak_tflops(device_kind, precision):
    """One device's dense peak for `precision`, or None for a device not in PEAKS."""
    if PEAK_TFLOPS.value:
        return PEAK_TFLOPS.value
    for name, (bf16, fp32) in PEAKS.items():
        if name.lower() in device_kind.lower():
            return bf16 if precision == "mixed_bfloat16" else fp32
    return None


def compiled_step(model_name, batch_size, distribution):
    """The jitted kbatch update of `model_name` at `batch_size`, its state and a sharded batch."""
    import jax
    import keras
    import numpy as np

    import kbatch
    from kbatch.training import Classification
    from kbatch.training.backends import jax_step
    from kbatch.training.transforms import Chain, Geometry, GlobalNorm

    with distribution.scope():
        model = kbatch.models.get(model_name, num_classes=10, input_shape=INPUT_SHAPES[model_name])
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
        optimizer.build(model.trainable_variables)
    step = jax_step.make_train_step(model, optimizer, Classification(), Chain([GlobalNorm()]), Geometry(batch_size))
    rng = np.random.default_rng(0)
    arrays = (
        rng.normal(size=(batch_size, *INPUT_SHAPES[model_name])).astype("float32"),
        rng.integers(0, 10, batch_size).astype("int32"),
    )
    batch = [jax.device_put(a, distribution.get_data_layout(a.shape).backend_layout) for a in arrays]
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    return step, state, batch


def update_flops(step, state, batch):
    """FLOPs of one compiled update, as XLA counts them (None where the backend does not say)."""
    analysis = step.lower(state, *batch).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device program
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return float(flops) if flops else None


def measure(model_name, batch_size, distribution, peak):
    """One row: time per update, examples/s, FLOPs and MFU of `model_name` at `batch_size`."""
    import jax

    step, state, batch = compiled_step(model_name, batch_size, distribution)
    flops = update_flops(step, state, batch)
    state, record = step(state, *batch)  # compile and warm up
    jax.block_until_ready(record)
    start = time.perf_counter()
    for _ in range(STEPS.value):
        state, record = step(state, *batch)
    jax.block_until_ready((state, record))
    seconds = (time.perf_counter() - start) / STEPS.value
    devices = len(distribution.device_mesh.devices.flatten())
    tflop_per_s = flops / seconds / 1e12 if flops else None
    return {
        "model": model_name,
        "batch_size": batch_size,
        "ms_per_update": 1e3 * seconds,
        "examples_per_s": batch_size / seconds,
        "tflop_per_update": flops / 1e12 if flops else None,
        "tflop_per_s": tflop_per_s,
        "mfu": tflop_per_s / (peak * devices) if tflop_per_s and peak else None,
    }


def _format(row):
    row = {**row, "gflop_per_update": row["tflop_per_update"] * 1e3 if row.get("tflop_per_update") else None}

    def cell(key, spec):
        return "-" if row.get(key) is None else format(row[key], spec)

    if row.get("error"):
        return f"{row['model']:>12} {row['batch_size']:>7}  {row['error']}"
    return (
        f"{row['model']:>12} {row['batch_size']:>7} {cell('ms_per_update', '10.2f')} ms "
        f"{cell('examples_per_s', '12,.0f')} ex/s {cell('gflop_per_update', '10.2f')} GFLOP/update "
        f"{cell('tflop_per_s', '8.2f')} TFLOP/s  MFU {cell('mfu', '.1%')}"
    )


def sweep(distribution, device_kind):
    import jax
    import keras

    keras.mixed_precision.set_global_policy(PRECISION.value)
    peak = peak_tflops(device_kind, PRECISION.value)
    print(
        f"{device_kind} x{len(jax.devices())}, {PRECISION.value}, peak "
        f"{'unknown (no MFU)' if peak is None else f'{peak:g} TFLOP/s per device'}; {STEPS.value} updates each"
    )
    rows = []
    for model_name in MODELS.value:
        for batch_size in (int(b) for b in BATCH_SIZES.value):
            try:
                row = measure(model_name, batch_size, distribution, peak)
            except Exception as error:  # noqa: BLE001  (XLA's out-of-memory error has no public class)
                if "RESOURCE_EXHAUSTED" not in str(error) and "out of memory" not in str(error).lower():
                    raise
                row = {"model": model_name, "batch_size": batch_size, "error": "out of memory"}
            row.update(device=device_kind, devices=len(jax.devices()), precision=PRECISION.value)
            print(_format(row), flush=True)
            rows.append(row)
    keras.mixed_precision.set_global_policy("float32")
    return rows


def default_experiment():
    """The default config on the JAX backend: accuracy and seconds, as `kbatch-train` reports."""
    import scratch  # benchmarks/, beside this script

    from kbatch.training import train

    result = train({"backend": "jax", "model_dir": scratch.scratch_folder(prefix="bench_accelerator-")}, verbose=True)
    print(
        f"default experiment on JAX: {result['final_eval_accuracy']:.2%} test accuracy, "
        f"{result['wall_seconds']:.0f} s of training, {result['steps']} updates"
    )


def main(argv):
    del argv
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit("bench_accelerator: start it with KERAS_BACKEND=jax")
    if CSV.value and os.path.exists(CSV.value):
        raise SystemExit(f"--csv={CSV.value}: exists; give a new file (nothing is overwritten)")
    device_kind = jax.devices()[0].device_kind
    rows = sweep(keras.distribution.DataParallel(devices=jax.devices()), device_kind)
    if CSV.value:
        with open(CSV.value, "x", newline="") as file:
            writer = csv.DictWriter(file, FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    if DEFAULT_EXPERIMENT.value:
        default_experiment()


if __name__ == "__main__":
    kbatch_cli.run_tool("bench_accelerator", main, __doc__)
