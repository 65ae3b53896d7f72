"""The batch's controllers compared (issue 30), over the sweep engine: the runs of
docs/results/batch_controllers.md, which is its result. The MNIST-1D CNN (group norm, so that one
device can split a batch in halves for the noise scale) on mnist1d/large, SGD with momentum, LR 0.05
at batch 128, 1 epoch of warmup then cosine decay, 8 epochs, 4 evaluations an epoch, and each
controller of docs/schedules.md:

  fixed 128, fixed 1024 (the linear rule), Smith et al.'s annealing (step decay by 4 at epochs 4
  and 6 turned into batch growth), Seesaw (decay by 2 at epochs 2, 4, 6), the adaptive batch, the
  batch warmup (c = 1), AdaScale at 1024 (S = 8), goodput on this CPU's measured update times, and
  goodput deciding on ACCELERATOR, an accelerator-shaped curve T(B) = T0 + k B^gamma.

The growing batches start at 128 and stop at 4,096. Then

  KERAS_BACKEND=jax python tools/sweep.py --spec=tools/sweeps/batch_controllers.py --sweep_dir=/tmp/controllers
  python -m kbatch.study.controllers /tmp/controllers --output=docs/results/batch_controllers
"""

ACCELERATOR = [0.005, 2e-5, 0.7]  # seconds: 5 ms fixed, 32x the batch (128 -> 4,096) costs 2.2x the time
NOISE = {"noise_scale_every": 10, "max_batch_size": 4096}

SWEEP = {
    "overrides": {
        "dataset": "mnist1d/large",
        "norm": "group",
        "batch_size": 128,
        "base_batch_size": 128,
        "base_learning_rate": 0.05,
        "num_epochs": 8,
        "warmup_epochs": 1.0,
        "evals_per_epoch": 4,
        "backend": "jax",
        "target_accuracy": None,
    },
    "points": [
        {},
        {"batch_size": 1024},
        {
            "decay": "step",
            "decay_boundaries": [4.0, 6.0],
            "decay_factor": 4.0,
            "anneal_batch": True,
            "max_batch_size": 4096,
        },
        {
            "decay": "step",
            "decay_boundaries": [2.0, 4.0, 6.0],
            "decay_factor": 2.0,
            "batch_schedule": "seesaw",
            "max_batch_size": 4096,
        },
        {"batch_schedule": "adaptive", **NOISE},
        {"batch_schedule": "warmup", **NOISE},
        {"batch_size": 1024, "lr_gain": "adascale", "noise_scale_every": 10},
        {"batch_schedule": "goodput", **NOISE},
        {"batch_schedule": "goodput", "update_time_model": ACCELERATOR, **NOISE},
    ],
    "targets": [0.985, 0.99],
}
