"""LARS vs SGD with momentum at large batch (issue 4), over the sweep engine: the 15 runs of
docs/results/lars.md, which is its result. The MNIST-1D CNN
on mnist1d/large, 8 epochs, learning rates given at batch 128 and moved to each batch by the
linear rule, 1 epoch of warmup unless said, then cosine decay:

  SGD momentum  LR 0.05 at batches 1024 ... 16384; at 8192 also a 3-epoch warmup and LR 0.0125
                and 0.003125
  LARS          LR 0.1 at batches 1024 ... 16384 (trust coefficient 0.001); at 8192 also 0.2, 0.4

BN momentum is set per run to 0.9**(B/128) (Busbridge et al. 2023) with rescale_recipe=False,
so the trainer does not rescale it a second time. One evaluation an epoch, as the old runs; the
old study reported final and best test accuracy (the report's columns), and the targets below
are the accuracies its text compares (LARS's 97.7% at 4096 and 95.2% at 8192).

  python tools/sweep.py --spec=tools/sweeps/lars_vs_sgd.py --sweep_dir=/tmp/lars_vs_sgd
"""

from kbatch import scaling

BASE_BATCH, BN_MOMENTUM = 128, 0.9
RUNS = (  # (optimizer, global batch, LR at batch 128, warmup epochs): docs/results/lars.md's --runs
    ("momentum", 1024, 0.05, 1.0),
    ("momentum", 2048, 0.05, 1.0),
    ("momentum", 4096, 0.05, 1.0),
    ("momentum", 8192, 0.05, 1.0),
    ("momentum", 16384, 0.05, 1.0),
    ("momentum", 8192, 0.05, 3.0),
    ("momentum", 8192, 0.0125, 1.0),
    ("momentum", 8192, 0.003125, 1.0),
    ("lars", 1024, 0.1, 1.0),
    ("lars", 2048, 0.1, 1.0),
    ("lars", 4096, 0.1, 1.0),
    ("lars", 8192, 0.1, 1.0),
    ("lars", 16384, 0.1, 1.0),
    ("lars", 8192, 0.2, 1.0),
    ("lars", 8192, 0.4, 1.0),
)

SWEEP = {
    "overrides": {
        "dataset": "mnist1d/large",
        "num_epochs": 8,
        "base_batch_size": BASE_BATCH,
        "bn_momentum": BN_MOMENTUM,
        "rescale_recipe": False,
        "trust_coefficient": 0.001,
        "strategy": "one_device",
        "target_accuracy": None,
    },
    "points": [
        {
            "optimizer": optimizer,
            "batch_size": batch,
            "base_learning_rate": lr,
            "warmup_epochs": warmup,
            "bn_momentum": scaling.rescale_momentum(BN_MOMENTUM, BASE_BATCH, batch),
        }
        for optimizer, batch, lr, warmup in RUNS
    ],
    "targets": [0.95, 0.97],
}
