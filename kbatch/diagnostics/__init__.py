"""Why a batch size works or breaks, measured: the gradient noise scale (`noise_scale`)."""

from kbatch.diagnostics.noise_scale import NoiseScale, unbiased_estimates

__all__ = ["NoiseScale", "unbiased_estimates"]
