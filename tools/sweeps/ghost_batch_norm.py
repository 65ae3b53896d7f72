"""The two things a batch does, separated (docs/results/norms.md): at a fixed global batch the
optimization is the same, and ghost batch norm varies only the batch the statistics see, from 2
examples to the whole batch (Hoffer et al. 2017). The rest is docs/results/norms.md's recipe:
mnist1d/original, 10 epochs, LR 0.05 at batch 128 by the linear rule, BN momentum 0.9 unrescaled.

  python tools/sweep.py --spec=tools/sweeps/ghost_batch_norm.py --sweep_dir=/tmp/ghost_batch_norm
"""

GHOST_BATCHES = {128: (2, 4, 8, 16, 32, 64, 128), 512: (2, 8, 32, 128, 512)}

SWEEP = {
    "overrides": {
        "dataset": "mnist1d/original",
        "num_epochs": 10,
        "warmup_epochs": 1.0,
        "rescale_recipe": False,
        "strategy": "one_device",
        "target_accuracy": None,
    },
    "points": [
        {"norm": "ghost_batch", "batch_size": batch, "virtual_batch_size": ghost}
        for batch, ghosts in GHOST_BATCHES.items()
        for ghost in ghosts
    ],
    "targets": [0.9, 0.95],
}
