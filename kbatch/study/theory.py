"""The noisy quadratic model's steps-to-target curve drawn beside a measured one (Zhang et al. 2019).

The NQM is fitted to one run of the real model (`fitted_to_run`): its top curvature is the run's
measured sharpness lambda_max and its noise scale the run's B_simple, both read where the run
reached the target (McCandlish et al. 2018: the critical batch grows as the loss falls, so B_simple
is taken there, not at the start). The NQM's loss is not the model's accuracy, so one number is
calibrated (`calibrated_target`): the NQM target loss at which the model, with its learning rate
re-tuned, takes the measured steps at the smallest batch. Every other batch is then a prediction.
With the LR re-tuned at every batch, a uniform scale of the curvatures only rescales the best LR,
so the curve's shape comes from B_simple, the spectrum's shape (h_i = lambda_max / i) and the
target; lambda_max sets the units of the predicted best LR.
"""

import math

from kbatch.study import nqm

CALIBRATION_STEPS = 40  # bisection steps on log(target): the target to ~1e-10 relative
MODELLED_OPTIMIZERS = {"sgd": "sgd", "momentum": "momentum", "nesterov": "momentum"}  # kbatch's -> the NQM's


def run_measurements(result, target):
    """(lambda_max, B_simple, loss) of a finished run's `result.json` where it first reached the
    test accuracy `target` (the nearest sharpness and noise-scale points to that step); a
    ValueError saying what the run lacks."""
    reached = next((e for e in result["history"] if e["eval_accuracy"] >= target), None)
    if reached is None:
        raise ValueError(f"the run never reached {target:g} test accuracy: its measurements there are missing.")
    if not result.get("sharpness") or not result.get("noise_scale"):
        raise ValueError(
            "the run has no sharpness or no noise-scale points: train it with "
            "--config.sharpness_every and --config.noise_scale_every."
        )
    step = reached["step"]
    sharp = min(result["sharpness"], key=lambda p: abs(p["step"] - step))
    noise = min(result["noise_scale"], key=lambda p: abs(p["step"] - step))
    return sharp["sharpness"], noise["b_simple"], reached["eval_loss"]


def fitted_to_run(result, target, dims=1000):
    """The power-law NQM of a run's measurements where it reached `target` (`run_measurements`)."""
    top, b_simple, loss = run_measurements(result, target)
    return nqm.fit(top_curvature=top, b_simple=b_simple, initial_loss=loss, dims=dims)


def calibrated_target(model, optimizer, batch, steps, momentum=0.9):
    """The lowest NQM target loss that `optimizer`, its LR re-tuned, reaches within `steps` at
    `batch`: a bisection on log(target) between e^-60 of the initial loss and the initial loss."""
    low, high = math.log(model.initial_loss) - 60, math.log(model.initial_loss)
    for _ in range(CALIBRATION_STEPS):
        middle = (low + high) / 2
        taken, _ = nqm.best_steps(model, optimizer, batch, math.exp(middle), momentum=momentum)
        if taken is not None and taken <= steps:
            high = middle  # reached in time: a lower target may still be
        else:
            low = middle
    return math.exp(high)


def predicted_curve(model, optimizer, measured, momentum=0.9):
    """{batch: steps} of the NQM at every batch of `measured` ({batch: steps}), calibrated at the
    smallest; and the target loss it was calibrated to."""
    smallest = min(measured)
    target = calibrated_target(model, optimizer, smallest, measured[smallest], momentum)
    curve = nqm.steps_curve(model, optimizer, sorted(measured), target, momentum=momentum)
    return {p["batch"]: p["steps"] for p in curve if p["steps"] is not None}, target


def group_curves(result, target, fields, best):
    """{label: {batch: steps}}: the NQM fitted to `result` (a finished run's result.json, or None:
    no curve), calibrated at the smallest batch of each group of `best` (`lr_search.best_rows`)
    whose optimizer it models; and the markdown lines comparing them."""
    if result is None or "optimizer" not in fields:
        return {}, []
    model = fitted_to_run(result, target)
    top, b_simple, _ = run_measurements(result, target)
    curves, lines = {}, []
    for group, by_batch in best.items():
        optimizer = MODELLED_OPTIMIZERS.get(group[fields.index("optimizer")])
        if optimizer is None or len(by_batch) < 2:
            continue
        measured = {b: r[f"steps_to_{target:g}"] for b, r in by_batch.items()}
        curve, _ = predicted_curve(model, optimizer, measured)
        label = f"NQM ({optimizer}), lambda_max {top:.3g}, B_simple {b_simple:,.0f}, fitted at B={min(measured)}"
        curves[label] = curve
        lines += [f"{label}:", "", "| batch | measured steps | NQM steps |", "|---:|---:|---:|"]
        lines += [f"| {b} | {measured[b]} | {curve.get(b, '-')} |" for b in sorted(measured)] + [""]
    return curves, lines
