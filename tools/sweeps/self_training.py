"""Self-training with the linear against the square-root rule (issue 29), over the sweep engine: the
18 runs of docs/results/self_training.md, which is its result. configs/self_training_mnist1d.py's
student (the MNIST-1D CNN on mnist1d/large, SGD with momentum, LR 0.05 at batch 128, 1 epoch of
warmup then cosine decay, 8 epochs) at batches 64, 512 and 4,096, its rate moved from batch 128 by
the linear or the square-root rule, on three kinds of labels: the teacher's where its class
probability is at least 0.9 (with the 1,000 labelled examples; 9% of them wrong), all of the
teacher's (24% wrong), and the data set's own (no label noise: the control).

The teacher is trained first, on the 1,000 labelled examples alone, into /tmp/self_training_teacher
(76.4% test accuracy; its command is in docs/results/self_training.md), then:

  KERAS_BACKEND=jax python tools/sweep.py --spec=tools/sweeps/self_training.py --sweep_dir=/tmp/self_training
"""

TEACHER = "/tmp/self_training_teacher"

SWEEP = {
    "overrides": {
        "dataset": "mnist1d/large",
        "base_batch_size": 128,
        "base_learning_rate": 0.05,
        "num_epochs": 8,
        "backend": "jax",
        "target_accuracy": None,
    },
    "points": [
        {"labelled_examples": 1000, "teacher": TEACHER, "pseudo_label_threshold": 0.9},
        {"labelled_examples": 1000, "teacher": TEACHER, "pseudo_label_threshold": 0.0},
        {"labelled_examples": 0},
    ],
    "grid": {"batch_size": [64, 512, 4096], "lr_scaling": ["linear", "sqrt"]},
    "targets": [0.75, 0.8],
}
