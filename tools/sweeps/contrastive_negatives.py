"""SimCLR's negatives gathered from every replica against each replica's own (issue 29), over the
sweep engine: the 8 runs of docs/results/contrastive_negatives.md, which is its result.
configs/simclr_mnist1d.py's recipe (NT-Xent at temperature 0.5, the MNIST-1D CNN's encoder and a
128-64 projection head, LARS at 0.3 x B / 256, 1 epoch of warmup then cosine decay) on
mnist1d/large for 5 epochs at global batches 64 to 4,096 on 4 replicas (Keras on JAX over 4
host CPU devices), with `negatives` "global" (every view of the global batch: 2B - 2 negatives)
or "replica" (each replica's quarter: 2B/4 - 2, what a loss over each replica's own batch sees).
The run's accuracy is the linear probe's on the frozen encoder (5,000 training examples).

  KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=4 \
    python tools/sweep.py --spec=tools/sweeps/contrastive_negatives.py --sweep_dir=/tmp/contrastive_negatives
"""

from kbatch.configs import simclr_mnist1d

RECIPE = simclr_mnist1d.get_config()
FIELDS = ("dataset", "task", "temperature", "projection_dims", "probe_examples", "model", "norm")
TRAINING = ("base_batch_size", "base_learning_rate", "lr_scaling", "optimizer", "momentum", "weight_decay")

SWEEP = {
    "overrides": {
        **{field: RECIPE[field] for field in FIELDS + TRAINING},
        "warmup_epochs": 1.0,
        "decay": "cosine",
        "num_epochs": 5,
        "backend": "jax",
        "strategy": "cpu:4",
        "target_accuracy": None,
    },
    "grid": {"batch_size": [64, 256, 1024, 4096], "negatives": ["global", "replica"]},
    "targets": [0.8, 0.85],
}
