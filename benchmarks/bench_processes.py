"""The cost of several JAX processes: the same global batch trained by 1 process of 4 host devices
and by 2 processes of 2 devices each (one job, gloo collectives between the processes), as the
hosts of a TPU pod slice train. Each measurement is a fresh job started by `kbatch.launcher` (what
`tools/launch_local.py --jax_processes` runs), the layouts alternating across `--repeats` so machine
noise hits both alike; kbatch's run loop is timed as `bench_backends.py` times it (the default
config's model and data, its input stream, compiled steps and per-loop actions). Prints
examples/s of each, the medians and the ratio.

  python benchmarks/bench_processes.py --steps=200 --repeats=5
"""

import io
import json
import re
import sys

import run_timing  # benchmarks/, beside this script
import scratch  # benchmarks/, beside this script
from absl import flags

import kbatch_cli

BATCH = flags.DEFINE_integer("batch_size", 256, "Global batch size.")
STEPS = flags.DEFINE_integer("steps", 200, "Timed optimizer steps per measurement.")
REPEATS = flags.DEFINE_integer("repeats", 5, "Alternating measurements of each layout.")
STEPS_PER_LOOP = flags.DEFINE_integer("steps_per_loop", 50, "kbatch's steps per loop.")
WORKER = flags.DEFINE_bool("worker", False, "Internal: one process of a measured job.")
LAYOUTS = ((1, 4), (2, 2))  # (processes, host devices per process): 4 devices in all


def _measure_here():
    """examples/s of kbatch's loop in this process's job (every process runs it; process 0 reports)."""
    from kbatch import jax_job

    jax_job.join()
    from kbatch.configs import mnist1d_cnn
    from kbatch.training import build_run

    config = mnist1d_cnn.get_config()
    config.update(
        backend="jax",
        batch_size=BATCH.value,
        base_batch_size=BATCH.value,
        warmup_epochs=0.0,
        decay="constant",
        strategy="auto",
        steps_per_loop=STEPS_PER_LOOP.value,
        model_dir=scratch.scratch_folder(prefix="bench_processes-"),
    )
    run = build_run(config)
    rate = run_timing.examples_per_second(run, STEPS.value)
    if run.backend.is_chief:
        print(json.dumps({"examples_per_second": rate, "layout": run.backend.layout}), flush=True)
    run.close()


def _measure(processes, devices):
    """examples/s of one fresh job of `processes` x `devices`."""
    from kbatch import launcher

    out = io.StringIO()
    command = [sys.executable, __file__, "--worker", f"--batch_size={BATCH.value}", f"--steps={STEPS.value}"]
    command.append(f"--steps_per_loop={STEPS_PER_LOOP.value}")
    code = launcher.launch(command, processes, devices_per_process=devices, stdout=out, stderr=io.StringIO())
    (line,) = [m.group(1) for m in re.finditer(r"^\[process 0\] (\{.*\})$", out.getvalue(), re.M)] or [None]
    if code != 0 or line is None:
        raise RuntimeError(f"the {processes} x {devices} job exited with code {code}:\n{out.getvalue()[-2000:]}")
    return json.loads(line)["examples_per_second"]


def main(argv):
    del argv
    if WORKER.value:
        return _measure_here()
    rates = {layout: [] for layout in LAYOUTS}
    for repeat in range(REPEATS.value):
        for layout in LAYOUTS:
            rates[layout].append(_measure(*layout))
        now = ", ".join(f"{p} x {d}: {rates[p, d][-1]:,.0f}" for p, d in LAYOUTS)
        print(f"repeat {repeat + 1}: {now} examples/s", flush=True)
    median = {layout: sorted(r)[len(r) // 2] for layout, r in rates.items()}
    print(
        f"batch {BATCH.value}, median of {REPEATS.value}: "
        + ", ".join(f"{p} process(es) x {d} devices {median[p, d]:,.0f}" for p, d in LAYOUTS)
        + " examples/s"
    )
    print(f"ratio 2 processes x 2 devices / 1 process x 4 devices: {median[2, 2] / median[1, 4]:.2f}")


if __name__ == "__main__":
    kbatch_cli.run_tool("bench_processes", main, __doc__)
