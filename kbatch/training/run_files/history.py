"""A run's evaluations so far (`history.json`, beside the checkpoints, so a resumed run keeps
them) and its `result.json`."""

import os

from kbatch.training.run_files import run_dir

HISTORY_FILE = "history.json"

# history.json's `state` before actions saved their own (under `actions`): {old key: (action, its state)}.
_OLD_STATE = {
    "noise_scale": ("MeasureNoiseScale", lambda v: {"averages": v}),
    "staleness_counts": ("RecordStaleness", lambda v: {"counts": v}),
    "adaptive_batch": ("AdaptBatchSize", lambda v: {"decisions": v}),
}


class History:
    """`evals`: one dict per evaluation (step, epoch, examples, eval_<metric>, learning rate,
    global batch, examples/s); `noise_scale`: one dict per noise-scale point (step, b_simple, ...); `sharpness`: one per
    sharpness measurement; `bn_coupling`: one per measurement of BN's coupling; `loss_spikes`: one per
    update the loss-spike guard scaled;
    `actions`: {action name: its `state()`}, what the actions need to go on exactly after a resume;
    `wall_seconds`: training time before this process started."""

    def __init__(self, directory):
        self.path = os.path.join(directory, HISTORY_FILE)
        self.evals, self.noise_scale, self.sharpness, self.loss_spikes = [], [], [], []
        self.bn_coupling = []
        self.actions, self.wall_seconds = {}, 0.0

    def load(self, restored_step, directory):
        """The evaluations up to `restored_step` saved in `directory` (the chief's model_dir); a
        ValueError when the file is missing or not what kbatch writes: a checkpoint without its
        history would resume with its evaluations and the diagnostics' state silently lost."""
        path = os.path.join(directory, HISTORY_FILE)
        if not os.path.exists(path):
            raise ValueError(
                f"{path} is missing, but the run has a checkpoint of step {restored_step}: its "
                "evaluations and the diagnostics' state cannot be rebuilt; put history.json back, "
                "or move the folder away to start afresh."
            )
        saved = _checked(run_dir.read_json(path), path)
        self.evals = [e for e in saved["evals"] if e["step"] <= restored_step]
        self.noise_scale = [p for p in saved.get("noise_scale", []) if p["step"] <= restored_step]
        self.sharpness = [p for p in saved.get("sharpness", []) if p["step"] <= restored_step]
        self.bn_coupling = [p for p in saved.get("bn_coupling", []) if p["step"] <= restored_step]
        self.loss_spikes = [p for p in saved.get("loss_spikes", []) if p["step"] <= restored_step]
        self.actions, self.wall_seconds = _actions(saved), saved["wall_seconds"]

    def save(self, wall_seconds):
        run_dir.write_json(
            self.path,
            {
                "evals": self.evals,
                "noise_scale": self.noise_scale,
                "sharpness": self.sharpness,
                "bn_coupling": self.bn_coupling,
                "loss_spikes": self.loss_spikes,
                "actions": self.actions,
                "wall_seconds": wall_seconds,
            },
        )


def _checked(saved, path):
    """`saved` if it has the shape `History.save` writes, else a ValueError naming the file."""
    records = [saved.get(name, []) for name in ("evals", "noise_scale", "sharpness", "bn_coupling", "loss_spikes")]
    well_formed = (
        isinstance(saved.get("evals"), list)
        and isinstance(saved.get("state", {}), dict)
        and isinstance(saved.get("actions", {}), dict)
        and isinstance(saved.get("wall_seconds"), (int, float))
        and all(isinstance(r, list) and all(isinstance(e, dict) and "step" in e for e in r) for r in records)
    )
    if not well_formed:
        raise ValueError(
            f"{path} is not the evaluation history kbatch writes: it was damaged; put the "
            "original back, or move the folder away to start afresh."
        )
    return saved


def _actions(saved):
    """The actions' saved states, those of a history.json written before `actions` (its `state`) included."""
    actions = dict(saved.get("actions", {}))
    for key, value in saved.get("state", {}).items():
        if key in _OLD_STATE:
            name, convert = _OLD_STATE[key]
            actions.setdefault(name, convert(value))
    return actions


def result(run, wall_seconds):
    """What `result.json` holds: final and best evaluation (best by the task's `monitor`; with the
    task's `summary` of the last training updates, `final_train_*`), the steps, examples (and, on
    sequences, tokens) and epochs to `target_accuracy` (read against `monitor`), and the history."""
    s, task, evals = run.settings, run.task, run.history.evals
    monitor = f"eval_{task.monitor}"
    best = None
    for entry in evals:
        if best is None or task.better(entry[monitor], best[monitor]):
            best = entry
    final = evals[-1] if evals else {}
    metrics = sorted({k[len("eval_") :] for e in evals for k in e if k.startswith("eval_")}) or [task.monitor, "loss"]
    out = {f"final_eval_{m}": final.get(f"eval_{m}") for m in metrics}
    out.update({f"final_{name}": value for name, value in final.items() if name.startswith("train_")})
    out.update(_tokens(run))
    out.update(
        {
            f"best_eval_{task.monitor}": best[monitor] if best else None,
            "best_eval_step": best["step"] if best else None,
            "monitor": task.monitor,
            "steps": run.step,
            "examples_seen": run.plan.ledger.examples_seen(run.step),
            "epochs": s.num_epochs,
            "global_batch_size": s.batch_size,
            "batch_sizes": [phase.batch_size for phase in run.plan.phases],
            "num_replicas": run.backend.num_replicas,
            "accumulation_steps": s.accumulation_steps,
            "wall_seconds": wall_seconds,
            "target_accuracy": s.target_accuracy,
            "steps_to_target": None,
            "examples_to_target": None,
            "epochs_to_target": None,
            "history": evals,
            "noise_scale": run.history.noise_scale,
            "sharpness": run.history.sharpness,
            "bn_coupling": run.history.bn_coupling,
            "loss_spikes": run.history.loss_spikes,
            "staleness": staleness_summary(run.staleness_counts),
        }
    )
    if s.target_accuracy is not None:
        reached = [e for e in evals if task.reached(e[monitor], s.target_accuracy)]
        if reached:
            out.update(
                steps_to_target=reached[0]["step"],
                examples_to_target=reached[0]["examples"],
                epochs_to_target=reached[0]["epoch"],
            )
    return out


def _tokens(run):
    """A run on sequences (labels with positions, a language model's): the label positions of one
    global batch of the first phase (`tokens_per_batch`: batch x sequence length, padding included)
    and of every example seen (`tokens_seen`); {} for one label per example."""
    label = run.info.label_spec
    if label is None or not label.shape:
        return {}
    positions = 1
    for size in label.shape:
        positions *= size
    return {
        "tokens_per_batch": run.settings.batch_size * positions,
        "tokens_seen": run.plan.ledger.examples_seen(run.step) * positions,
    }


def staleness_summary(counts):
    """`result.json`'s `staleness` of a parameter-server run: `counts[tau]` updates applied a
    gradient tau updates old, their mean and maximum (None for a synchronous run)."""
    if not counts:
        return None
    total = sum(counts)
    return {
        "counts": list(counts),
        "mean": sum(t * n for t, n in enumerate(counts)) / total,
        "max": max(t for t, n in enumerate(counts) if n),
    }
