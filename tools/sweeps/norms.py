"""Normalization layers across batch sizes (Wu & He 2018, Table 2; Luo et al. 2018), over the
sweep engine: the 42 runs of docs/results/norms.md, which is its result. The MNIST-1D CNN with each
norm (batch, group, layer, instance, switchable, none)
at batches 2 to 512, one replica, so the batch is the one the statistics see; the same 10 epochs
of mnist1d/original for every run, LR 0.05 at batch 128 moved by the linear rule, 1 epoch of
warmup then cosine decay, BN momentum 0.9 at every batch (rescale_recipe=False).

strategy stays the config's "auto": one device on a one-device machine. With one evaluation an
epoch every compiled loop call stops at the epoch's evaluation, so steps_per_loop = 2000 (an epoch
at batch 2) makes one call an epoch at every batch. What the switchable runs learned is read from
their saved models by tools/switchable_weights.py.

  python tools/sweep.py --spec=tools/sweeps/norms.py --sweep_dir=/tmp/norms
  python tools/switchable_weights.py --sweep_dir=/tmp/norms --markdown=/tmp/switchable_weights.md
"""

from kbatch.study.recipes import NORMS as SWEEP  # noqa: F401  (the recipe, importable from a pip install)
