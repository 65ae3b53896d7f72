"""Why a batch size works or breaks, measured: the gradient noise scale (`noise_scale`) and
the sharpness of the loss (`hessian.sharpness`)."""

from kbatch.diagnostics.noise_scale import NoiseScale, unbiased_estimates
from kbatch.diagnostics.hessian import hessian_vector_product, sharpness, top_eigenvalue

__all__ = ["NoiseScale", "hessian_vector_product", "sharpness", "top_eigenvalue", "unbiased_estimates"]
