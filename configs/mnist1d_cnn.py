"""The default experiment: the MNIST-1D CNN on mnist1d/large, generated locally (no download).

SGD with momentum; the learning rate is given at a base batch and moved to the run's global batch
by the linear scaling rule (Goyal et al. 2017), with linear warmup then cosine decay.

  kbatch-train --config=configs/mnist1d_cnn.py --config.batch_size=1024
"""

from kbatch.configs import base


def get_config():
    config = base.get_config()
    config.dataset = "mnist1d/large"  # 60,000 training examples, 10,000 test
    config.model = "mnist1d_cnn"
    config.norm = "batch"
    config.bn_momentum = 0.9

    # The recipe, given at base_batch_size; batch_size is the global batch of this run.
    config.base_batch_size = 128
    config.base_learning_rate = 0.05
    config.batch_size = 256
    config.lr_scaling = "linear"
    config.warmup_epochs = 1.0
    config.decay = "cosine"
    config.num_epochs = 8
    config.optimizer = "momentum"
    config.momentum = 0.9
    config.weight_decay = 5e-4

    config.steps_per_loop = 50
    config.target_accuracy = 0.95  # result.json says when eval accuracy first reached it
    return config
