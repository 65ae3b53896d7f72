"""Scaling rules, warmup and the rescaled recipe across batch sizes (issue 3), over the sweep
engine: the runs of docs/results/scaling.md, which is its result. The MNIST-1D CNN on
mnist1d/large, 8 epochs, LR 0.05 at batch B0 = 64, at 1x, 4x, 16x and 64x B0, for each variant:

  a  no LR scaling, no warmup                 lr_scaling="none"
  b  linear scaling, no warmup                lr_scaling="linear"         (Goyal et al. 2017)
  c  linear scaling with warmup W(B)          (Goyal et al. 2017)
  d  square-root scaling with warmup W(B)     lr_scaling="sqrt"           (Krizhevsky 2014)
  e  (c) and the rescaled recipe              rescale_recipe=True: BN momentum**(B/B0)

W(B) = kbatch.scaling.warmup_epochs(B, 64, 0, epochs_per_doubling=0.25, num_epochs=8): 0.5, 1
and 1.5 epochs at 4x, 16x, 64x. (a)-(d) keep BN momentum 0.9 (rescale_recipe=False). At 1x no
rule moves anything (k = 1), so the five variants are one run (lr_scaling="none",
rescale_recipe=False), listed once. Then the Smith et al. 2018 pair at batch 256 with (e)'s
recipe: a step decay of the LR by 4 at epochs 4 and 6, and its twin that multiplies the batch
instead (anneal_batch=True). 18 runs; 8 evaluations an epoch, so steps to 97% and 99% test
accuracy are resolved to 1/8 epoch. The scaling efficiency of a run to a target T is
examples_to_T(1x) / examples_to_T(run), from the report's columns.

  python tools/sweep.py --spec=tools/sweeps/scaling.py --sweep_dir=/tmp/scaling
"""

from kbatch import scaling

BASE_BATCH, BASE_LR, EPOCHS = 64, 0.05, 8
BASE_WARMUP, EPOCHS_PER_DOUBLING = 0.0, 0.25
MULTIPLIERS = (1, 4, 16, 64)
VARIANTS = {  # name: (lr_scaling, warmup, rescale_recipe)
    "a": ("none", False, False),
    "b": ("linear", False, False),
    "c": ("linear", True, False),
    "d": ("sqrt", True, False),
    "e": ("linear", True, True),
}
ANNEAL_BATCH, ANNEAL_BOUNDARIES, ANNEAL_FACTOR = 256, (EPOCHS / 2, 3 * EPOCHS / 4), 4.0


def warmup(batch):
    """W(B): the warmup of variants c-e and of the annealing pair."""
    return scaling.warmup_epochs(
        batch, BASE_BATCH, BASE_WARMUP, epochs_per_doubling=EPOCHS_PER_DOUBLING, num_epochs=EPOCHS
    )


def variant_point(variant, multiplier):
    rule, warm, rescale = VARIANTS[variant]
    batch = multiplier * BASE_BATCH
    if multiplier == 1:  # k = 1: no rule and no rescaling changes anything
        rule, rescale = "none", False
    return {
        "batch_size": batch,
        "lr_scaling": rule,
        "warmup_epochs": warmup(batch) if warm else 0.0,
        "rescale_recipe": rescale,
    }


def anneal_point(anneal):
    """The step-decay run (anneal=False) or its batch-annealing twin (Smith et al. 2018)."""
    return {
        "batch_size": ANNEAL_BATCH,
        "lr_scaling": "linear",
        "warmup_epochs": warmup(ANNEAL_BATCH),
        "rescale_recipe": True,
        "decay": "step",
        "decay_boundaries": list(ANNEAL_BOUNDARIES),
        "decay_factor": ANNEAL_FACTOR,
        "anneal_batch": anneal,
    }


def points():
    found = []
    for variant in VARIANTS:
        for multiplier in MULTIPLIERS:
            point = variant_point(variant, multiplier)
            if point not in found:  # the shared 1x run, once
                found.append(point)
    return found + [anneal_point(False), anneal_point(True)]


SWEEP = {
    "overrides": {
        "dataset": "mnist1d/large",
        "base_batch_size": BASE_BATCH,
        "base_learning_rate": BASE_LR,
        "num_epochs": EPOCHS,
        "evals_per_epoch": 8,
        "target_accuracy": 0.97,
        "strategy": "one_device",
        "checkpoint_every": 0,
        "steps_per_loop": 1000,
    },
    "points": points(),
    "targets": [0.97, 0.99],
}
