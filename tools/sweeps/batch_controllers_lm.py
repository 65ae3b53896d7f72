"""The batch's controllers compared on the language model (issue 30), over the sweep engine: the runs
of docs/results/batch_controllers_lm.md, which is its result, the language-model twin of
docs/results/batch_controllers.md. configs/lm_bytes.py's recipe (the byte-level Transformer LM,
layer norm, on pystdlib_bytes/seq128; AdamW, LR 3e-3 at batch 64 moved by the square-root rule,
half an epoch of warmup then cosine decay), cut to 3 epochs (from 8) with 4 evaluations an epoch so
that the runs fit in about an hour of a shared 2-core CPU, and each controller of
docs/schedules.md but AdaScale:

  fixed 64, fixed 512 (the square-root rule), Smith et al.'s annealing (the step decay by 2 at
  epochs 1.5 and 2.25 turned into batch growth: x4 each under the square-root rule), Seesaw (decay
  by 2 at epochs 0.75, 1.5, 2.25), the adaptive batch, the batch warmup (c = 1), goodput on this
  CPU's measured update times, and goodput deciding on ACCELERATOR, an accelerator-shaped curve
  T(B) = T0 + k B^gamma scaled to this model's batches; and the two planned ones' twins, their
  step decays at the fixed 64 (under the square-root rule the same lr^2 / B in every phase), which
  tell the growth from the step schedule.

The growing batches start at 64 and stop at 1,024. AdaScale (`lr_gain="adascale"`) is SGD's gain
and the trainer refuses it with AdamW; the page says why it is not run with an SGD recipe here. Then

  KERAS_BACKEND=jax python tools/sweep.py --spec=tools/sweeps/batch_controllers_lm.py --sweep_dir=/tmp/controllers_lm
  python -m kbatch.study.controllers /tmp/controllers_lm --output=docs/results/batch_controllers_lm \
      --metric=loss --targets=2.3,2.1 --curve=0.005,7e-5,0.7
"""

# seconds: 5 ms fixed, 16x the batch (64 -> 1,024) costs 2.2x the time, as the MNIST-1D curve's 32x (128 -> 4,096)
ACCELERATOR = [0.005, 7e-5, 0.7]
NOISE = {"noise_scale_every": 10, "max_batch_size": 1024}

SWEEP = {
    "overrides": {  # configs/lm_bytes.py's fields over the default config (tools/sweep.py's --config) ...
        "dataset": "pystdlib_bytes/seq128",
        "task": "next_token",
        "model": "transformer_lm",
        "norm": "layer",
        "model_width": 64,
        "model_layers": 2,
        "model_heads": 4,
        "base_batch_size": 64,
        "base_learning_rate": 3e-3,
        "batch_size": 64,
        "lr_scaling": "sqrt",
        "warmup_epochs": 0.5,
        "decay": "cosine",
        "optimizer": "adamw",
        "beta_1": 0.9,
        "beta_2": 0.98,
        "weight_decay": 0.01,
        "steps_per_loop": 44,
        "target_accuracy": None,
        # ... and this study's: 3 epochs, a quarter-epoch evaluation, JAX
        "num_epochs": 3,
        "evals_per_epoch": 4,
        "backend": "jax",
    },
    "points": [
        {},
        {"batch_size": 512},
        {
            "decay": "step",
            "decay_boundaries": [1.5, 2.25],
            "decay_factor": 2.0,
            "anneal_batch": True,
            "max_batch_size": 1024,
        },
        {
            "decay": "step",
            "decay_boundaries": [0.75, 1.5, 2.25],
            "decay_factor": 2.0,
            "batch_schedule": "seesaw",
            "max_batch_size": 1024,
        },
        {"batch_schedule": "adaptive", **NOISE},
        {"batch_schedule": "warmup", **NOISE},
        {"batch_schedule": "goodput", **NOISE},
        {"batch_schedule": "goodput", "update_time_model": ACCELERATOR, **NOISE},
        # the planned ones' twins: their step decays at the fixed 64 (the same lr^2 / B in every phase)
        {"decay": "step", "decay_boundaries": [1.5, 2.25], "decay_factor": 2.0},
        {"decay": "step", "decay_boundaries": [0.75, 1.5, 2.25], "decay_factor": 2.0},
    ],
    "targets": [0.41, 0.45],  # eval token accuracy (the sweep's own report); the page's table is in eval loss
}
