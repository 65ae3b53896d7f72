"""Timing kbatch's run loop as a user's run spends it, for the benchmarks that compare loops."""

import time


def examples_per_second(run, steps):
    """examples/s of `run`'s loops over at least `steps` updates after one warm-up loop, with the
    actions every loop ends with (the finiteness check, the per-update TensorBoard scalars)."""
    from kbatch.training import actions

    every_loop = [actions.CheckFinite(), actions.LogSteps()]
    run.run_loop()  # trace, compile, warm up
    start, done = time.perf_counter(), 0
    while done < steps:
        loop = run.run_loop()
        for action in every_loop:
            action.after_loop(run, loop)
        done += loop.num_steps
    return done * run.settings.batch_size / (time.perf_counter() - start)
