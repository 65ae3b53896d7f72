"""Timing kbatch's run loop as a user's run spends it, for the benchmarks that compare loops."""

from kbatch.study import throughput


def examples_per_second(run, steps):
    """examples/s of `run`'s loops over at least `steps` updates after one warm-up loop
    (`kbatch.study.throughput.seconds_per_update`: each loop with the actions every loop ends with)."""
    run.run_loop()  # trace, compile, warm up
    return run.settings.batch_size / throughput.seconds_per_update(run, steps)
