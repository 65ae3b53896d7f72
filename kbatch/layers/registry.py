"""What each normalization of `kbatch.layers.get` does, as plain facts a model or a trainer can
ask without building a layer. Pure Python: this module imports neither TensorFlow nor Keras.

Each name maps to a `NormFacts` of the layer `kbatch.layers.get(name)` builds with its default
arguments (a "switchable" layer without the "batch" mode keeps no moving statistics):

- `moving_statistics`: it keeps moving averages of batch statistics (non-trainable variables,
  used in inference and averaged across replicas after data-parallel training);
- `gamma`: it has a learned per-channel scale `gamma` (which a residual block's last norm
  starts at zero: Goyal et al. 2017, section 5.1);
- `per_channel_mean`: it subtracts a mean per channel, which makes a preceding convolution's
  bias redundant (layer and group norm take their means across channels and do not);
- `batch_statistics`: in training it normalizes by statistics of the batch (the ghost batch; the
  global batch for sync_batch), so an example's output, or at least its gradient (batch renorm),
  depends on the other examples.
"""

import collections

from kbatch import checks

NormFacts = collections.namedtuple("NormFacts", "moving_statistics gamma per_channel_mean batch_statistics")

_BATCH_NORM = NormFacts(moving_statistics=True, gamma=True, per_channel_mean=True, batch_statistics=True)
_PER_EXAMPLE = NormFacts(moving_statistics=False, gamma=True, per_channel_mean=False, batch_statistics=False)

FACTS = {
    "batch": _BATCH_NORM,
    "sync_batch": _BATCH_NORM,
    "batch_renorm": _BATCH_NORM,
    "ghost_batch": _BATCH_NORM,
    "layer": _PER_EXAMPLE,
    "rms": _PER_EXAMPLE,
    "group": _PER_EXAMPLE,
    "instance": _PER_EXAMPLE._replace(per_channel_mean=True),
    # Its batch and instance means are per channel; the layer mean it mixes in is not (a bias
    # keeps a gradient scaled by the layer mode's weight), counted with the first two as before.
    "switchable": _BATCH_NORM,
    "none": NormFacts(moving_statistics=False, gamma=False, per_channel_mean=False, batch_statistics=False),
}

NAMES = tuple(FACTS)


def facts(norm):
    """The `NormFacts` of the norm called `norm` (one of `NAMES`)."""
    return FACTS[checks.choice("norm", norm, NAMES)]
