"""The diagnostics measured while training: the gradient noise scale, the sharpness and BN's coupling."""

import math

import keras

from kbatch import optimizers
from kbatch.diagnostics import bn_coupling, hessian, noise_scale
from kbatch.training import rate_cap
from kbatch.training.actions.action import Action


class MeasureNoiseScale(Action):
    """With `noise_scale_every` N > 0: takes in every update's squared gradient norms (the global
    batch's and its parts', from the step's record), and every N updates logs the gradient noise
    scale B_simple, |G|^2, tr(Sigma), the temperature lr / B and B / B_simple to TensorBoard
    (`noise/`) and to the history (`result.json`'s `noise_scale`); after each loop it publishes
    B_simple as `run.noise_scale`. Its averages (decay `decay`) are its state, so a resumed run
    goes on with them."""

    def __init__(self, every, decay):
        self.every = every
        self.estimate = noise_scale.NoiseScale(decay)

    def state(self):
        return {"averages": self.estimate.state()}

    def restore_state(self, state):
        self.estimate = noise_scale.NoiseScale(self.estimate.decay, state["averages"])

    def after_loop(self, run, loop):
        records, batch = loop.records, loop.phase.batch_size
        parts = run.backend.noise_parts(run.accumulation_at(loop.phase))[0]
        for i in range(loop.num_steps):
            self.estimate.update(records[noise_scale.RECORD][i], records["grad_norm"][i] ** 2, batch / parts, batch)
            step = loop.first_step + i + 1
            if step % self.every == 0:
                b_simple = self.estimate.simple
                point = {
                    "b_simple": b_simple,
                    "gradient_sq": self.estimate.gradient_sq,
                    "trace_sigma": self.estimate.trace,
                    "temperature": float(records["learning_rate"][i]) / batch,
                    "batch_over_b_simple": batch / b_simple if b_simple > 0 else float("nan"),
                }
                run.backend.summaries.scalars("noise", step, point)
                run.history.noise_scale.append({"step": step, "global_batch_size": batch, **point})
        run.publish("noise_scale", self.estimate.simple)


class MeasureSharpness(Action):
    """With `sharpness_every` N > 0: at every N-th evaluation, the sharpness lambda_max
    (`kbatch.diagnostics.sharpness`) of the task's loss on the first `PROBE_EXAMPLES` examples of
    the evaluation split, and lr x lambda_max beside the bound past which heavy-ball SGD diverges
    on a quadratic, 2 + 2 x momentum (Cohen et al. 2021; for SGD only: Adam's preconditioning and
    LARS's trust ratios move it). Logged to TensorBoard (`diagnostics/`) and the
    history (`result.json`'s `sharpness`); a warning line each time lr x lambda_max crosses it."""

    PROBE_EXAMPLES = 1024
    after = ("Evaluate",)

    def __init__(self, every, verbose=True):
        self.every, self.verbose, self._above, self._hvp = every, verbose, False, None

    def after_loop(self, run, loop):
        if not run.evaluated(loop) or len(run.history.evals) % self.every:
            return
        if self._hvp is None:  # built (and traced) once; it reads the weights as they are
            self._hvp = sharpness_probe(run, self.PROBE_EXAMPLES)
        value = hessian.top_eigenvalue(self._hvp, [v.shape for v in run.model.trainable_variables])
        lr = float(loop.records["learning_rate"][-1])
        sgd = optimizers.kind(run.optimizer) == "sgd"
        bound = 2.0 + 2.0 * float(optimizers.unwrap(run.optimizer).momentum) if sgd else None
        entry = {"step": run.step, "sharpness": value, "lr_times_sharpness": lr * value, "stability_bound": bound}
        run.history.sharpness.append(entry)
        run.backend.summaries.scalars(
            "diagnostics", run.step, {k: v for k, v in entry.items() if k != "step" and v is not None}
        )
        above = bound is not None and lr * value > bound
        if above and not self._above and self.verbose and run.backend.is_chief:
            print(
                f"kbatch: warning: lr x sharpness = {lr * value:.3g} at step {run.step} is past the stability "
                f"bound {bound:.3g} (2 + 2 x momentum; Cohen et al. 2021): the loss may oscillate or diverge. A "
                "lower learning rate or a longer warmup keeps it below.",
                flush=True,
            )
        self._above = above


def sharpness_probe(run, examples):
    """The Hessian-vector product of the task's mean loss on the first `examples` of the evaluation split."""
    task = run.task
    loss = lambda y, out: keras.ops.mean(task.per_example(y, out)["loss"])  # noqa: E731
    return hessian.hessian_vector_product(run.model, loss, run.backend.probe_batch(examples))


class CapTheRate(Action):
    """With `stability_cap` c: the rate's cap (`kbatch.training.rate_cap`), c x the largest rate
    stable at the sharpness for the run's momentum and `staleness`, set at the start (measured here,
    as `MeasureSharpness` measures) and at each of `MeasureSharpness`'s points; to TensorBoard
    (`diagnostics/rate_cap`), beside the sharpness in the history (`rate_cap`), and one console line
    at the start. A resumed run goes on with the cap its checkpoint holds."""

    after = ("MeasureSharpness",)

    def __init__(self, fraction, verbose=True):
        self.fraction, self.verbose = fraction, verbose

    def begin(self, run):
        if run.step:
            return
        hvp = sharpness_probe(run, MeasureSharpness.PROBE_EXAMPLES)
        value = hessian.top_eigenvalue(hvp, [v.shape for v in run.model.trainable_variables])
        cap = self._set(run, value)
        if self.verbose and run.backend.is_chief:
            print(
                f"kbatch: stability cap: lambda_max {value:.4g} at the start: the rate at most {cap:.4g}.", flush=True
            )

    def after_loop(self, run, loop):
        entries = run.history.sharpness
        if entries and entries[-1]["step"] == run.step:
            cap = self._set(run, entries[-1]["sharpness"])
            entries[-1]["rate_cap"] = cap if math.isfinite(cap) else None  # None: no cap (lambda_max <= 0)

    def _set(self, run, sharpness):
        s = run.settings
        momentum = s.momentum if s.optimizer == "momentum" else 0.0
        cap = rate_cap.cap_value(self.fraction, sharpness, momentum, s.staleness)
        run.rate_cap.assign(cap)
        if math.isfinite(cap):
            run.backend.summaries.scalars("diagnostics", run.step, {"rate_cap": cap})
        return cap


class MeasureBNCoupling(Action):
    """With `bn_coupling_every` N > 0: at every N-th evaluation, BN's coupling of a batch's examples
    (`kbatch.diagnostics.bn_coupling`): the norm ratio |g_batch| / |g_fixed| and the cosine of the
    task's loss's gradients through the batch statistics and with them held fixed, on the first
    examples of the evaluation split, as many as one BN normalizes over in a training step
    (`bn_batch`). Logged to TensorBoard (`diagnostics/bn_gradient_ratio`, `bn_gradient_cosine`) and
    the history (`result.json`'s `bn_coupling`)."""

    after = ("Evaluate",)

    def __init__(self, every):
        self.every, self._pair, self._probes = every, None, {}

    def begin(self, run):
        task = run.task
        loss = lambda y, out: keras.ops.mean(task.per_example(y, out)["loss"])  # noqa: E731
        self._pair = bn_coupling.gradient_pair(run.model, loss)

    def after_loop(self, run, loop):
        if not run.evaluated(loop) or len(run.history.evals) % self.every:
            return
        size = bn_batch(run, loop.phase)
        if size not in self._probes:
            self._probes[size] = run.backend.probe_batch(size)
        x, y = self._probes[size]
        _, g_batch, g_fixed = self._pair(x, y)
        ratio, cosine = bn_coupling.compare(g_batch, g_fixed)
        point = {"bn_gradient_ratio": ratio, "bn_gradient_cosine": cosine}
        run.history.bn_coupling.append({"step": run.step, "examples": len(x), **point})
        run.backend.summaries.scalars("diagnostics", run.step, point)


def bn_batch(run, phase):
    """The examples one BN layer normalizes over in a training step of `phase`: a micro-batch
    (`run.accumulation_at`), one replica's on TensorFlow unless every BN is synchronized (JAX's
    `DataParallel` normalizes over the global batch; a ghost batch norm cuts it further itself)."""
    micro = phase.batch_size // run.accumulation_at(phase)
    synchronized = all(getattr(layer, "synchronized", False) for layer in bn_coupling.batch_norms(run.model))
    return micro if run.settings.backend == "jax" or synchronized else micro // run.backend.num_replicas


def halves_meet_batch_norm(model, task):
    """Whether splitting a batch into halves for the noise scale would give `model`'s batch
    normalization half batches (a loss over the whole batch computes its halves apart)."""
    return not task.over_batch and any("moving_mean" in v.path for v in model.non_trainable_variables)


def check_bn_coupling(model, every):
    """A one-line ValueError naming `bn_coupling_every` when `model` has no batch norm to measure."""
    try:
        bn_coupling.batch_norms(model)
    except ValueError as error:
        raise ValueError(f"config.bn_coupling_every={every}: {error} Set it to 0 (off).") from None
