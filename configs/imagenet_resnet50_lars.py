"""ImageNet ResNet-50 at batch 32k with LARS: the MLPerf recipe for TPU pods.

The values are those of Google's MLPerf Training v0.6 ResNet-50 submission on a TPU v3-1024 pod
(mlcommons/training_results_v0.6, Google/benchmarks/resnet/tpu-v3-1024/run_and_time.sh and
implementations/tpu-v3-1024-resnet/resnet/lars_util.py): global batch 32,768, LARS (You et al.
2017) with momentum 0.9, weight decay 1e-4, trust coefficient 0.001 (TF's LARSOptimizer
default), epsilon 1e-5, biases and BN parameters skipped; peak learning rate 31.2 reached by a
linear warmup over 25 epochs, then polynomial decay of power 2 to 0 (MLPerf: to 1e-4); 2,983
steps (76.3 epochs); bfloat16; target 75.9% top-1 (MLPerf's threshold). The submission also used
label smoothing 0.1, which kbatch's loss does not have, and TF 1's LARSOptimizer, whose trust
ratio divides by ||g|| + wd ||w|| where kbatch's divides by ||g + wd w|| (docs/optimizers.md).

  kbatch-train --config=configs/imagenet_resnet50_lars.py --config.data_dir=gs://... \
      --config.strategy=tpu
"""

from kbatch.configs import base

IMAGENET_TRAIN_EXAMPLES = 1_281_167
MLPERF_STEPS = 2983


def get_config():
    config = base.get_config()
    config.dataset = "imagenet2012"
    config.model = "resnet50"  # v1.5, zero-initialized last gamma per block
    config.norm = "batch"
    config.bn_momentum = 0.9

    # The recipe at batch 32,768; another batch moves the peak LR by the linear rule.
    config.batch_size = 32768
    config.base_batch_size = 32768
    config.base_learning_rate = 31.2
    config.lr_scaling = "linear"
    config.warmup_epochs = 25.0
    config.decay = "polynomial"
    config.decay_power = 2.0
    # 77 epochs are ceil(77 * 1,281,167 / 32,768) = 3,011 steps, the first whole epoch count
    # that covers MLPerf's 2,983.
    config.num_epochs = -(-MLPERF_STEPS * config.batch_size // IMAGENET_TRAIN_EXAMPLES)
    config.optimizer = "lars"
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.trust_coefficient = 0.001
    config.epsilon = 1e-5

    # A TPU pod: bfloat16, many steps per host round trip (MLPerf's iterations_per_loop).
    config.strategy = "tpu"
    config.mixed_precision = "mixed_bfloat16"
    config.steps_per_loop = 157
    config.evals_per_epoch = 1
    config.target_accuracy = 0.759
    return config
