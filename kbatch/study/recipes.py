"""The committed studies' recipes, as sweep specs (`{"overrides", "grid", "targets"}`, see
tools/sweep.py's --spec): what a notebook or a spec file in tools/sweeps/ runs, with the library
alone. `NORMS`: normalization layers across batch sizes (Wu & He 2018, Table 2; Luo et al. 2018),
the 42 runs of docs/results/norms.md (tools/sweeps/norms.py says why each value).
"""

NORM_LAYERS = ("batch", "group", "layer", "instance", "switchable", "none")
NORM_BATCHES = (2, 4, 8, 16, 32, 128, 512)

NORMS = {
    "overrides": {
        "dataset": "mnist1d/original",
        "num_epochs": 10,
        "warmup_epochs": 1.0,
        "rescale_recipe": False,
        "target_accuracy": None,
        "checkpoint_every": 0,
        "steps_per_loop": 2000,
    },
    "grid": {"norm": list(NORM_LAYERS), "batch_size": list(NORM_BATCHES)},
    "targets": [0.9, 0.95],
}
