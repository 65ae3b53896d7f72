"""Why a batch size works or breaks, measured: the gradient noise scale (`noise_scale`) and
the sharpness of the loss (`hessian.sharpness`), the critical batch fitted from a
steps-to-target curve (`critical_batch`), the linear probe of a representation (`linear_probe`),
and BN's coupling of a batch's examples (`bn_coupling.coupling`)."""

from kbatch.diagnostics.critical_batch import CriticalBatch, fit_critical_batch
from kbatch.diagnostics.hessian import hessian_vector_product, sharpness, top_eigenvalue
from kbatch.diagnostics.linear_probe import fit_linear_probe, probe_accuracy
from kbatch.diagnostics.noise_scale import NoiseScale, unbiased_estimates

__all__ = [
    "CriticalBatch",
    "NoiseScale",
    "fit_critical_batch",
    "fit_linear_probe",
    "hessian_vector_product",
    "probe_accuracy",
    "sharpness",
    "top_eigenvalue",
    "unbiased_estimates",
]
