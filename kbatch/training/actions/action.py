"""`Action`: work a run does around its compiled loops of updates (Orbit's actions).

An action has four hooks, each given the `Run` (its `step`, `plan`, `history`, `backend`,
`model`, `settings`): `begin(run)`, `after_loop(run, loop)` with the loop's `LoopOutput`,
`end(run, result)` once the run finished and wrote its results, and `close(run)`, which always
runs (on errors too) to release what `begin` took. Actions run in order; what one finds out for
the others it publishes on the run (`run.publish`: `Evaluate` sets `run.last_evaluation`), and
an action that reads it names the publisher in `after`, checked when the run starts
(`check_order`). An action whose work must go on exactly after a resume returns it from
`state()` (JSON), saved with every checkpoint under its `name`, and given back to
`restore_state(state)` before `begin`.

    class PrintLoss(kbatch.training.Action):
        after = ("Evaluate",)

        def after_loop(self, run, loop):
            print(run.step, loop.mean("loss"), run.last_evaluation)

    kbatch.training.train(config, actions=[PrintLoss()])
"""


class Action:
    """The hooks, each doing nothing: subclass and override the ones you need. `after`: the names
    of the actions that must run before this one."""

    after = ()

    @property
    def name(self):
        """The name its state is saved under and other actions' `after` calls it by: the class's."""
        return type(self).__name__

    def begin(self, run):
        pass

    def after_loop(self, run, loop):
        pass

    def end(self, run, result):
        pass

    def close(self, run):
        pass

    def state(self):
        """What a resumed run needs to go on exactly (JSON), or None for nothing."""
        return None

    def restore_state(self, state):
        """Take back what `state()` returned when the checkpoint being resumed was saved."""


def check_order(actions):
    """A ValueError naming both when an action comes before (or without) one its `after` names."""
    seen = set()
    for action in actions:
        for needed in action.after:
            if needed not in seen:
                where = "comes after it" if any(a.name == needed for a in actions) else "is not in the run"
                raise ValueError(
                    f"Action {action.name} must run after {needed}, which {where}: {needed} has to "
                    f"come before {action.name} in the list of actions."
                )
        seen.add(action.name)
