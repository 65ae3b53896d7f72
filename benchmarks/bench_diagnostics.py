"""What the diagnostics cost: the training step with the gradient noise scale measured at every
update against the same step without it (goal: under 5% slower), and sharpness at every
evaluation as a fraction of a run's time.

The step comparison times two runs of the default experiment side by side in one process, their
compiled loops alternating (`--repeats` rounds of `--steps` updates each), in two layouts: cpu:2
(the parts are the replicas' batches: one extra squared norm per update) and one device with
layer norm (no batch statistics, so each batch is split into halves: two half-size passes).
The sharpness figure times the `MeasureSharpness` action inside a default run of `--epochs`
epochs with `sharpness_every=1`.

  python benchmarks/bench_diagnostics.py --steps=100 --repeats=5 --epochs=2
"""

import statistics
import time

import scratch  # benchmarks/, beside this script
from absl import flags

import kbatch_cli

STEPS = flags.DEFINE_integer("steps", 100, "Updates per timed loop.")
REPEATS = flags.DEFINE_integer("repeats", 5, "Alternating rounds of each run.")
EPOCHS = flags.DEFINE_integer("epochs", 2, "Epochs of the run that measures sharpness at every evaluation.")
LAYOUTS = {
    "cpu:2, BN (parts = replicas)": dict(strategy="cpu:2"),
    "one device, layer norm (halves)": dict(strategy="one_device", norm="layer"),
}


def _config(**overrides):
    from kbatch.configs import mnist1d_cnn

    config = mnist1d_cnn.get_config()
    config.update(
        steps_per_loop=STEPS.value, model_dir=scratch.scratch_folder(prefix="bench_diagnostics-"), **overrides
    )
    return config


def step_rates(layout):
    """Median examples/s of the loop with and without the noise scale, alternating."""
    from kbatch.training import build_run

    runs = {every: build_run(_config(noise_scale_every=every, **layout)) for every in (0, 1)}
    for run in runs.values():
        run.run_loop()  # trace and compile
    rates = {every: [] for every in runs}
    for _ in range(REPEATS.value):
        for every, run in runs.items():
            loop = run.run_loop()
            rates[every].append(loop.num_steps * loop.phase.batch_size / loop.seconds)
    return {every: statistics.median(r) for every, r in rates.items()}


def sharpness_fraction():
    """(seconds in the sharpness action, seconds of the run, measurements) for the default run
    with sharpness_every=1: building the HVP, its tracing, the probe batch and every power iteration."""
    from kbatch.training import actions, train

    spent, measure = [], actions.MeasureSharpness.after_loop

    def timed(self, run, loop):
        start, before = time.perf_counter(), len(run.history.sharpness)
        measure(self, run, loop)
        if len(run.history.sharpness) > before:
            spent.append(time.perf_counter() - start)

    actions.MeasureSharpness.after_loop = timed
    try:
        result = train(_config(num_epochs=EPOCHS.value, sharpness_every=1), verbose=False)
    finally:
        actions.MeasureSharpness.after_loop = measure
    return sum(spent), result["wall_seconds"], len(spent)


def main(argv):
    del argv
    import kbatch

    kbatch.distribute.configure_logical_cpus(2)
    for name, layout in LAYOUTS.items():
        rates = step_rates(layout)
        print(
            f"{name}: noise scale off {rates[0]:,.0f}, every update {rates[1]:,.0f} examples/s: "
            f"slowdown {rates[0] / rates[1] - 1:+.1%} (goal under 5%)",
            flush=True,
        )
    spent, total, count = sharpness_fraction()
    print(
        f"sharpness at every evaluation: {count} measurements, {spent:.1f} s of a {total:.1f} s run "
        f"({spent / total:.1%})"
    )


if __name__ == "__main__":
    kbatch_cli.run_tool("bench_diagnostics", main, __doc__)
