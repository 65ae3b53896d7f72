"""The default experiment: the MNIST-1D CNN on mnist1d/large, generated locally (no download).

SGD with momentum; the learning rate is given at a base batch and moved to the run's global batch
by the linear scaling rule (Goyal et al. 2017), with linear warmup then cosine decay.

  kbatch-train --config=configs/mnist1d_cnn.py --config.batch_size=1024
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config():
    config = ml_collections.ConfigDict()
    # Data and model.
    config.dataset = "mnist1d/large"
    config.data_dir = placeholder(str)  # TFDS's default (~/tensorflow_datasets)
    config.model = "mnist1d_cnn"
    config.norm = "batch"
    config.bn_momentum = 0.9
    config.norm_groups = 8
    config.virtual_batch_size = placeholder(int)  # for norm="ghost_batch"

    # The recipe, given at base_batch_size; batch_size is the global batch of this run.
    config.batch_size = 256
    config.base_batch_size = 128
    config.base_learning_rate = 0.05
    config.lr_scaling = "linear"  # "linear", "sqrt", "none", or an exponent alpha: lr * (B/B0)**alpha
    config.warmup_epochs = 1.0
    config.decay = "cosine"  # "cosine", "linear", "polynomial", "step", "constant"
    config.decay_power = 2.0  # "polynomial": (1 - progress)**decay_power after warmup
    config.decay_boundaries = ()  # "step": epochs where the LR is divided by decay_factor
    config.decay_factor = 10.0
    # Rescale the rest of the recipe from base_batch_size to each phase's batch (kbatch.scaling.
    # rescale): BN momentum -> bn_momentum**(B/B0), weight decay, Adam's betas and epsilon.
    config.rescale_recipe = True
    # Batch-size phases: global batch batch_sizes[i] from epoch batch_boundaries[i] on (the LR of
    # each moved from the base batch by lr_scaling), e.g. (2, 4) and (1024, 4096). Or, with
    # decay="step", anneal_batch=True multiplies the batch by decay_factor at decay_boundaries
    # instead of dividing the LR (Smith et al. 2018), up to max_batch_size, then decays the LR.
    config.batch_boundaries = ()
    config.batch_sizes = ()
    config.anneal_batch = False
    config.max_batch_size = placeholder(int)
    config.num_epochs = 8
    config.optimizer = "momentum"
    config.momentum = 0.9
    config.weight_decay = 5e-4
    config.clip_global_norm = placeholder(float)  # clip the all-reduced gradient to this global norm

    # Distribution and the loop.
    config.strategy = "auto"  # "auto", "tpu", "mirrored", "multiworker", "one_device", "cpu:N"
    config.accumulation_steps = 1
    config.steps_per_loop = 50
    config.jit_compile = True  # XLA: the whole update on one replica, the gradient on several
    config.mixed_precision = placeholder(str)  # "mixed_bfloat16" on TPU, "mixed_float16" on GPU
    config.deterministic = False

    # Outputs.
    config.seed = 0
    config.model_dir = placeholder(str)  # default: runs/<model>-<dataset>-b<batch>-<time>
    config.evals_per_epoch = 1
    config.target_accuracy = 0.95  # result.json says when eval accuracy first reached it (None: never)
    config.checkpoint_every = 0  # optimizer steps; 0 = once per epoch
    config.log_gradient_norm = True
    return config
