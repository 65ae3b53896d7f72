"""`Action`: work a run does around its compiled loops of updates (Orbit's actions).

An action has four hooks, each given the `Run` (its `step`, `plan`, `history`, `backend`,
`model`, `settings`): `begin(run)`, `after_loop(run, loop)` with the loop's `LoopOutput`,
`end(run, result)` once the run finished and wrote its results, and `close(run)`, which always
runs (on errors too) to release what `begin` took. Actions run in order, and a later one sees
what an earlier one left on the loop (`Evaluate` sets `loop.eval_logs`).

    class PrintLoss(kbatch.training.Action):
        def after_loop(self, run, loop):
            print(run.step, loop.mean("loss"))

    kbatch.training.train(config, actions=[PrintLoss()])
"""


class Action:
    """The hooks, each doing nothing: subclass and override the ones you need."""

    def begin(self, run):
        pass

    def after_loop(self, run, loop):
        pass

    def end(self, run, result):
        pass

    def close(self, run):
        pass
