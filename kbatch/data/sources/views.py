"""Two augmented views of every example, for a contrastive task (SimCLR, Chen et al. 2020):
`kbatch.data.two_views(source, augment="signal")` turns examples [n, ...] into [n, 2, ...].

The augmentation is drawn from (seed, stream position), in blocks of `BLOCK` positions, so the
views of a position are the same however its batch is read (by one process, or a row range per
JAX process, or a resumed run) and the source keeps every guarantee of the one it wraps.
Evaluation examples get fixed views (seed 0), so every evaluation sees the same ones.

    augment="signal": a 1-D signal [length, channels] (MNIST-1D): shifted, scaled, sheared, with
      smooth and white noise added (`augment_signal`).
    augment="image": an image [height, width, channels]: a random crop of the image padded by 4
      (zeros), flipped left-right half the time.
    augment=callable: `augment(x, rng) -> x` for a batch of examples, drawing from `rng` only.
"""

import dataclasses

import numpy as np

from kbatch.data.names import FeatureSpec
from kbatch.data.sources.base import PositionalSource

BLOCK = 256  # positions whose augmentations are drawn together


def augment_signal(x, rng, max_shift=8, scale=(0.8, 1.2), shear=1.0, smooth_noise=0.5, noise=0.05):
    """For 1-D signals [n, length, channels] (float), the nuisances MNIST-1D's generator draws
    (Greydanus 2020): a circular shift of up to `max_shift` positions, a scale drawn from `scale`,
    a shear (a ramp from -s/2 to s/2 along the signal, s drawn from U(-shear, shear)), Gaussian
    noise smoothed along the signal (a circular Gaussian of `SMOOTHING` positions) of standard
    deviation `smooth_noise`, and white noise of `noise` x the example's standard deviation. Without the
    shear and the smooth noise the views differ too little: on MNIST-1D SimCLR learned each
    example's shape, and its linear probe (0.60) fell below an untrained encoder's (0.71)."""
    n, length = x.shape[:2]
    channels = (1,) * (x.ndim - 2)
    shifts = rng.integers(-max_shift, max_shift + 1, size=n)
    out = np.stack([np.roll(example, shift, axis=0) for example, shift in zip(x, shifts)])
    out = out * rng.uniform(*scale, size=(n, 1, *channels))
    ramp = np.linspace(-0.5, 0.5, length).reshape(1, length, *channels)
    out = out - rng.uniform(-shear, shear, size=(n, 1, *channels)) * ramp
    out = out + smooth_noise * _smooth_noise(rng, x.shape, SMOOTHING)
    sigma = noise * x.std(axis=tuple(range(1, x.ndim)), keepdims=True)
    return (out + sigma * rng.standard_normal(x.shape)).astype(x.dtype)


SMOOTHING = 1.5  # MNIST-1D smooths its noise over 2 of its 72 positions before resampling to 40


def _smooth_noise(rng, shape, sigma):
    """Unit white noise of `shape` [n, length, ...] convolved circularly along the length with a
    Gaussian of `sigma` positions, rescaled to unit standard deviation."""
    length = shape[1]
    distance = np.minimum(np.arange(length), length - np.arange(length))
    kernel = np.exp(-0.5 * (distance / sigma) ** 2)
    kernel /= np.sqrt(np.sum(kernel**2))  # white noise through it keeps unit variance
    transfer = np.fft.rfft(kernel).reshape(1, -1, *(1,) * (len(shape) - 2))
    return np.fft.irfft(np.fft.rfft(rng.standard_normal(shape), axis=1) * transfer, n=length, axis=1)


def augment_image(x, rng, pad=4):
    """A random crop of the zero-padded image and a left-right flip, for images [n, h, w, c]."""
    n, height, width = x.shape[:3]
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows, cols = rng.integers(0, 2 * pad + 1, size=n), rng.integers(0, 2 * pad + 1, size=n)
    crops = np.stack([p[r : r + height, c : c + width] for p, r, c in zip(padded, rows, cols)])
    flip = rng.random(n) < 0.5
    crops[flip] = crops[flip, :, ::-1]
    return crops


AUGMENTATIONS = {"signal": augment_signal, "image": augment_image}


def two_views(source, augment="signal"):
    """`source` (a `PositionalSource` of single-array inputs) with each example as two augmented
    views, [n, 2, ...]; `augment` one of `AUGMENTATIONS` or `augment(x, rng) -> x`."""
    if not isinstance(source, PositionalSource):
        raise TypeError(
            f"two_views: the source must say which example each position holds (a PositionalSource, such as "
            f"kbatch.data.from_arrays), got {type(source).__name__}."
        )
    if not callable(augment) and augment not in AUGMENTATIONS:
        raise ValueError(f"two_views: augment={augment!r} must be one of {', '.join(AUGMENTATIONS)} or a function.")
    return TwoViews(source, AUGMENTATIONS.get(augment, augment))


class TwoViews(PositionalSource):
    """A source's examples as two augmented views each (see the module's docstring)."""

    def __init__(self, source, augment):
        self.source, self.augment = source, augment
        self.name = f"{source.name}-two-views"

    def describe(self):
        info = self.source.describe()
        if not isinstance(info.input_spec, FeatureSpec):
            raise ValueError("two_views: the source's inputs must be one array, not named features.")
        spec = FeatureSpec((2, *info.input_spec.shape), info.input_spec.dtype)
        return dataclasses.replace(info, input_shape=spec.shape, input_spec=spec)

    def guarantees(self):
        return self.source.guarantees()

    def examples_at(self, start, stop, seed):
        x, y = self.source.examples_at(start, stop, seed)
        views = []
        for view in range(2):
            parts = []
            for block in range(start // BLOCK, -(-stop // BLOCK)):
                lo, hi = max(start, block * BLOCK), min(stop, (block + 1) * BLOCK)
                whole = self._block(x, start, block, lo, hi)
                rng = np.random.default_rng([seed, view, block])
                parts.append(self.augment(whole, rng)[lo - block * BLOCK : hi - block * BLOCK])
            views.append(np.concatenate(parts))
        return np.stack(views, axis=1), y

    def _block(self, x, start, block, lo, hi):
        """The block's BLOCK examples, the ones outside [lo, hi) as zeros: an augmentation draws the
        same numbers for a position whatever part of its block is read (it must not look at other
        examples: `augment_signal` scales noise by each example's own deviation)."""
        whole = np.zeros((BLOCK, *x.shape[1:]), x.dtype)
        whole[lo - block * BLOCK : hi - block * BLOCK] = x[lo - start : hi - start]
        return whole

    def eval_chunks(self):
        position = 0
        for x, y in self.source.eval_chunks():
            views = [self.augment(x, np.random.default_rng([0, view, position])) for view in range(2)]
            position += len(y)
            yield np.stack(views, axis=1), y
